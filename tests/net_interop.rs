//! Interoperability tests of the C-STORE SCP, the SCU and the outbox against real peers:
//! DCMTK (`echoscu`, `storescu`, `storescp`) and pynetdicom, all on loopback with free ports.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use penumbra::ingest::scp::{
    self, InstanceIds, InstanceSink, ScpConfig, ScpHandle, SinkError, StoreOutcome,
};
use penumbra::outbox::scu::{self, Part10File, ScuTarget};
use penumbra::outbox::{Destination, Outbox, RetryPolicy};

const SCP_AE: &str = "PENUMBRA";
const US_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.6.1";

// ---------------------------------------------------------------------------------------------
// Test sink and fixtures

/// An fsyncing file store keyed by SOP Instance UID, with a settable free-space report.
struct FileSink {
    dir: PathBuf,
    free_bytes: AtomicU64,
    stored: Mutex<Vec<InstanceIds>>,
}

impl FileSink {
    fn new(dir: PathBuf) -> Arc<FileSink> {
        fs::create_dir_all(&dir).unwrap();
        Arc::new(FileSink {
            dir,
            free_bytes: AtomicU64::new(u64::MAX),
            stored: Mutex::new(Vec::new()),
        })
    }

    fn path_of(&self, uid: &str) -> PathBuf {
        self.dir.join(format!("{uid}.dcm"))
    }

    fn count(&self) -> usize {
        fs::read_dir(&self.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "dcm")
            })
            .count()
    }
}

impl InstanceSink for FileSink {
    fn store(&self, ids: &InstanceIds, bytes: &[u8]) -> Result<StoreOutcome, SinkError> {
        let target = self.path_of(&ids.sop_instance_uid);
        if let Ok(existing) = fs::read(&target) {
            return Ok(if existing == bytes {
                StoreOutcome::Duplicate
            } else {
                StoreOutcome::Conflict
            });
        }
        let partial = self.dir.join(format!("{}.partial", ids.sop_instance_uid));
        let io = |source| SinkError::Io {
            path: partial.clone(),
            source,
        };
        let mut file = fs::File::create(&partial).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&partial, &target).map_err(io)?;
        self.stored.lock().unwrap().push(ids.clone());
        Ok(StoreOutcome::Stored)
    }

    fn free_disk_bytes(&self) -> Option<u64> {
        Some(self.free_bytes.load(Ordering::SeqCst))
    }
}

struct RunningScp {
    handle: Option<ScpHandle>,
    sink: Arc<FileSink>,
    _dir: tempfile::TempDir,
}

impl RunningScp {
    fn port(&self) -> u16 {
        self.handle.as_ref().unwrap().local_addr().port()
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }
}

impl Drop for RunningScp {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown(Duration::from_secs(2));
        }
    }
}

fn start_scp(adjust: impl FnOnce(&mut ScpConfig)) -> RunningScp {
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::new(dir.path().join("store"));
    let mut config = ScpConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        artim_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(10),
        min_free_disk_bytes: 1 << 20,
        ..ScpConfig::default()
    };
    adjust(&mut config);
    let handle = scp::spawn_scp(config, sink.clone(), Arc::new(AtomicBool::new(false))).unwrap();
    RunningScp {
        handle: Some(handle),
        sink,
        _dir: dir,
    }
}

fn new_uid() -> String {
    penumbra_dicom::uid::new_uid()
}

/// Builds a small synthetic CT slice: signed 16-bit, stored value = pixel index mod 4096.
fn ct_object(
    sop_class: &str,
    sop_instance: &str,
    series: &str,
    rows: u16,
    columns: u16,
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    let mut put_str = |tag, vr, value: &str| {
        obj.put(DataElement::new(
            tag,
            vr,
            PrimitiveValue::from(value.to_string()),
        ))
    };
    put_str(tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(tags::SOP_INSTANCE_UID, VR::UI, sop_instance);
    put_str(tags::STUDY_INSTANCE_UID, VR::UI, "2.25.1111");
    put_str(tags::SERIES_INSTANCE_UID, VR::UI, series);
    put_str(tags::MODALITY, VR::CS, "CT");
    put_str(tags::PATIENT_NAME, VR::PN, "PHANTOM^NET");
    put_str(tags::PATIENT_ID, VR::LO, "PHANTOM-NET");
    put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_str(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    put_str(tags::RESCALE_SLOPE, VR::DS, "1");
    for (tag, value) in [
        (tags::ROWS, rows),
        (tags::COLUMNS, columns),
        (tags::SAMPLES_PER_PIXEL, 1),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 16),
        (tags::HIGH_BIT, 15),
        (tags::PIXEL_REPRESENTATION, 1),
    ] {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    }
    let pixels: Vec<u16> = (0..u32::from(rows) * u32::from(columns))
        .map(|i| (i % 4096) as u16)
        .collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));
    obj
}

