//! `penumbra inspect` on the DICOM files that ship with pydicom and pynetdicom, which the test
//! command installs into `.venv`. Many tools wrote them. They cover big-endian and implicit
//! encodings, missing File Meta, deflate, RLE, JPEG and JPEG 2000, truncated pixel data and
//! damaged sequences.
//!
//! Every file must get a report without a panic: a decoded series, or a rejection with its reason.
//! Where both decode a file, the value range must equal pydicom's after its Modality LUT
//! (rescale slope and intercept), an independent reading of the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fewer files than this means the venv's packages were not found where expected.
const MIN_FILES: usize = 60;
/// Fewer compared files than this would let the value check pass without checking much.
const MIN_COMPARED: usize = 10;

/// Returns the Python of the repository's `.venv`, which `scripts/test` creates.
fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// Lists the packages' DICOM files, and for each the minimum and maximum of its pixels after the
/// Modality LUT as pydicom computes them, or the reason pydicom could not.
const PYDICOM_RANGES: &str = r#"
import glob, json, os, warnings
warnings.filterwarnings("ignore")
import pydicom, pynetdicom
from pydicom.pixels import apply_modality_lut

folders = [
    os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"),
    os.path.join(os.path.dirname(pynetdicom.__file__), "tests", "dicom_files"),
]
out = []
for folder in folders:
    for path in sorted(glob.glob(os.path.join(folder, "*.dcm"))):
        entry = {"path": path}
        try:
            ds = pydicom.dcmread(path)
            values = apply_modality_lut(ds.pixel_array, ds)
            entry["min"] = float(values.min())
            entry["max"] = float(values.max())
        except Exception as error:
            entry["error"] = str(error)[:200]
        out.append(entry)
print(json.dumps(out))
"#;

#[derive(Debug)]
struct Reference {
    path: PathBuf,
    range: Option<(f64, f64)>,
}

fn pydicom_references() -> Vec<Reference> {
    let output = Command::new(python())
        .args(["-c", PYDICOM_RANGES])
        .output()
        .expect("the Python of .venv runs; run scripts/test to create it");
    assert!(output.status.success(), "pydicom script failed: {}", String::from_utf8_lossy(&output.stderr));
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("the script prints JSON");

    entries
        .iter()
        .map(|entry| Reference {
            path: PathBuf::from(entry["path"].as_str().expect("every entry has a path")),
            range: entry["min"].as_f64().zip(entry["max"].as_f64()),
        })
        .collect()
}

/// Runs `penumbra inspect` on one file and returns its JSON report.
fn inspect(path: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .arg("inspect")
        .arg(path)
        .output()
        .expect("penumbra runs");
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!stderr.contains("panicked"), "{}: {stderr}", path.display());
    assert!(output.status.success(), "{}: exit {:?}: {stderr}", path.display(), output.status);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{}: not JSON ({e})", path.display()))
}

fn error_text(rejection: &serde_json::Value) -> String {
    match &rejection["error"] {
        serde_json::Value::String(text) => text.clone(),
        other => other["message"].as_str().unwrap_or_default().to_string(),
    }
}

#[test]
fn package_files_match_pydicom_or_are_rejected() {
    let references = pydicom_references();
    assert!(references.len() >= MIN_FILES, "only {} files found in the venv's packages", references.len());

    let mut compared = 0;
    let mut outcomes: BTreeMap<String, String> = BTreeMap::new();
    for reference in &references {
        let name = reference.path.file_name().unwrap().to_string_lossy().into_owned();
        let report = inspect(&reference.path);
        let series = report["series"].as_array().cloned().unwrap_or_default();
        let rejections: Vec<serde_json::Value> = ["rejected_files", "rejected_series"]
            .iter()
            .flat_map(|key| report[*key].as_array().cloned().unwrap_or_default())
            .collect();

        assert!(!series.is_empty() || !rejections.is_empty(), "{name}: neither a series nor a rejection");
        for rejection in &rejections {
            assert!(!error_text(rejection).trim().is_empty(), "{name}: rejection without a reason: {rejection}");
        }
        let Some(decoded) = series.first() else {
            outcomes.insert(name, "rejected".to_string());
            continue;
        };
        let ours = (decoded["value_min"].as_f64().unwrap(), decoded["value_max"].as_f64().unwrap());
        if let Some(theirs) = reference.range {
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * b.abs().max(1.0);
            assert!(close(ours.0, theirs.0), "{name}: minimum {}, pydicom {}", ours.0, theirs.0);
            assert!(close(ours.1, theirs.1), "{name}: maximum {}, pydicom {}", ours.1, theirs.1);
            compared += 1;
        }
        outcomes.insert(name, format!("{ours:?}"));
    }

    assert!(compared >= MIN_COMPARED, "only {compared} files compared with pydicom: {outcomes:?}");
}

#[test]
fn truncated_pixel_data_is_rejected_as_truncated() {
    let references = pydicom_references();
    let truncated = references
        .iter()
        .find(|r| r.path.file_name().is_some_and(|name| name == "MR_truncated.dcm"))
        .expect("pydicom ships MR_truncated.dcm");

    let report = inspect(&truncated.path);

    assert!(report["series"].as_array().is_none_or(|series| series.is_empty()), "{report}");
    let reason = error_text(&report["rejected_files"][0]);
    assert!(reason.contains("truncated"), "{reason}");
}
