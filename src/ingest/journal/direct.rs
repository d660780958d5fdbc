//! Record writes that bypass the page cache.
//!
//! A record written through the page cache is copied into the cache, and the fdatasync that
//! makes it durable then writes those pages back. With `O_DIRECT` the write sends the record to
//! the disk itself, so the sync round that follows only flushes the disk's cache, and the
//! associations' writes can run at the same time outside the journal's lock. Direct writes need
//! the buffer, offset and length aligned to the block size: records already start and end on
//! 4 KiB boundaries, and each thread keeps one aligned buffer to assemble them in. File systems
//! that reject `O_DIRECT` (tmpfs, some network file systems) get buffered writes.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::format::BLOCK;

thread_local! {
    /// Bytes from which an aligned record buffer is cut. It grows to the largest record seen.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Opens `path` for direct writes, or returns `None` when the file system rejects `O_DIRECT`.
pub(super) fn open_direct(path: &Path) -> Option<File> {
    OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()
}

/// Writes the record `head` (header and path) followed by `bytes` at `offset`, `len` bytes in
/// all with zero padding. Uses `direct` when given, else the buffered `file`.
pub(super) fn write_record(file: &File, direct: Option<&File>, offset: u64, head: &[u8], bytes: &[u8], len: u64) -> io::Result<()> {
    let Some(direct) = direct else {
        return file.write_all_at(head, offset).and_then(|()| file.write_all_at(bytes, offset + head.len() as u64));
    };

    let len = len as usize;
    BUFFER.with_borrow_mut(|buffer| {
        let block = BLOCK as usize;
        if buffer.len() < len + block {
            buffer.resize(len + block, 0);
        }
        let start = buffer.as_ptr().align_offset(block);
        let record = &mut buffer[start..start + len];

        let (head_part, rest) = record.split_at_mut(head.len());
        head_part.copy_from_slice(head);
        let (data_part, padding) = rest.split_at_mut(bytes.len());
        data_part.copy_from_slice(bytes);
        padding.fill(0);
        direct.write_all_at(record, offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_padded_to_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.wal");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        file.write_all_at(&[0xAB; 3 * BLOCK as usize], 0).unwrap();
        let direct = open_direct(&path);

        write_record(&file, direct.as_ref(), BLOCK, b"head", b"data", BLOCK).unwrap();
        let mut written = vec![0u8; 3 * BLOCK as usize];
        file.read_exact_at(&mut written, 0).unwrap();
        assert!(written[..BLOCK as usize].iter().all(|&b| b == 0xAB), "the block before is untouched");
        assert_eq!(&written[BLOCK as usize..BLOCK as usize + 8], b"headdata");
        if direct.is_some() {
            assert!(written[BLOCK as usize + 8..2 * BLOCK as usize].iter().all(|&b| b == 0), "padding is zero");
        }
        assert!(written[2 * BLOCK as usize..].iter().all(|&b| b == 0xAB), "the block after is untouched");
    }
}