fn write_ct(path: &Path, sop_class: &str, series: &str, rows: u16, columns: u16) -> String {
    let uid = new_uid();
    let obj = ct_object(sop_class, &uid, series, rows, columns);
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    file.write_to_file(path).unwrap();
    uid
}

/// Writes a Part 10 file whose File Meta names `meta_uid` while the data set contains `data_uid`.
fn write_mismatched(path: &Path, meta_uid: &str, data_uid: &str) {
    let obj = ct_object(uids::CT_IMAGE_STORAGE, data_uid, "2.25.2", 8, 8);
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(meta_uid)
        .implementation_class_uid("2.25.99")
        .build()
        .unwrap();
    obj.with_exact_meta(meta).write_to_file(path).unwrap();
}

/// Writes a Part 10 file whose data set is cut inside its first element.
fn write_unparseable(path: &Path, uid: &str) {
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(uid)
        .implementation_class_uid("2.25.99")
        .build()
        .unwrap();
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    meta.write(&mut bytes).unwrap();
    // (0008,0016) UI declaring 16384 bytes, followed by only 10.
    bytes.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'U', b'I', 0x00, 0x40]);
    bytes.extend_from_slice(b"1.2.3.4.5\0");
    fs::write(path, bytes).unwrap();
}

fn cases_dir() -> PathBuf {
    shared_cases()
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("failed to run {command:?}: {err}"));
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn storescu(scp: &RunningScp, extra: &[&str], files: &[&Path]) -> Output {
    let mut command = Command::new("storescu");
    command
        .env("TCP_NODELAY", "1")
        .args(["-aet", "DCMTKSCU", "-aec", SCP_AE])
        .args(extra)
        .arg("127.0.0.1")
        .arg(scp.port().to_string());
    for file in files {
        command.arg(file);
    }
    run(&mut command)
}

fn target(addr: &str, called: &str) -> ScuTarget {
    ScuTarget {
        address: addr.to_string(),
        called_ae_title: called.to_string(),
        calling_ae_title: "TESTSCU".to_string(),
        max_pdu_length: 16_384,
        timeout: Duration::from_secs(10),
    }
}

