//! Ingest throughput: N synthetic 512x512 CT images sent by DCMTK `storescu` over loopback to
//! Penumbra's C-STORE SCP and to DCMTK `storescp`, alternating, reporting images per second for
//! both and their ratio.
//!
//! The Penumbra SCP stores into the spool through the same sink the daemon uses
//! ([`SpoolSink`]), in three modes: `fsync` (each instance fdatasynced in the intake journal
//! before its acknowledgement, as the daemon does), `fsync_direct` (no journal: file and folder
//! fsynced in the spool, grouped across associations) and `page_cache`. Each mode runs with one
//! association (one `storescu` with every file) and with four parallel associations (four
//! `storescu` processes, a quarter of the files each). `storescp` runs with `--fork` for the
//! parallel case, because without it DCMTK serves one association at a time.
//!
//! Run: `cargo bench --bench ingest --profile dev` (the dev profile builds dependencies at
//! opt-level 3). Settings, from the environment:
//! - `PENUMBRA_BENCH_N`: image count (default 500);
//! - `PENUMBRA_BENCH_ROUNDS`: alternating rounds per case (default 3);
//! - `PENUMBRA_BENCH_ASSOCIATIONS`: comma-separated association counts (default `1,4`);
//! - `PENUMBRA_BENCH_DURABILITY`: comma-separated modes, `fsync`, `fsync_direct` and
//!   `page_cache` (default `fsync,page_cache`);
//! - `PENUMBRA_BENCH_JOURNAL_SEGMENTS`: segments of 64 MiB in the `fsync` mode's journal ring
//!   (default: the daemon's, 4).
//!
//! Every run starts after `sync()`, so neither receiver pays for the other's dirty pages. Unset
//! `RUST_BACKTRACE`, as some dicom-rs errors raised during parsing capture a backtrace when it is
//! set.
//!
//! NOTE: `storescp` 3.6.7 writes files without fsync, so the fsync rows favour DCMTK.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use penumbra::config::Durability;
use penumbra::ingest::journal::JournalSettings;
use penumbra::ingest::scp::{spawn_scp, ScpConfig, ScpHandle};
use penumbra::ingest::scp_sink::SpoolSink;
use penumbra::ingest::spool::Spool;

/// Number of `storescu` processes, and input folders, of the parallel case.
const PARALLEL_PARTS: usize = 4;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_usize(name: &str, default: usize) -> usize {
    env_or(name, &default.to_string())
        .parse()
        .unwrap_or_else(|_| panic!("{name} must be a whole number"))
}

/// Writes `count` CT slices of 512x512 signed 16-bit pixels (512 KiB of pixel data each), spread
/// round-robin over `input/part0` to `input/part3`.
fn write_inputs(input: &Path, count: usize) -> Vec<PathBuf> {
    let parts: Vec<PathBuf> = (0..PARALLEL_PARTS).map(|i| input.join(format!("part{i}"))).collect();
    for part in &parts {
        fs::create_dir_all(part).unwrap();
    }

    let series = penumbra_dicom::uid::new_uid();
    let pixels: Vec<u16> = (0..512 * 512).map(|i| (i % 4096) as u16).collect();
    for index in 0..count {
        let object = ct_slice(index, &series, &pixels);
        let file = object
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap();
        let part = &parts[index % PARALLEL_PARTS];
        file.write_to_file(part.join(format!("ct{index:04}.dcm"))).unwrap();
    }
    parts
}

fn ct_slice(index: usize, series: &str, pixels: &[u16]) -> InMemDicomObject {
    let mut object = InMemDicomObject::new_empty();
    let mut put_str = |tag, vr, value: String| object.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    put_str(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE.to_string());
    put_str(tags::SOP_INSTANCE_UID, VR::UI, penumbra_dicom::uid::new_uid());
    put_str(tags::STUDY_INSTANCE_UID, VR::UI, "2.25.1".to_string());
    put_str(tags::SERIES_INSTANCE_UID, VR::UI, series.to_string());
    put_str(tags::MODALITY, VR::CS, "CT".to_string());
    put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2".to_string());
    put_str(tags::INSTANCE_NUMBER, VR::IS, (index + 1).to_string());
    put_str(tags::IMAGE_POSITION_PATIENT, VR::DS, format!("0\\0\\{index}"));

    for (tag, value) in [
        (tags::ROWS, 512u16),
        (tags::COLUMNS, 512),
        (tags::SAMPLES_PER_PIXEL, 1),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 16),
        (tags::HIGH_BIT, 15),
        (tags::PIXEL_REPRESENTATION, 1),
    ] {
        object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    }
    object.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())));
    object
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "storescp did not start on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counts the files under `dir`, in every subfolder, whose name does not start with a dot
/// (the spool's temporary files do).
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                count_files(&path)
            } else {
                usize::from(!entry.file_name().to_string_lossy().starts_with('.'))
            }
        })
        .sum()
}

