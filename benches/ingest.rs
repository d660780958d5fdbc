//! Ingest throughput: N synthetic 512x512 CT images sent by DCMTK `storescu` over loopback to
//! Penumbra's C-STORE SCP (fsync before every acknowledgement) and to DCMTK `storescp`, in
//! alternating order, reporting images per second for both and their ratio.
//!
//! Run: `cargo bench --bench ingest --profile dev` (the dev profile builds dependencies at
//! opt-level 3). `PENUMBRA_BENCH_N` sets the image count (default 200) and
//! `PENUMBRA_BENCH_ROUNDS` the number of alternating rounds (default 3).
//! `PENUMBRA_BENCH_FSYNC=0` skips the fsync in the Penumbra sink, to compare the protocol path
//! alone.
//!
//! NOTE: `storescp` 3.6.7 writes files without fsync, so the comparison favours DCMTK.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use penumbra::ingest::scp::{
    spawn_scp, InstanceIds, InstanceSink, ScpConfig, SinkError, StoreOutcome,
};

/// Stores each instance as `<uid>.dcm`, fsyncing the file before returning when `fsync` is set.
struct FsyncSink {
    dir: PathBuf,
    fsync: bool,
}

impl InstanceSink for FsyncSink {
    fn store(&self, ids: &InstanceIds, bytes: &[u8]) -> Result<StoreOutcome, SinkError> {
        let path = self.dir.join(format!("{}.dcm", ids.sop_instance_uid));
        let io = |source| SinkError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::File::create(&path).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        if self.fsync {
            file.sync_all().map_err(io)?;
        }
        Ok(StoreOutcome::Stored)
    }

    fn free_disk_bytes(&self) -> Option<u64> {
        None
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `count` CT slices of 512x512 signed 16-bit pixels (512 KiB of pixel data each).
fn write_inputs(dir: &Path, count: usize) {
    fs::create_dir_all(dir).unwrap();
    let series = penumbra_dicom::uid::new_uid();
    let pixels: Vec<u16> = (0..512 * 512).map(|i| (i % 4096) as u16).collect();
    for index in 0..count {
        let mut obj = InMemDicomObject::new_empty();
        let mut put_str = |tag, vr, value: String| {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)))
        };
        put_str(
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::CT_IMAGE_STORAGE.to_string(),
        );
        put_str(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            penumbra_dicom::uid::new_uid(),
        );
        put_str(tags::STUDY_INSTANCE_UID, VR::UI, "2.25.1".to_string());
        put_str(tags::SERIES_INSTANCE_UID, VR::UI, series.clone());
        put_str(tags::MODALITY, VR::CS, "CT".to_string());
        put_str(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2".to_string(),
        );
        put_str(tags::INSTANCE_NUMBER, VR::IS, (index + 1).to_string());
        for (tag, value) in [
            (tags::ROWS, 512u16),
            (tags::COLUMNS, 512),
            (tags::SAMPLES_PER_PIXEL, 1),
            (tags::BITS_ALLOCATED, 16),
            (tags::BITS_STORED, 16),
            (tags::HIGH_BIT, 15),
            (tags::PIXEL_REPRESENTATION, 1),
        ] {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        }
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.clone().into()),
        ));
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap();
        file.write_to_file(dir.join(format!("ct{index:04}.dcm")))
            .unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "storescp did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| entries.count())
        .unwrap_or(0)
}

fn clear(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
}

/// Sends the input folder in one association and returns images per second.
fn send_all(port: u16, called_ae: &str, input: &Path, output: &Path, count: usize) -> f64 {
    let started = Instant::now();
    let status = Command::new("storescu")
        .env("TCP_NODELAY", "1")
        .args([
            "-aet",
            "BENCH",
            "-aec",
            called_ae,
            "+sd",
            "127.0.0.1",
            &port.to_string(),
        ])
        .arg(input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("storescu must be installed (DCMTK)");
    let elapsed = started.elapsed().as_secs_f64();
    assert!(status.success(), "storescu to {called_ae} failed: {status}");
    assert_eq!(
        count_files(output),
        count,
        "{called_ae} stored a wrong number of files"
    );
    count as f64 / elapsed
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let count = env_usize("PENUMBRA_BENCH_N", 200);
    let rounds = env_usize("PENUMBRA_BENCH_ROUNDS", 3).max(1);
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    let ours_dir = work.path().join("penumbra");
    let dcmtk_dir = work.path().join("storescp");
    write_inputs(&input, count);

    clear(&ours_dir);
    let config = ScpConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        min_free_disk_bytes: 0,
        ..ScpConfig::default()
    };
    let fsync = env_usize("PENUMBRA_BENCH_FSYNC", 1) != 0;
    let sink = Arc::new(FsyncSink {
        dir: ours_dir.clone(),
        fsync,
    });
    let scp = spawn_scp(config, sink, Arc::new(AtomicBool::new(false))).unwrap();
    let ours_port = scp.local_addr().port();

    clear(&dcmtk_dir);
    let dcmtk_port = free_port();
    // DCMTK reads TCP_NODELAY from the environment; the Penumbra SCP sets it on every socket.
    let mut storescp = Command::new("storescp")
        .env("TCP_NODELAY", "1")
        // Same maximum PDU as the Penumbra SCP default, so both receive in equal-sized PDUs.
        .args(["-aet", "STORESCP", "--max-pdu", "131072", "-od"])
        .arg(&dcmtk_dir)
        .arg(dcmtk_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescp must be installed (DCMTK)");
    wait_for_port(dcmtk_port);

    let mut ours = Vec::new();
    let mut dcmtk = Vec::new();
    for round in 0..rounds {
        let penumbra_first = round % 2 == 0;
        for turn in 0..2 {
            if (turn == 0) == penumbra_first {
                clear(&ours_dir);
                ours.push(send_all(ours_port, "PENUMBRA", &input, &ours_dir, count));
            } else {
                clear(&dcmtk_dir);
                dcmtk.push(send_all(dcmtk_port, "STORESCP", &input, &dcmtk_dir, count));
            }
        }
        println!(
            "round {}: penumbra {:.1} images/s, storescp {:.1} images/s",
            round + 1,
            ours[round],
            dcmtk[round]
        );
    }

    let _ = storescp.kill();
    let _ = storescp.wait();
    scp.shutdown(Duration::from_secs(2));

    let ours_median = median(&mut ours);
    let dcmtk_median = median(&mut dcmtk);
    println!("images: {count} of 512x512 16-bit, rounds: {rounds}");
    let mode = if fsync { "fsync" } else { "no fsync" };
    println!("penumbra scp ({mode}): {ours_median:.1} images/s (median)");
    println!("dcmtk storescp:       {dcmtk_median:.1} images/s (median)");
    println!("ratio penumbra/storescp: {:.2}", ours_median / dcmtk_median);
}