fn store_status(outcome: &scu::SendOutcome) -> Option<u16> {
    match outcome {
        scu::SendOutcome::Status { code, .. } => Some(*code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// DCMTK and our SCU sending to our SCP

#[test]
fn echoscu_gets_success() {
    let scp = start_scp(|_| {});
    let output = run(Command::new("echoscu").args([
        "-aet",
        "DCMTKSCU",
        "-aec",
        SCP_AE,
        "127.0.0.1",
        &scp.port().to_string(),
    ]));
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn storescu_transfer_syntaxes_are_stored() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    // storescu option -> transfer syntax of the data set it sends.
    let cases = [
        ("-xi", uids::IMPLICIT_VR_LITTLE_ENDIAN),
        ("-xe", uids::EXPLICIT_VR_LITTLE_ENDIAN),
        ("-xd", uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
    ];
    for (flag, ts) in cases {
        let path = work.path().join(format!("ct{flag}.dcm"));
        let uid = write_ct(&path, uids::CT_IMAGE_STORAGE, "2.25.3", 64, 64);
        let output = storescu(&scp, &[flag], &[&path]);
        assert!(output.status.success(), "{flag}: {}", text(&output));

        let stored =
            Part10File::read(&scp.sink.path_of(&uid)).unwrap_or_else(|err| panic!("{flag}: {err}"));
        assert_eq!(stored.transfer_syntax_uid, ts, "{flag}");
        assert_eq!(stored.sop_instance_uid, uid, "{flag}");
        let parsed = dicom_object::open_file(scp.sink.path_of(&uid))
            .unwrap_or_else(|err| panic!("{flag}: {err}"));
        let pixels = parsed
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap();
        assert_eq!(pixels.len(), 64 * 64 * 2, "{flag}");
        assert_eq!(&pixels[2..4], &1u16.to_le_bytes(), "{flag}: second pixel");
    }
    assert_eq!(scp.sink.count(), 3);
}

/// Shared cases sent in their own transfer syntax: the stored file keeps that syntax (or the
/// other little endian one for uncompressed files) and the same pixel data. DCMTK re-encodes the data set while sending, so only element values, not
/// raw bytes, can be compared here.
#[test]
fn storescu_cases_keep_their_transfer_syntax() {
    let scp = start_scp(|_| {});
    // By default storescu proposes only uncompressed syntaxes. The flags -xd, -xs and -xr
    // propose Deflated, JPEG Lossless SV1 and RLE Lossless first.
    let cases = [
        ("g00_base_ct_explicit.dcm", None),
        ("g12_implicit_odd_total_length.dcm", None),
        ("g37_big_endian.dcm", None),
        ("g38_deflated.dcm", Some("-xd")),
        ("g42_jpeg_lossless_sv1.dcm", Some("-xs")),
        ("g44_rle.dcm", Some("-xr")),
    ];
    for (name, flag) in cases {
        let path = cases_dir().join(name);
        let source = Part10File::read(&path).unwrap();
        let mut options = vec!["-v"];
        options.extend(flag);
        let output = storescu(&scp, &options, &[&path]);
        assert!(output.status.success(), "{name}: {}", text(&output));
        assert!(
            !text(&output).contains("Abort"),
            "{name}: {}",
            text(&output)
        );

        let stored_path = scp.sink.path_of(&source.sop_instance_uid);
        let stored = Part10File::read(&stored_path).unwrap_or_else(|err| panic!("{name}: {err}"));
        let little_endian = [
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
        ];
        if little_endian.contains(&source.transfer_syntax_uid.as_str()) {
            // storescu proposes both little endian syntaxes for these and may convert.
            assert!(
                little_endian.contains(&stored.transfer_syntax_uid.as_str()),
                "{name}: {}",
                stored.transfer_syntax_uid
            );
        } else {
            assert_eq!(
                stored.transfer_syntax_uid, source.transfer_syntax_uid,
                "{name}"
            );
        }

        let original = dicom_object::open_file(&path).unwrap();
        let received =
            dicom_object::open_file(&stored_path).unwrap_or_else(|err| panic!("{name}: {err}"));
        let pixels = |obj: &dicom_object::DefaultDicomObject| {
            obj.element(tags::PIXEL_DATA).unwrap().value().clone()
        };
        assert!(
            pixels(&original) == pixels(&received),
            "{name}: pixel data changed"
        );
        fs::remove_file(&stored_path).unwrap();
    }
}

#[test]
fn storescu_recursive_multi_series_folder() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    for series in 0..2 {
        for index in 0..3 {
            let path = work
                .path()
                .join(format!("series{series}/sub/im{index}.dcm"));
            write_ct(
                &path,
                uids::CT_IMAGE_STORAGE,
                &format!("2.25.40{series}"),
                32,
                32,
            );
        }
    }

    let output = storescu(&scp, &["+sd", "+r"], &[work.path()]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(scp.sink.count(), 6);
    let stored = scp.sink.stored.lock().unwrap();
    let series: std::collections::BTreeSet<_> = stored
        .iter()
        .map(|ids| ids.series_instance_uid.clone().unwrap())
        .collect();
    assert_eq!(series.len(), 2);
    assert!(stored.iter().all(|ids| ids.calling_ae_title == "DCMTKSCU"));
}

#[test]
fn two_parallel_associations() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for run_index in 0..2 {
        let folder = work.path().join(format!("run{run_index}"));
        for index in 0..5 {
            write_ct(
                &folder.join(format!("im{index}.dcm")),
                uids::CT_IMAGE_STORAGE,
                "2.25.5",
                64,
                64,
            );
        }
        let child = Command::new("storescu")
            .args([
                "-aet",
                "DCMTKSCU",
                "-aec",
                SCP_AE,
                "+sd",
                "127.0.0.1",
                &scp.port().to_string(),
            ])
            .arg(&folder)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
    }
    assert_eq!(scp.sink.count(), 10);
}

#[test]
fn wrong_called_ae_is_rejected() {
    let scp = start_scp(|_| {});
    let output = run(Command::new("echoscu").args([
        "-aet",
        "DCMTKSCU",
        "-aec",
        "NOT-PENUMBRA",
        "127.0.0.1",
        &scp.port().to_string(),
    ]));
    assert!(!output.status.success());
    assert!(
        text(&output).contains("Called AE Title Not Recognized"),
        "{}",
        text(&output)
    );

    let err = scu::echo(&target(&scp.addr(), "NOT-PENUMBRA")).unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(
        err.to_string().contains("called AE title not recognized"),
        "{err}"
    );
}

#[test]
fn calling_ae_outside_allow_list_is_rejected() {
    let scp = start_scp(|config| config.allowed_calling_ae = vec!["MODALITY1".to_string()]);
    let err = scu::echo(&target(&scp.addr(), SCP_AE)).unwrap_err();
    assert!(
        err.to_string().contains("calling AE title not recognized"),
        "{err}"
    );

    let mut allowed = target(&scp.addr(), SCP_AE);
    allowed.calling_ae_title = "MODALITY1".to_string();
    assert_eq!(scu::echo(&allowed).unwrap(), 0x0000);
}

#[test]
fn unsupported_sop_class_gets_0122() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("us.dcm");
    write_ct(&path, US_IMAGE_STORAGE, "2.25.6", 16, 16);

    let output = storescu(&scp, &["-v"], &[&path]);
    assert!(
        text(&output).contains("0x0122") || text(&output).contains("SOPClassNotSupported"),
        "{}",
        text(&output)
    );

    let file = Part10File::read(&path).unwrap();
    let outcomes = scu::store(&target(&scp.addr(), SCP_AE), &[file]);
    assert_eq!(store_status(&outcomes[0]), Some(0x0122));
    assert_eq!(scp.sink.count(), 0);
}

/// Failure statuses within one association: each bad object gets its status and the good
/// object after them is still stored.
#[test]
fn bad_objects_keep_the_association() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    let mismatched = work.path().join("mismatch.dcm");
    write_mismatched(&mismatched, &new_uid(), &new_uid());
    let unparseable = work.path().join("cut.dcm");
    write_unparseable(&unparseable, &new_uid());
    let good = work.path().join("good.dcm");
    let good_uid = write_ct(&good, uids::CT_IMAGE_STORAGE, "2.25.7", 16, 16);

    let files: Vec<Part10File> = [&mismatched, &unparseable, &good]
        .iter()
        .map(|p| Part10File::read(p).unwrap())
        .collect();
    let outcomes = scu::store(&target(&scp.addr(), SCP_AE), &files);
    assert_eq!(store_status(&outcomes[0]), Some(0xA900));
    assert_eq!(store_status(&outcomes[1]).map(|c| c & 0xF000), Some(0xC000));
    assert_eq!(store_status(&outcomes[2]), Some(0x0000));
    assert_eq!(scp.sink.count(), 1);
    assert!(scp.sink.path_of(&good_uid).exists());
}

#[test]
fn low_disk_answers_a700() {
    let scp = start_scp(|_| {});
    scp.sink.free_bytes.store(1000, Ordering::SeqCst);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ct.dcm");
    write_ct(&path, uids::CT_IMAGE_STORAGE, "2.25.8", 16, 16);

    let outcomes = scu::store(
        &target(&scp.addr(), SCP_AE),
        &[Part10File::read(&path).unwrap()],
    );
    assert_eq!(store_status(&outcomes[0]), Some(0xA700));
    assert_eq!(scp.sink.count(), 0);

    scp.sink.free_bytes.store(u64::MAX, Ordering::SeqCst);
    let outcomes = scu::store(
        &target(&scp.addr(), SCP_AE),
        &[Part10File::read(&path).unwrap()],
    );
    assert_eq!(store_status(&outcomes[0]), Some(0x0000));
}

#[test]
fn abort_mid_transfer_leaves_no_file() {
    let scp = start_scp(|_| {});
    abort_after_one_fragment(&scp.addr());

    // The SCP must still serve new associations, and nothing may have been stored.
    assert_eq!(scu::echo(&target(&scp.addr(), SCP_AE)).unwrap(), 0x0000);
    assert_eq!(scp.sink.count(), 0);
    assert_eq!(fs::read_dir(&scp.sink.dir).unwrap().count(), 0);
}

/// Sends a C-STORE command and the first 512 bytes of its data set, then aborts.
fn abort_after_one_fragment(addr: &str) {
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    use dicom_ul::{ClientAssociationOptions, Pdu};

    let mut association = ClientAssociationOptions::new()
        .calling_ae_title("TESTSCU")
        .called_ae_title(SCP_AE)
        .with_presentation_context(
            uids::CT_IMAGE_STORAGE,
            vec![uids::EXPLICIT_VR_LITTLE_ENDIAN],
        )
        .establish(addr)
        .unwrap();
    let pc_id = association.presentation_contexts()[0].id;
    let command =
        scp::dimse::encode_store_request(1, uids::CT_IMAGE_STORAGE, "2.25.12345").unwrap();
    let first = PDataValue {
        presentation_context_id: pc_id,
        value_type: PDataValueType::Command,
        is_last: true,
        data: command,
    };
    association.send(&Pdu::PData { data: vec![first] }).unwrap();
    let fragment = PDataValue {
        presentation_context_id: pc_id,
        value_type: PDataValueType::Data,
        is_last: false,
        data: vec![0u8; 512],
    };
    association
        .send(&Pdu::PData {
            data: vec![fragment],
        })
        .unwrap();
    association.abort().unwrap();
}

/// Lists the files under `dir` and its subfolders.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The daemon's own sink, the spool in page-cache mode: the stored files must hold what storescu
/// sent, a repeat must be a duplicate, and an aborted transfer must leave nothing.
#[test]
fn page_cache_spool_stores_storescu_files() {
    use penumbra::config::Durability;
    use penumbra::ingest::scp_sink::SpoolSink;
    use penumbra::ingest::spool::Spool;

    let data = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open_with(data.path(), Durability::PageCache).unwrap());
    let config = ScpConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), min_free_disk_bytes: 0, ..ScpConfig::default() };
    let handle = scp::spawn_scp(config, Arc::new(SpoolSink::new(spool.clone())), Arc::new(AtomicBool::new(false))).unwrap();
    let addr = handle.local_addr().to_string();
    let send = |files: &[PathBuf]| {
        let output = run(Command::new("storescu")
            .env("TCP_NODELAY", "1")
            .args(["-aet", "DCMTKSCU", "-aec", SCP_AE, "127.0.0.1", &handle.local_addr().port().to_string()])
            .args(files));
        assert!(output.status.success(), "{}", text(&output));
    };

    // 256x256 images take several PDUs each.
    let work = tempfile::tempdir().unwrap();
    let sent: Vec<PathBuf> = (0..3).map(|i| work.path().join(format!("im{i}.dcm"))).collect();
    let sop_uids: Vec<String> = sent.iter().map(|path| write_ct(path, uids::CT_IMAGE_STORAGE, "2.25.77", 256, 256)).collect();
    send(&sent);
    send(&sent);
    abort_after_one_fragment(&addr);
    assert_eq!(scu::echo(&target(&addr, SCP_AE)).unwrap(), 0x0000);

    let stored = files_under(spool.root());
    assert_eq!(stored.len(), 3, "{stored:?}");
    for (path, uid) in sent.iter().zip(&sop_uids) {
        let stored_path = spool.root().join("2.25.1111/2.25.77").join(format!("{uid}.dcm"));
        let original = dicom_object::open_file(path).unwrap();
        let copy = dicom_object::open_file(&stored_path).unwrap();
        assert_eq!(copy.meta().media_storage_sop_instance_uid(), uid.as_str());
        for tag in [tags::SOP_INSTANCE_UID, tags::ROWS, tags::PIXEL_DATA] {
            let expected = original.element(tag).unwrap().to_bytes().unwrap();
            assert_eq!(copy.element(tag).unwrap().to_bytes().unwrap(), expected, "{tag} of {uid}");
        }
    }
    handle.shutdown(Duration::from_secs(2));
}

