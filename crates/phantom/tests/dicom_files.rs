//! Written files: byte determinism, `dciodvfy` conformance, pydicom read-back of HU and maps, and
//! the `.npy` truth. Needs `dciodvfy` on PATH and a Python with pydicom and numpy
//! (`scripts/install-test-deps` installs both).

use std::path::{Path, PathBuf};
use std::process::Command;

use penumbra_phantom::{generate, generate_maps_only, write_maps, write_study, LesionSize, Matrix, Noise, PhantomParams, Side, VendorStyle};

fn params(seed: u64) -> PhantomParams {
    PhantomParams {
        seed,
        matrix: Matrix::M64,
        slices: 4,
        frames: 8,
        noise: Noise::MilliAmpSeconds(150.0),
        lesion_side: Side::Right,
        lesion_size: LesionSize::Medium,
        ..PhantomParams::default()
    }
}

/// Returns the Python of the repository's `.venv`, else the shared one.
fn python() -> PathBuf {
    let repo_venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if repo_venv.exists() {
        return repo_venv;
    }
    PathBuf::from("/work/main/.venv/bin/python")
}

fn run_python(script: &str, args: &[&str]) -> String {
    let output = Command::new(python()).arg("-c").arg(script).args(args).output().expect("python with pydicom must be installed");
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(dir);
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable output directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn same_seed_same_bytes() {
    let study = generate(&params(21)).expect("valid");
    let a = tempfile::tempdir().expect("temp dir");
    let b = tempfile::tempdir().expect("temp dir");
    write_study(&study, a.path(), VendorStyle::GeLike).expect("write a");
    let again = generate(&params(21)).expect("valid");
    write_study(&again, b.path(), VendorStyle::GeLike).expect("write b");

    let files_a = sorted_files(a.path());
    let files_b = sorted_files(b.path());
    assert_eq!(files_a.len(), 4 * 8 + 13);
    for (fa, fb) in files_a.iter().zip(&files_b) {
        assert_eq!(fa.strip_prefix(a.path()).ok(), fb.strip_prefix(b.path()).ok());
        let bytes_a = std::fs::read(fa).expect("read a");
        let bytes_b = std::fs::read(fb).expect("read b");
        assert!(bytes_a == bytes_b, "{} differs", fa.display());
    }

    let c = tempfile::tempdir().expect("temp dir");
    write_study(&generate(&params(22)).expect("valid"), c.path(), VendorStyle::GeLike).expect("write c");
    let first_a = std::fs::read(&files_a[0]).expect("read");
    let first_c = std::fs::read(sorted_files(c.path())[0].clone()).expect("read");
    assert_ne!(first_a, first_c);
}

/// Returns the lines of `dciodvfy FILE` that start with "Error".
fn dciodvfy_errors(file: &Path) -> Vec<String> {
    let output = Command::new("dciodvfy").arg(file).output().expect("dciodvfy must be installed");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("CTImage") || text.contains("CT Image"), "dciodvfy did not recognise a CT image:\n{text}");
    text.lines().filter(|line| line.starts_with("Error")).map(str::to_string).collect()
}

#[test]
fn dciodvfy_reports_no_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let study = generate(&params(23)).expect("valid");
    for style in [VendorStyle::GeLike, VendorStyle::SiemensLike, VendorStyle::PhilipsLike] {
        let out = dir.path().join(format!("{style:?}"));
        let written = write_study(&study, &out, style).expect("write");
        let file = written.dicom_dir.join("IM_F003_S002.dcm");
        let errors = dciodvfy_errors(&file);
        assert!(errors.is_empty(), "{style:?}: {errors:#?}");
    }

    let maps = generate_maps_only(&params(23)).expect("valid");
    let written = write_maps(&maps, &dir.path().join("maps")).expect("write maps");
    let errors = dciodvfy_errors(&written.dicom_dir.join("CBF_S001.dcm"));
    assert!(errors.is_empty(), "maps: {errors:#?}");
}

const READ_BACK: &str = r#"
import sys, pydicom
ds = pydicom.dcmread(sys.argv[1])
hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
print(ds.Rows, ds.Columns, ds.get("TemporalPositionIdentifier", "none"), ds.AcquisitionTime, ds.InstanceNumber)
for y, x in [(32, 32), (10, 50), (0, 0), (40, 20)]:
    print(hu[y, x])
"#;

