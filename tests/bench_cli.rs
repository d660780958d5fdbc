//! `penumbra bench infer` against the real binary: its JSON line and its `.npy` dumps.
//! Timings are not checked; the benchmark records live in docs/benchmarks.md.

use std::path::Path;
use std::process::Command;

fn bench_infer(model: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["bench", "infer", "--model"])
        .arg(model)
        .args(["--reps", "2", "--warmup", "1"])
        .args(extra)
        .output()
        .unwrap()
}

/// Reads the shape and the `f32` values of a version 1.0 `.npy` file.
fn read_npy(path: &Path) -> (String, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8(bytes[10..10 + header_len].to_vec()).unwrap();
    assert_eq!((10 + header_len) % 64, 0, "{header}");
    assert!(header.contains("'descr': '<f4'"), "{header}");
    let values = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (header, values)
}

fn parse_report(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn bench_infer_prints_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("random");
    let fast_io = dir.path().join("fast");
    let candle_io = dir.path().join("candle");

    let random = [
        "--random-weights", "--width", "2", "--depth", "2", "--groups", "2", "--batch", "2",
    ];
    let mut args = random.to_vec();
    args.extend(["--dump-io", fast_io.to_str().unwrap()]);
    let report = parse_report(&bench_infer(&model, &args));
    assert_eq!(report["batch"], 2);
    assert_eq!(report["base_width"], 2);
    assert_eq!(report["depth"], 2);
    assert_eq!(report["kernels"], "fast");
    assert_eq!(report["threads"], 2);
    assert_eq!(report["reps"], 2);
    let ms = report["ms_per_slice"].as_f64().unwrap();
    assert!(ms.is_finite(), "{report}");
    assert!(ms > 0.0, "{report}");

    let candle = [
        "--batch", "2", "--kernels", "candle", "--dump-io", candle_io.to_str().unwrap(),
    ];
    let report = parse_report(&bench_infer(&model, &candle));
    assert_eq!(report["kernels"], "candle");

    let (input_header, input) = read_npy(&fast_io.join("input.npy"));
    assert!(input_header.contains("'shape': (2, 4, 256, 256,)"), "{input_header}");
    assert_eq!(input.len(), 2 * 4 * 256 * 256);
    let (output_header, fast) = read_npy(&fast_io.join("output.npy"));
    assert!(output_header.contains("'shape': (2, 3, 256, 256,)"), "{output_header}");
    let (_, candle) = read_npy(&candle_io.join("output.npy"));
    assert_eq!(fast.len(), candle.len());
    let max_difference = fast.iter().zip(&candle).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_difference < 1e-3, "fast and candle logits differ by {max_difference}");
}

#[test]
fn bench_infer_keeps_existing_model() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ctp-resunet-v1");
    let output = bench_infer(&shipped, &["--random-weights", "--width", "2"]);

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[test]
fn bench_train_step_prints_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("random");
    let random = ["--random-weights", "--width", "2", "--depth", "2", "--groups", "2"];
    parse_report(&bench_infer(&model, &random));

    for kernels in ["fast", "candle"] {
        let output = Command::new(env!("CARGO_BIN_EXE_penumbra"))
            .args(["bench", "train-step", "--model"])
            .arg(&model)
            .args(["--batch", "2", "--patch", "16", "--reps", "2", "--kernels", kernels])
            .output()
            .unwrap();
        let report = parse_report(&output);
        assert_eq!(report["kernels"], kernels);
        assert_eq!(report["batch"], 2);
        assert_eq!(report["patch"], 16);
        let ms = report["ms_per_step"].as_f64().unwrap();
        assert!(ms.is_finite(), "{report}");
    assert!(ms > 0.0, "{report}");
    }
}

#[test]
fn bench_train_step_rejects_bad_patch() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ctp-resunet-v1");
    let output = Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["bench", "train-step", "--model"])
        .arg(&shipped)
        .args(["--patch", "100"])
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must be a positive multiple of 16"), "{stderr}");
}