#[test]
fn association_limit_rejects_transiently() {
    use dicom_ul::ClientAssociationOptions;

    let scp = start_scp(|config| config.max_associations = 1);
    let open_association = ClientAssociationOptions::new()
        .calling_ae_title("TESTSCU")
        .called_ae_title(SCP_AE)
        .with_abstract_syntax(uids::VERIFICATION)
        .establish(scp.addr())
        .unwrap();

    let err = scu::echo(&target(&scp.addr(), SCP_AE)).unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert!(err.to_string().contains("local limit exceeded"), "{err}");

    open_association.release().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while scp.handle.as_ref().unwrap().active_associations() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(scu::echo(&target(&scp.addr(), SCP_AE)).unwrap(), 0x0000);
}

#[test]
fn idle_association_is_closed() {
    use dicom_ul::ClientAssociationOptions;

    let scp = start_scp(|config| config.idle_timeout = Duration::from_millis(300));
    let _open_association = ClientAssociationOptions::new()
        .calling_ae_title("TESTSCU")
        .called_ae_title(SCP_AE)
        .with_abstract_syntax(uids::VERIFICATION)
        .establish(scp.addr())
        .unwrap();
    assert_eq!(scp.handle.as_ref().unwrap().active_associations(), 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(scp.handle.as_ref().unwrap().active_associations(), 0);
}

/// Writes a CT object whose Pixel Data is encapsulated (one fragment of `fragment` bytes) and
/// labelled with `transfer_syntax`. The SCP checks the data set, not the codestream.
fn write_encapsulated(path: &Path, transfer_syntax: &str, fragment: Vec<u8>) -> String {
    use dicom_core::value::{PixelFragmentSequence, Value};

    let uid = new_uid();
    let mut obj = ct_object(uids::CT_IMAGE_STORAGE, &uid, "2.25.17", 16, 16);
    let sequence = PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment]);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(sequence),
    ));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(transfer_syntax))
        .unwrap();
    file.write_to_file(path).unwrap();
    uid
}

