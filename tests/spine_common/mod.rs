//! Helpers shared by the spine integration tests: DICOM generation, a daemon under test, and
//! spool inspection.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Encodes a small CT image (4 x 4 pixels) as a Part 10 file in Explicit VR Little Endian.
pub fn ct_instance(study: &str, series: &str, sop: &str, temporal_positions: Option<u32>, z_mm: f64) -> Vec<u8> {
    let mut object = InMemDicomObject::new_empty();
    let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
    object.put(text(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE));
    object.put(text(tags::SOP_INSTANCE_UID, VR::UI, sop));
    object.put(text(tags::STUDY_INSTANCE_UID, VR::UI, study));
    object.put(text(tags::SERIES_INSTANCE_UID, VR::UI, series));
    object.put(text(tags::MODALITY, VR::CS, "CT"));
    object.put(text(tags::IMAGE_POSITION_PATIENT, VR::DS, &format!("0\\0\\{z_mm}")));
    if let Some(n) = temporal_positions {
        object.put(text(tags::NUMBER_OF_TEMPORAL_POSITIONS, VR::IS, &n.to_string()));
    }
    object.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(4_u16)));
    object.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(4_u16)));
    object.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)));
    object.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(vec![100_u16; 16].into())));

    let file = object
        .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .expect("building the file meta group");
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).expect("encoding a test instance");
    bytes
}

/// Writes a config for a daemon under test into `root`, with its data under `root/var` and
/// one watched folder `root/incoming`. Timings are short so tests run fast.
pub fn write_config(root: &Path, settle_ms: u64, quiet_s: u64) -> PathBuf {
    let config = root.join("pipeline.yaml");
    // Tests run in parallel, so every listener gets its own free loopback port.
    let [scp, qa, metrics] = [free_port(), free_port(), free_port()];
    let text = format!(
        "data_dir: ./var\n\
         ingest:\n  scp:\n    listen: 127.0.0.1:{scp}\n  watch:\n    folders: [./incoming]\n    settle_ms: {settle_ms}\n    rescan_s: 1\n  study_quiet_s: {quiet_s}\n\
         qa:\n  listen: 127.0.0.1:{qa}\n\
         metrics:\n  listen: 127.0.0.1:{metrics}\n\
         shutdown:\n  drain_deadline_s: 2\n"
    );
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir_all(root.join("incoming")).unwrap();
    config
}

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn penumbra() -> Command {
    Command::new(env!("CARGO_BIN_EXE_penumbra"))
}

/// Starts `penumbra serve` on a config; stderr goes to `root/daemon-<n>.log`.
pub fn start_daemon(config: &Path, log_name: &str) -> Child {
    let log = std::fs::File::create(config.parent().unwrap().join(log_name)).unwrap();
    penumbra()
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting penumbra serve")
}

/// Polls `condition` every 50 ms until it is true or `timeout` passes, and returns its last value.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// Lists every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// SOP Instance UIDs spooled under `data_dir`, with the number of files per UID (conflict
/// copies and temporary files included, so a repeat shows as a count above 1).
pub fn spooled_counts(data_dir: &Path) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for path in files_under(&data_dir.join("spool")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let sop = name.split(".conflict-").next().unwrap().trim_end_matches(".dcm").to_string();
        *counts.entry(sop).or_insert(0) += 1;
    }
    counts
}

pub fn spooled_sops(data_dir: &Path) -> HashSet<String> {
    spooled_counts(data_dir).into_keys().collect()
}

/// Reads a study's state record.
pub fn study_record(data_dir: &Path, study: &str) -> Option<serde_json::Value> {
    let bytes = std::fs::read(data_dir.join("state").join(format!("{study}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads every quarantine `reason.json` under `data_dir`.
pub fn quarantine_reasons(data_dir: &Path) -> Vec<serde_json::Value> {
    files_under(&data_dir.join("quarantine"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "reason.json"))
        .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
        .collect()
}

/// Sends SIGTERM and waits up to `timeout` for the exit status.
pub fn terminate(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) with a child pid this test started and a valid signal number.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Returns whether a study record shows the study went through intake to the decode stage.
///
/// The spine tests write minimal CT files without a perfusion series, so the decode stage ends
/// them: the record says failed at decode, with the instance count intake assembled.
pub fn reached_decode(record: &serde_json::Value) -> bool {
    record["stage_reached"] == "decode" && record["state"] == "failed"
}

/// Returns the shared DICOM cases folder: `shared/cases/dicom` in the nearest folder above this
/// package that has one (the repository's sibling `shared/`).
pub fn shared_cases() -> std::path::PathBuf {
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("shared/cases/dicom");
        if candidate.is_dir() {
            return candidate;
        }
        assert!(dir.pop(), "no shared/cases/dicom beside the repository");
    }
}
