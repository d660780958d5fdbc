//! Checks against outside tools: a JPEG 2000 codestream from Pillow (OpenJPEG), and DCMTK's
//! dcmdump reading what `write_part10` wrote. Both come from `scripts/install-test-deps`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Builder, CT_IMAGE_STORAGE};
use dicom_core::{DataElement, VR};
use dicom_object::InMemDicomObject;
use penumbra_dicom::pixels::decode_pixels;
use penumbra_dicom::{read_bytes, write_part10};

const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";

/// Returns the test virtual environment's Python: the repository's `.venv`, else the shared one.
fn python() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let shared = PathBuf::from("/work/main/.venv/bin/python");
    [repo, shared].into_iter().find(|p| p.exists()).expect("no .venv with Python; run scripts/install-test-deps")
}

/// Encodes 16-bit grayscale `values` (rows x columns) as a lossless JPEG 2000 codestream.
fn j2k(rows: usize, columns: usize, values: &[u16]) -> Vec<u8> {
    let list = values.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let script = format!(
        "import io,sys,numpy as np\nfrom PIL import Image\n\
         a=np.array([{list}],dtype=np.uint16).reshape({rows},{columns})\n\
         b=io.BytesIO()\nImage.fromarray(a).save(b,format='JPEG2000',irreversible=False,no_jp2=True)\n\
         sys.stdout.buffer.write(b.getvalue())\n"
    );
    let output = Command::new(python()).arg("-c").arg(script).output().expect("python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

#[test]
fn jpeg_2000_lossless_decodes_to_hu() {
    let (rows, columns) = (3u16, 4u16);
    let stored: Vec<u16> = (0..12).map(|i| i * 300).collect();
    let mut b = Builder::explicit_le();
    b.text(0x0008, 0x0016, "UI", CT_IMAGE_STORAGE)
        .text(0x0008, 0x0018, "UI", "1.2.3.1")
        .text(0x0008, 0x0060, "CS", "CT")
        .us(0x0028, 0x0002, 1)
        .text(0x0028, 0x0004, "CS", "MONOCHROME2")
        .us(0x0028, 0x0010, rows)
        .us(0x0028, 0x0011, columns)
        .us(0x0028, 0x0100, 16)
        .us(0x0028, 0x0101, 16)
        .us(0x0028, 0x0102, 15)
        .us(0x0028, 0x0103, 0)
        .text(0x0028, 0x1052, "DS", "-1024")
        .text(0x0028, 0x1053, "DS", "1")
        .encapsulated(&[j2k(3, 4, &stored)]);
    let instance = read_bytes(&b.part10(JPEG_2000_LOSSLESS, CT_IMAGE_STORAGE, "1.2.3.1")).unwrap();
    let pixels = decode_pixels(&instance, &mut Vec::new()).unwrap();
    assert_eq!(pixels.shape(), &[1, 3, 4]);
    let expected: Vec<f32> = stored.iter().map(|&v| v as f32 - 1024.0).collect();
    assert_eq!(pixels.iter().copied().collect::<Vec<f32>>(), expected);
}

#[test]
fn dcmdump_reads_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("written.dcm");
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(dicom_core::Tag(0x0008, 0x0060), VR::CS, "CT"));
    obj.put(DataElement::new(dicom_core::Tag(0x0020, 0x000D), VR::UI, "1.2.3.4"));
    write_part10(obj, CT_IMAGE_STORAGE, "1.2.3.4.5", &path).unwrap();

    let output = Command::new("dcmdump").arg("-E").arg(&path).output().expect("dcmdump runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}{}", text, String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("LittleEndianExplicit"), "{text}");
    assert!(text.contains("(0002,0003) UI [1.2.3.4.5]"), "{text}");
    assert!(text.contains("(0008,0018) UI [1.2.3.4.5]"), "{text}");
    assert!(text.contains("(0002,0013) SH [PENUMBRA_0_1]"), "{text}");
}