#[test]
fn supported_classes_and_syntaxes_stored() {
    // A small maximum PDU makes every data set arrive in several P-DATA PDUs.
    let scp = start_scp(|config| config.max_pdu_length = 4096);
    let work = tempfile::tempdir().unwrap();

    let mut files = Vec::new();
    for (index, sop_class) in scp::sop::STORAGE_SOP_CLASSES.iter().enumerate() {
        let path = work.path().join(format!("class{index}.dcm"));
        write_ct(&path, sop_class, "2.25.18", 64, 64);
        files.push(Part10File::read(&path).unwrap());
    }
    // JPEG 2000 codestreams start with the SOC and SIZ markers, FF4F FF51.
    let codestream = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x2F, 0x00, 0x00];
    for (index, ts) in [uids::JPEG2000_LOSSLESS, uids::JPEG2000].iter().enumerate() {
        let path = work.path().join(format!("j2k{index}.dcm"));
        write_encapsulated(&path, ts, codestream.clone());
        files.push(Part10File::read(&path).unwrap());
    }

    let outcomes = scu::store(&target(&scp.addr(), SCP_AE), &files);
    for (file, outcome) in files.iter().zip(&outcomes) {
        assert_eq!(
            store_status(outcome),
            Some(0x0000),
            "{} in {}",
            file.sop_class_uid,
            file.transfer_syntax_uid
        );
        let stored = Part10File::read(&scp.sink.path_of(&file.sop_instance_uid)).unwrap();
        assert_eq!(stored.sop_class_uid, file.sop_class_uid);
        assert_eq!(stored.transfer_syntax_uid, file.transfer_syntax_uid);
        assert!(
            stored.data_set() == file.data_set(),
            "{}: data set bytes changed",
            file.sop_class_uid
        );
    }
    assert_eq!(scp.sink.count(), scp::sop::STORAGE_SOP_CLASSES.len() + 2);
}

