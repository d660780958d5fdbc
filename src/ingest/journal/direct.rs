//! Record writes that bypass the page cache.
//!
//! A record written through the page cache is copied into the cache, and the fdatasync that
//! makes it durable then writes those pages back. With `O_DIRECT` the write sends the record to
//! the disk itself, so the sync round that follows only flushes the disk's cache, and the
//! associations' writes can run at the same time outside the journal's lock. Direct writes need
//! the buffer, offset and length aligned to the block size. Records start on 4 KiB boundaries,
//! and so do their instance bytes, after the head block. Instance bytes that lie at an aligned
//! address with room up to the next block boundary ([`RecordData::padded`]) are written from
//! where they are, in one `pwritev` with the head block. Others are first copied into an
//! aligned buffer that each thread keeps. File systems that reject `O_DIRECT` (tmpfs, some
//! network file systems) get buffered writes.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::format::BLOCK;
use super::RecordData;

thread_local! {
    /// Bytes from which an aligned record buffer is cut. It grows to the largest record seen.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Bytes from which the aligned head block of a `pwritev` is cut.
    static HEAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Opens `path` for direct writes, or returns `None` when the file system rejects `O_DIRECT`.
pub(super) fn open_direct(path: &Path) -> Option<File> {
    OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()
}

/// Writes the record's head block `head` followed by `data` at `offset`, `len` bytes in all with
/// zero padding (or the padding `data` carries). Uses `direct` when given, else the buffered
/// `file`.
pub(super) fn write_record(file: &File, direct: Option<&File>, offset: u64, head: &[u8], data: RecordData<'_>, len: u64) -> io::Result<()> {
    let bytes = data.bytes();
    let Some(direct) = direct else {
        return file.write_all_at(head, offset).and_then(|()| file.write_all_at(bytes, offset + head.len() as u64));
    };
    if let Some(padded) = data.aligned(BLOCK as usize) {
        if head.len() + padded.len() == len as usize {
            return write_pair_at(direct, offset, head, padded);
        }
    }

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

/// Writes `first` then `second` at `offset` in one `pwritev`. Both are whole blocks at
/// aligned addresses, as `O_DIRECT` needs.
fn write_pair_at(file: &File, offset: u64, first: &[u8], second: &[u8]) -> io::Result<()> {
    HEAD.with_borrow_mut(|buffer| {
        // The head is short and built per record, so it is copied into an aligned block.
        let block = BLOCK as usize;
        if buffer.len() < first.len() + block {
            buffer.resize(first.len() + block, 0);
        }
        let start = buffer.as_ptr().align_offset(block);
        let head = &mut buffer[start..start + first.len()];
        head.copy_from_slice(first);

        let total = first.len() + second.len();
        let iov = [
            libc::iovec { iov_base: head.as_ptr() as *mut libc::c_void, iov_len: head.len() },
            libc::iovec { iov_base: second.as_ptr() as *mut libc::c_void, iov_len: second.len() },
        ];
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: both iovecs point into live slices that outlive the call, and the kernel only
        // reads from them.
        let written = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), 2, offset) };
        if written < 0 {
            return Err(io::Error::last_os_error());
        }
        if written as usize != total {
            // A short direct write is reported as a failed write rather than resumed.
            return Err(io::Error::new(io::ErrorKind::WriteZero, format!("pwritev wrote {written} of {total} bytes")));
        }
        Ok(())
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

        write_record(&file, direct.as_ref(), BLOCK, b"head", RecordData::new(b"data"), BLOCK).unwrap();
        let mut written = vec![0u8; 3 * BLOCK as usize];
        file.read_exact_at(&mut written, 0).unwrap();
        assert!(written[..BLOCK as usize].iter().all(|&b| b == 0xAB), "the block before is untouched");
        assert_eq!(&written[BLOCK as usize..BLOCK as usize + 8], b"headdata");
        if direct.is_some() {
            assert!(written[BLOCK as usize + 8..2 * BLOCK as usize].iter().all(|&b| b == 0), "padding is zero");
        }
        assert!(written[2 * BLOCK as usize..].iter().all(|&b| b == 0xAB), "the block after is untouched");
    }

    #[test]
    fn aligned_data_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.wal");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let block = BLOCK as usize;
        file.write_all_at(&vec![0xAB; 4 * block], 0).unwrap();
        let direct = open_direct(&path);

        // 5000 instance bytes at an aligned address, then padding up to two blocks.
        let mut storage = vec![0u8; 4 * block];
        let start = storage.as_ptr().align_offset(block);
        let buffer = &mut storage[start..start + 2 * block];
        buffer[..5000].fill(7);
        buffer[5000..].fill(9);
        let data = RecordData::padded(buffer, 5000);
        assert!(data.aligned(block).is_some());
        let mut head = vec![0u8; block];
        head[..4].copy_from_slice(b"head");

        write_record(&file, direct.as_ref(), 0, &head, data, 3 * BLOCK).unwrap();

        let mut written = vec![0u8; 4 * block];
        file.read_exact_at(&mut written, 0).unwrap();
        assert_eq!(&written[..4], b"head");
        assert!(written[block..block + 5000].iter().all(|&b| b == 7), "instance bytes");
        assert!(written[3 * block..].iter().all(|&b| b == 0xAB), "the block after is untouched");
    }

    #[test]
    fn unaligned_data_is_not_sent_in_place() {
        let storage = vec![0u8; 3 * BLOCK as usize];
        let start = storage.as_ptr().align_offset(BLOCK as usize) + 1;
        let data = RecordData::padded(&storage[start..], 100);
        assert!(data.aligned(BLOCK as usize).is_none());
    }
}