/// Removes everything inside `dir`, keeping the folder itself.
fn clear(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            fs::remove_dir_all(&path).unwrap();
        } else {
            fs::remove_file(&path).unwrap();
        }
    }
}

fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// A receiver under test: where it listens, its AE title and the folder it stores into.
struct Receiver {
    port: u16,
    ae_title: &'static str,
    output: PathBuf,
}

/// Sends `sets` (one `storescu` per set, all at once) and returns images per second once every
/// `storescu` has finished and the receiver contains `count` files.
fn send(receiver: &Receiver, sets: &[Vec<PathBuf>], count: usize) -> f64 {
    clear(&receiver.output);
    // SAFETY: sync() takes no arguments and only flushes file systems.
    unsafe { libc::sync() };

    let started = Instant::now();
    let children: Vec<Child> = sets.iter().map(|set| spawn_storescu(receiver, set)).collect();
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "storescu to {} failed: {status}", receiver.ae_title);
    }
    let elapsed = started.elapsed().as_secs_f64();

    let stored = count_files(&receiver.output);
    assert_eq!(stored, count, "{} stored {stored} of {count} files", receiver.ae_title);
    count as f64 / elapsed
}

fn spawn_storescu(receiver: &Receiver, inputs: &[PathBuf]) -> Child {
    Command::new("storescu")
        // DCMTK reads TCP_NODELAY from the environment; the Penumbra SCP sets it on its sockets.
        .env("TCP_NODELAY", "1")
        .args(["-aet", "BENCH", "-aec", receiver.ae_title, "+sd", "127.0.0.1", &receiver.port.to_string()])
        .args(inputs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescu must be installed (DCMTK)")
}

fn spawn_storescp(port: u16, output: &Path, fork: bool) -> Child {
    fs::create_dir_all(output).unwrap();
    let mut command = Command::new("storescp");
    command
        .env("TCP_NODELAY", "1")
        // Same maximum PDU as the Penumbra SCP default, so both receive in equal-sized PDUs.
        .args(["-aet", "STORESCP", "--max-pdu", "131072", "-od"])
        .arg(output);
    if fork {
        command.arg("--fork");
    }
    let child = command
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescp must be installed (DCMTK)");
    wait_for_port(port);
    child
}

fn start_penumbra(data_dir: &Path, mode: &str) -> (ScpHandle, PathBuf) {
    let spool = match mode {
        "fsync" => Spool::open_with_journal(data_dir, Durability::Fsync, journal_settings()),
        "fsync_direct" => Spool::open_without_journal(data_dir, Durability::Fsync),
        "page_cache" => Spool::open_with(data_dir, Durability::PageCache),
        other => panic!("PENUMBRA_BENCH_DURABILITY: unknown mode {other:?}; use fsync, fsync_direct or page_cache"),
    };
    let spool = Arc::new(spool.unwrap());
    let spool_root = spool.root().to_path_buf();
    let config = ScpConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        min_free_disk_bytes: 0,
        ..ScpConfig::default()
    };
    let scp = spawn_scp(config, Arc::new(SpoolSink::new(spool)), Arc::new(AtomicBool::new(false))).unwrap();
    (scp, spool_root)
}