#[test]
fn unsupported_transfer_syntax_context_rejected() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    // JPEG-LS Lossless is not among the accepted transfer syntaxes.
    let jpeg_ls = work.path().join("jls.dcm");
    write_encapsulated(
        &jpeg_ls,
        "1.2.840.10008.1.2.4.80",
        vec![0xFF, 0xD8, 0xFF, 0xF7],
    );
    let good = work.path().join("good.dcm");
    write_ct(&good, uids::CT_IMAGE_STORAGE, "2.25.20", 16, 16);

    let files = vec![
        Part10File::read(&jpeg_ls).unwrap(),
        Part10File::read(&good).unwrap(),
    ];
    let outcomes = scu::store(&target(&scp.addr(), SCP_AE), &files);
    assert_eq!(outcomes[0], scu::SendOutcome::NoPresentationContext);
    assert_eq!(store_status(&outcomes[1]), Some(0x0000));
    assert_eq!(scp.sink.count(), 1);
}

#[test]
fn silent_connection_closed_by_artim() {
    use std::io::Read;

    let scp = start_scp(|config| config.artim_timeout = Duration::from_millis(300));
    let mut stream = TcpStream::connect(scp.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    // The SCP closes the socket without a reply once the ARTIM timer expires.
    let read = stream.read(&mut buffer);
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn shutdown_stops_listening() {
    let mut scp = start_scp(|_| {});
    let addr = scp.addr();
    assert_eq!(scu::echo(&target(&addr, SCP_AE)).unwrap(), 0x0000);
    let still_open = scp.handle.take().unwrap().shutdown(Duration::from_secs(2));
    assert_eq!(still_open, 0);
    assert!(scu::echo(&target(&addr, SCP_AE)).is_err());
}

// ---------------------------------------------------------------------------------------------
// Outbox and SCU against DCMTK storescp and our own SCP

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
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A DCMTK storescp writing bit-preserved files into a folder; killed on drop.
struct Storescp {
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for Storescp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_storescp(port: u16, dir: &Path) -> Storescp {
    fs::create_dir_all(dir).unwrap();
    let child = Command::new("storescp")
        .args(["-aet", "DEST", "+B", "-od"])
        .arg(dir)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    Storescp {
        child,
        dir: dir.to_path_buf(),
    }
}

fn received_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

fn destination(name: &str, port: u16, called: &str) -> Destination {
    Destination {
        name: name.to_string(),
        address: format!("127.0.0.1:{port}"),
        called_ae_title: called.to_string(),
        calling_ae_title: "PENUMBRA".to_string(),
        max_pdu_length: 16_384,
        timeout: Duration::from_secs(5),
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_secs(30),
        max_backoff: Duration::from_secs(60),
        batch_size: 16,
    }
}

#[test]
fn outbox_delivers_to_storescp_byte_for_byte() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let storescp = start_storescp(port, &work.path().join("received"));
    let dest = destination("pacs", port, "DEST");
    let outbox = Outbox::open(&work.path().join("outbox"), vec![dest.clone()], policy()).unwrap();

    let mut sources = Vec::new();
    for index in 0..3 {
        let path = work.path().join(format!("src/im{index}.dcm"));
        write_ct(&path, uids::CT_IMAGE_STORAGE, "2.25.9", 64, 64);
        outbox.enqueue(&dest, &path).unwrap();
        sources.push(Part10File::read(&path).unwrap());
    }
    // The same instance again is de-duplicated by SOP Instance UID.
    outbox.enqueue(&dest, &sources[0].path).unwrap();
    assert_eq!(outbox.counters("pacs").unwrap().pending, 3);

    let report = outbox.deliver_due("pacs", SystemTime::now()).unwrap();
    assert_eq!(report.delivered, 3);
    let counters = outbox.counters("pacs").unwrap();
    assert_eq!(counters.pending, 0);
    assert_eq!(counters.delivered, 3);

    let received = received_files(&storescp.dir);
    assert_eq!(received.len(), 3);
    for path in received {
        let got = Part10File::read(&path).unwrap();
        let source = sources
            .iter()
            .find(|s| s.sop_instance_uid == got.sop_instance_uid)
            .unwrap();
        assert!(
            got.data_set() == source.data_set(),
            "data set bytes of {} changed",
            got.sop_instance_uid
        );
    }
}

#[test]
fn outbox_retries_until_destination_is_up() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let dest = destination("late", port, "DEST");
    let outbox_dir = work.path().join("outbox");
    let path = work.path().join("src/im.dcm");
    write_ct(&path, uids::CT_IMAGE_STORAGE, "2.25.10", 32, 32);

    let now = SystemTime::now();
    {
        let outbox = Outbox::open(&outbox_dir, vec![dest.clone()], policy()).unwrap();
        outbox.enqueue(&dest, &path).unwrap();
        let report = outbox.deliver_due("late", now).unwrap();
        assert_eq!(report.retried, 1);
        // Not due again before the 30 s backoff.
        let report = outbox
            .deliver_due("late", now + Duration::from_secs(10))
            .unwrap();
        assert_eq!(report, Default::default());
        assert_eq!(outbox.counters("late").unwrap().retries, 1);
    }

    // A restart resumes the queued item with its attempt count.
    let storescp = start_storescp(port, &work.path().join("received"));
    let outbox = Outbox::open(&outbox_dir, vec![dest.clone()], policy()).unwrap();
    assert_eq!(outbox.counters("late").unwrap().pending, 1);
    let report = outbox
        .deliver_due("late", now + Duration::from_secs(31))
        .unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(received_files(&storescp.dir).len(), 1);

    let report = outbox
        .deliver_due("late", now + Duration::from_secs(3600))
        .unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(received_files(&storescp.dir).len(), 1);
}

#[test]
fn outbox_gives_up_after_max_attempts() {
    let work = tempfile::tempdir().unwrap();
    let dest = destination("down", free_port(), "DEST");
    let outbox = Outbox::open(&work.path().join("outbox"), vec![dest.clone()], policy()).unwrap();
    let path = work.path().join("src/im.dcm");
    let uid = write_ct(&path, uids::CT_IMAGE_STORAGE, "2.25.13", 8, 8);
    outbox.enqueue(&dest, &path).unwrap();

    let start = SystemTime::now();
    let mut dead = 0;
    for minute in 0..5 {
        dead += outbox
            .deliver_due("down", start + Duration::from_secs(60 * minute))
            .unwrap()
            .dead_lettered;
    }
    assert_eq!(dead, 1);
    let counters = outbox.counters("down").unwrap();
    assert_eq!(counters.retries, 2);
    assert_eq!(counters.dead_letters, 1);
    let reason = fs::read_to_string(
        work.path()
            .join(format!("outbox/down/dead_letter/{uid}/reason.json")),
    )
    .unwrap();
    assert!(reason.contains("gave up after 3 attempts"), "{reason}");
}

#[test]
fn outbox_dead_letters_unknown_called_ae() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    let dest = destination("wrongae", scp.port(), "NOBODY");
    let outbox = Outbox::open(&work.path().join("outbox"), vec![dest.clone()], policy()).unwrap();
    let path = work.path().join("src/im.dcm");
    let uid = write_ct(&path, uids::CT_IMAGE_STORAGE, "2.25.11", 8, 8);
    outbox.enqueue(&dest, &path).unwrap();

    let report = outbox.deliver_due("wrongae", SystemTime::now()).unwrap();
    assert_eq!(report.dead_lettered, 1);
    let counters = outbox.counters("wrongae").unwrap();
    assert_eq!(counters.dead_letters, 1);
    assert_eq!(counters.errors, 1);
    assert_eq!(counters.pending, 0);

    let folder = work
        .path()
        .join(format!("outbox/wrongae/dead_letter/{uid}"));
    assert!(folder.join(format!("{uid}.dcm")).exists());
    let reason = fs::read_to_string(folder.join("reason.json")).unwrap();
    assert!(
        reason.contains("called AE title not recognized"),
        "{reason}"
    );
    assert_eq!(scp.sink.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// pynetdicom as the second peer

fn python() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if local.exists() {
        local
    } else {
        PathBuf::from("/work/main/.venv/bin/python")
    }
}

const PYNETDICOM_SCU: &str = r#"
import sys
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification, CTImageStorage

port, path = int(sys.argv[1]), sys.argv[2]
ae = AE(ae_title="PYNETSCU")
# A maximum PDU length of 0 means "no limit" (PS3.8 D.1.1); the SCP must accept it.
ae.maximum_pdu_size = 0
ae.add_requested_context(Verification)
ae.add_requested_context(CTImageStorage)
assoc = ae.associate("127.0.0.1", port, ae_title="PENUMBRA")
assert assoc.is_established, "association failed"
echo = assoc.send_c_echo()
store = assoc.send_c_store(dcmread(path))
assoc.release()
print(f"echo=0x{echo.Status:04X} store=0x{store.Status:04X}")
"#;

const PYNETDICOM_SCP: &str = r#"
import sys, os
from pynetdicom import AE, evt, AllStoragePresentationContexts

port, out = int(sys.argv[1]), sys.argv[2]

def on_store(event):
    path = os.path.join(out, event.request.AffectedSOPInstanceUID + ".dcm")
    with open(path, "wb") as f:
        f.write(event.encoded_dataset(include_meta=False))
    return 0x0000

ae = AE(ae_title="PYSCP")
ae.supported_contexts = AllStoragePresentationContexts
ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, on_store)])
"#;