#[test]
fn pydicom_reads_intended_hu() {
    let dir = tempfile::tempdir().expect("temp dir");
    let study = generate(&params(24)).expect("valid");
    let written = write_study(&study, dir.path(), VendorStyle::GeLike).expect("write");

    let (frame, slice) = (5, 2);
    let file = written.dicom_dir.join(format!("IM_F{frame:03}_S{slice:03}.dcm"));
    let output = run_python(READ_BACK, &[file.to_str().expect("utf-8 path")]);
    let mut lines = output.lines();

    let header: Vec<&str> = lines.next().expect("header line").split_whitespace().collect();
    assert_eq!(header[..3], ["64", "64", "6"]);
    // Frame 5 of 1 s frames starts at 08:00:05.
    assert_eq!(header[3], "080005.000000");
    assert_eq!(header[4], (frame * 4 + slice + 1).to_string());

    for ((y, x), line) in [(32, 32), (10, 50), (0, 0), (40, 20)].into_iter().zip(lines) {
        let read: f64 = line.trim().parse().expect("a number");
        let expected = study.volume.voxels[[frame, slice, y, x]] as f64;
        assert_eq!(read, expected, "voxel ({y}, {x})");
    }
}

const READ_MAP: &str = r#"
import sys, pydicom, numpy
ds = pydicom.dcmread(sys.argv[1])
values = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
truth = numpy.load(sys.argv[2])[int(sys.argv[3])]
print(ds.SeriesDescription, "\\".join(ds.ImageType), ds.RescaleType)
print(float(numpy.abs(values - truth).max()))
labels = numpy.load(sys.argv[4])
print(labels.dtype, labels.shape, int((labels == 2).sum()), int((labels == 1).sum()))
"#;

#[test]
fn maps_round_trip_within_rescale_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let maps = generate_maps_only(&params(25)).expect("valid");
    let written = write_maps(&maps, dir.path()).expect("write maps");
    assert_eq!(written.instances, 4 * 4);
    assert_eq!(written.series_instance_uids.len(), 4);

    let truth_dir = &written.truth_dir;
    let labels = truth_dir.join("labels.npy");
    for (series, npy, step) in [("CBF", "cbf.npy", 0.1), ("TMAX", "tmax.npy", 0.01)] {
        let file = written.dicom_dir.join(format!("{series}_S002.dcm"));
        let truth_file = truth_dir.join(npy);
        let args = [file.to_str().unwrap(), truth_file.to_str().unwrap(), "2", labels.to_str().unwrap()];
        let output = run_python(READ_MAP, &args);
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines[0], format!("{series} DERIVED\\SECONDARY\\AXIAL US"));

        let max_error: f64 = lines[1].parse().expect("a number");
        // Float32 truth against the rounded value: half a step plus float error.
        assert!(max_error <= step / 2.0 + 1e-4, "{series}: {max_error}");

        let label_line: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(label_line[0], "uint8");
        assert_eq!(label_line[1..4].join(" "), "(4, 64, 64)");
        let core: usize = label_line[4].parse().unwrap();
        let penumbra: usize = label_line[5].parse().unwrap();
        assert_eq!(core, penumbra_imaging::labels::count(&maps.truth.labels, penumbra_imaging::Label::Core));
        assert_eq!(penumbra, penumbra_imaging::labels::count(&maps.truth.labels, penumbra_imaging::Label::Penumbra));
    }
}

#[test]
fn truth_json_has_volumes_and_seed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let study = generate(&PhantomParams { vendor: VendorStyle::SiemensLike, ..params(26) }).expect("valid");
    let written = write_study(&study, dir.path(), VendorStyle::SiemensLike).expect("write");

    let text = std::fs::read_to_string(written.truth_dir.join("truth.json")).expect("truth.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(json["seed"], 26);
    assert_eq!(json["volumes_ml"]["core_ml"].as_f64(), Some(study.truth.volumes.core_ml));
    assert_eq!(json["shape_zyx"], serde_json::json!([4, 64, 64]));
    // Siemens-like: slice z of 4 is acquired z / 4 s after its frame starts.
    assert_eq!(json["acquisition"]["slice_offsets_s"], serde_json::json!([0.0, 0.25, 0.5, 0.75]));

    let aif: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(written.truth_dir.join("aif.json")).expect("aif.json")).expect("valid JSON");
    assert_eq!(aif["aif_hu"].as_array().map(Vec::len), Some(8));
}