/// Returns the journal ring of the `fsync` mode: the daemon's default unless
/// `PENUMBRA_BENCH_JOURNAL_SEGMENTS` sets the number of 64 MiB segments.
fn journal_settings() -> JournalSettings {
    let default = JournalSettings::default();
    let segments = env_usize("PENUMBRA_BENCH_JOURNAL_SEGMENTS", default.segments as usize);
    JournalSettings { segments: u32::try_from(segments).expect("PENUMBRA_BENCH_JOURNAL_SEGMENTS is too large"), ..default }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// One row of the summary.
struct CaseResult {
    label: String,
    penumbra: f64,
    storescp: f64,
    /// Median of the per-round ratios, each from two back-to-back runs, so that each ratio
    /// compares runs that saw a similar load.
    paired_ratio: f64,
    load: String,
}

fn main() {
    let count = env_usize("PENUMBRA_BENCH_N", 500);
    let rounds = env_usize("PENUMBRA_BENCH_ROUNDS", 3).max(1);
    let associations: Vec<usize> = env_or("PENUMBRA_BENCH_ASSOCIATIONS", "1,4")
        .split(',')
        .map(|n| n.trim().parse().expect("PENUMBRA_BENCH_ASSOCIATIONS must list whole numbers"))
        .collect();
    let modes = env_or("PENUMBRA_BENCH_DURABILITY", "fsync,page_cache");

    let work = tempfile::tempdir().unwrap();
    let parts = write_inputs(&work.path().join("input"), count);

    let plain_port = free_port();
    let mut plain = spawn_storescp(plain_port, &work.path().join("storescp"), false);
    let forked_port = free_port();
    let mut forked = spawn_storescp(forked_port, &work.path().join("storescp-fork"), true);

    let mut results = Vec::new();
    for mode in modes.split(',').map(str::trim) {
        let (scp, spool_root) = start_penumbra(&work.path().join(format!("penumbra-{mode}")), mode);
        let ours = Receiver { port: scp.local_addr().port(), ae_title: "PENUMBRA", output: spool_root };

        for &parallel in &associations {
            let (port, folder) = if parallel == 1 { (plain_port, "storescp") } else { (forked_port, "storescp-fork") };
            let theirs = Receiver { port, ae_title: "STORESCP", output: work.path().join(folder) };
            let sets = split_inputs(&parts, parallel);
            let label = format!("{mode}, {parallel} association{}", if parallel == 1 { "" } else { "s" });
            results.push(run_case(&label, &ours, &theirs, &sets, count, rounds));
        }
        scp.shutdown(Duration::from_secs(2));
    }

    for child in [&mut plain, &mut forked] {
        let _ = child.kill();
        let _ = child.wait();
    }
    print_summary(count, rounds, &results);
}

/// Groups the input folders into `parallel` sets, one per `storescu` process.
fn split_inputs(parts: &[PathBuf], parallel: usize) -> Vec<Vec<PathBuf>> {
    assert!(
        (1..=PARALLEL_PARTS).contains(&parallel),
        "association counts from 1 to {PARALLEL_PARTS} are supported, got {parallel}"
    );
    let mut sets = vec![Vec::new(); parallel];
    for (index, part) in parts.iter().enumerate() {
        sets[index % parallel].push(part.clone());
    }
    sets
}

fn run_case(label: &str, ours: &Receiver, theirs: &Receiver, sets: &[Vec<PathBuf>], count: usize, rounds: usize) -> CaseResult {
    let load = load_average();
    let mut penumbra = Vec::new();
    let mut storescp = Vec::new();
    for round in 0..rounds {
        let penumbra_first = round % 2 == 0;
        for turn in 0..2 {
            if (turn == 0) == penumbra_first {
                penumbra.push(send(ours, sets, count));
            } else {
                storescp.push(send(theirs, sets, count));
            }
        }
        println!(
            "{label}, round {}: penumbra {:.1} images/s, storescp {:.1} images/s (load average {})",
            round + 1,
            penumbra[round],
            storescp[round],
            load_average()
        );
    }
    let mut ratios: Vec<f64> = penumbra.iter().zip(&storescp).map(|(ours, theirs)| ours / theirs).collect();
    CaseResult {
        label: label.to_string(),
        penumbra: median(&mut penumbra),
        storescp: median(&mut storescp),
        paired_ratio: median(&mut ratios),
        load,
    }
}

fn print_summary(count: usize, rounds: usize, results: &[CaseResult]) {
    println!();
    println!("images: {count} of 512x512 16-bit, rounds: {rounds}, medians in images/s");
    println!("| case | penumbra | storescp | ratio of medians | median paired ratio | load average at start |");
    println!("|---|---|---|---|---|---|");
    for result in results {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {} |",
            result.label,
            result.penumbra,
            result.storescp,
            result.penumbra / result.storescp,
            result.paired_ratio,
            result.load
        );
    }
}