#[test]
fn pynetdicom_echo_and_store_to_scp() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("scu.py");
    fs::write(&script, PYNETDICOM_SCU).unwrap();
    let path = work.path().join("ct.dcm");
    let uid = write_ct(&path, uids::CT_IMAGE_STORAGE, "2.25.14", 64, 64);

    let output = run(Command::new(python())
        .arg(&script)
        .arg(scp.port().to_string())
        .arg(&path));
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("echo=0x0000 store=0x0000"),
        "{}",
        text(&output)
    );
    assert!(scp.sink.path_of(&uid).exists());
}

#[test]
fn outbox_delivers_to_pynetdicom_scp() {
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("scp.py");
    fs::write(&script, PYNETDICOM_SCP).unwrap();
    let received = work.path().join("received");
    fs::create_dir_all(&received).unwrap();
    let port = free_port();
    let mut child = Command::new(python())
        .arg(&script)
        .arg(port.to_string())
        .arg(&received)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);

    let dest = destination("pyscp", port, "PYSCP");
    let outbox = Outbox::open(&work.path().join("outbox"), vec![dest.clone()], policy()).unwrap();
    let path = work.path().join("src/ct.dcm");
    let uid = write_ct(&path, uids::CT_IMAGE_STORAGE, "2.25.15", 32, 32);
    outbox.enqueue(&dest, &path).unwrap();
    let report = outbox.deliver_due("pyscp", SystemTime::now()).unwrap();
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(report.delivered, 1);
    let got = fs::read(received.join(format!("{uid}.dcm"))).unwrap();
    assert!(
        got == Part10File::read(&path).unwrap().data_set(),
        "data set bytes changed"
    );
}

// ---------------------------------------------------------------------------------------------
// Operator subcommands

#[test]
fn echo_subcommand_exit_codes() {
    let scp = start_scp(|_| {});
    let binary = env!("CARGO_BIN_EXE_penumbra");

    let output = run(Command::new(binary).args([
        "echo",
        "--ae-title",
        "OPERATOR",
        "--called-ae",
        SCP_AE,
        &scp.addr(),
    ]));
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("status 0x0000"), "{}", text(&output));

    let output = run(Command::new(binary).args([
        "echo",
        "--ae-title",
        "OPERATOR",
        "--called-ae",
        "WRONG",
        &scp.addr(),
    ]));
    assert!(!output.status.success());
    assert!(
        text(&output).contains("called AE title not recognized"),
        "{}",
        text(&output)
    );
}

#[test]
fn send_subcommand_prints_json_summary() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    let good = write_ct(
        &work.path().join("in/a/good.dcm"),
        uids::CT_IMAGE_STORAGE,
        "2.25.16",
        16,
        16,
    );
    write_ct(
        &work.path().join("in/b/us.dcm"),
        US_IMAGE_STORAGE,
        "2.25.16",
        16,
        16,
    );
    fs::write(work.path().join("in/notes.txt"), "not dicom").unwrap();

    let output = run(Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["send", "--called-ae", SCP_AE, &scp.addr()])
        .arg(work.path().join("in")));
    assert!(
        !output.status.success(),
        "one file fails, so the exit code is non-zero"
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", text(&output)));
    assert_eq!(summary["sent"], 1);
    assert_eq!(summary["failed"], 2);

    let files = summary["files"].as_array().unwrap();
    let by_name = |name: &str| {
        files
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(name))
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("good.dcm")["status"], "0x0000");
    assert_eq!(by_name("good.dcm")["sop_instance_uid"], good.as_str());
    assert_eq!(by_name("us.dcm")["status"], "0x0122");
    assert_eq!(by_name("notes.txt")["ok"], false);
    assert!(scp.sink.path_of(&good).exists());
}

#[test]
fn sender_thread_delivers_queued_items() {
    let scp = start_scp(|_| {});
    let work = tempfile::tempdir().unwrap();
    let dest = destination("ours", scp.port(), SCP_AE);
    let outbox =
        Arc::new(Outbox::open(&work.path().join("outbox"), vec![dest.clone()], policy()).unwrap());
    let shutdown = Arc::new(AtomicBool::new(false));
    let sender = outbox.spawn_sender(shutdown.clone()).unwrap();

    let path = work.path().join("src/ct.dcm");
    let uid = write_ct(&path, uids::CT_IMAGE_STORAGE, "2.25.19", 32, 32);
    outbox.enqueue(&dest, &path).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox.counters("ours").unwrap().delivered == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    shutdown.store(true, Ordering::SeqCst);
    sender.join().unwrap();

    assert_eq!(outbox.counters("ours").unwrap().delivered, 1);
    assert_eq!(outbox.counters("ours").unwrap().pending, 0);
    assert!(scp.sink.path_of(&uid).exists());
    assert!(!work.path().join(format!("outbox/ours/{uid}.dcm")).exists());
}

/// Returns the shared DICOM cases folder: `shared/cases/dicom` in the nearest folder above this
/// package that has one (the repository's sibling `shared/`).
fn shared_cases() -> std::path::PathBuf {
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("shared/cases/dicom");
        if candidate.is_dir() {
            return candidate;
        }
        assert!(dir.pop(), "no shared/cases/dicom beside the repository");
    }
}
