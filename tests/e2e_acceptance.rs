//! End-to-end acceptance, with the daemon started as the README describes. It receives a phantom
//! CTP study from DCMTK `storescu` and forwards SEG, SR and summary image to a DCMTK `storescp`,
//! and the metrics move. An uncertain study (truncated bolus at very low dose) reaches the QA
//! queue, and accepting it there forwards the reviewed objects.
//!
//! Needs DCMTK on PATH and the shipped model in `models/ctp-resunet-v1`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_penumbra");
const SEG_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
const SC_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.7";
const TOKEN: &str = "acceptance-token-0123456789";

/// Kills a child process when dropped, so a failed assertion leaves no daemon behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_config(dir: &Path, ports: &Ports, review_below: f64) -> PathBuf {
    let config = format!(
        r#"data_dir: {data}
ingest:
  scp: {{ ae_title: PENUMBRA, listen: "127.0.0.1:{scp}" }}
  watch: {{ folders: [{incoming}] }}
  study_quiet_s: 2
model: {{ path: {model} }}
confidence: {{ review_below: {review_below} }}
export:
  destinations:
    - {{ ae_title: STORESCP, address: "127.0.0.1:{dest}" }}
  outbox: {{ initial_backoff_s: 1 }}
qa: {{ listen: "127.0.0.1:{qa}", token_file: {token} }}
metrics: {{ listen: "127.0.0.1:{metrics}" }}
"#,
        data = dir.join("var").display(),
        incoming = dir.join("incoming").display(),
        model = repo().join("models/ctp-resunet-v1").display(),
        token = dir.join("qa.token").display(),
        scp = ports.scp,
        dest = ports.destination,
        qa = ports.qa,
        metrics = ports.metrics,
    );
    std::fs::write(dir.join("qa.token"), TOKEN).unwrap();
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

struct Ports {
    scp: u16,
    destination: u16,
    qa: u16,
    metrics: u16,
}

fn phantom(out: &Path, seed: u64, extra: &[&str]) {
    let status = Command::new(BIN)
        .args(["phantom", "--out"])
        .arg(out)
        .args(["--seed", &seed.to_string(), "--matrix", "128", "--slices", "8", "--frames", "40"])
        .args(extra)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "penumbra phantom failed");
}

fn storescu(port: u16, folder: &Path) {
    let output = Command::new("storescu")
        .env("TCP_NODELAY", "1")
        .args(["-aec", "PENUMBRA", "-aet", "SCANNER", "+sd", "+r", "127.0.0.1", &port.to_string()])
        .arg(folder)
        .output()
        .expect("storescu is installed (DCMTK)");
    assert!(output.status.success(), "storescu failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Returns the SOP Class UIDs of the files `storescp` wrote.
fn received_classes(folder: &Path) -> Vec<String> {
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let output = Command::new("dcmdump").args(["+P", "0008,0016", "-q", "-Un"]).arg(entry.path()).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        if let Some(uid) = text.split('[').nth(1).and_then(|rest| rest.split(']').next()) {
            classes.push(uid.to_string());
        }
    }
    classes.sort();
    classes
}

fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn http_get(url: &str, token: Option<&str>) -> Option<String> {
    let client = reqwest::blocking::Client::new();
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().ok()?;
    response.status().is_success().then(|| response.text().ok()).flatten()
}

/// Returns the value of the metric line that starts with `series`, e.g.
/// `penumbra_instances_received_total{source="scp"}`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn study_round_trip_through_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports { scp: free_port(), destination: free_port(), qa: free_port(), metrics: free_port() };
    let received = dir.path().join("received");
    std::fs::create_dir_all(&received).unwrap();
    let _storescp = Running(
        Command::new("storescp")
            .args(["-aet", "STORESCP", "--output-directory"])
            .arg(&received)
            .arg(ports.destination.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("storescp is installed (DCMTK)"),
    );
    let config = write_config(dir.path(), &ports, 0.7);
    let _daemon = Running(
        Command::new(BIN).args(["serve", "--config"]).arg(&config).stderr(Stdio::inherit()).spawn().unwrap(),
    );
    let metrics_url = format!("http://127.0.0.1:{}/metrics", ports.metrics);
    wait_for("the daemon to be ready", Duration::from_secs(60), || {
        http_get(&format!("http://127.0.0.1:{}/readyz", ports.metrics), None)
    });

    let study = dir.path().join("study");
    phantom(&study, 11, &[]);
    storescu(ports.scp, &study.join("dicom"));
    let instances = std::fs::read_dir(study.join("dicom")).unwrap().count();

    let classes = wait_for("SEG, SR and summary at storescp", Duration::from_secs(240), || {
        let classes = received_classes(&received);
        (classes.len() >= 3).then_some(classes)
    });
    let mut expected = vec![SC_IMAGE.to_string(), SEG_STORAGE.to_string(), COMPREHENSIVE_SR.to_string()];
    expected.sort();
    assert_eq!(classes, expected);

    let text = http_get(&metrics_url, None).expect("metrics answer");
    assert_eq!(metric(&text, "penumbra_instances_received_total{source=\"scp\"}"), Some(instances as f64));
    assert!(metric(&text, "penumbra_studies_total{outcome=\"exported\"}").unwrap_or(0.0) >= 1.0, "{text}");
    assert!(metric(&text, "penumbra_stage_duration_seconds_count{stage=\"infer\"}").unwrap_or(0.0) >= 1.0);

    let exports = dir.path().join("var/exports");
    let report_path = std::fs::read_dir(&exports).unwrap().next().unwrap().unwrap().path().join("report.json");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(report_path).unwrap()).unwrap();
    for section in ["unet", "threshold"] {
        for key in ["core_volume_ml", "penumbra_volume_ml", "mismatch_volume_ml", "mismatch_ratio"] {
            assert!(report[section].get(key).is_some(), "report.{section}.{key} missing: {report}");
        }
    }

    // An uncertain study: truncated bolus at 20 mAs.
    let uncertain = dir.path().join("uncertain");
    phantom(&uncertain, 12, &["--truncated-bolus", "--noise-mas", "20"]);
    storescu(ports.scp, &uncertain.join("dicom"));
    let cases_url = format!("http://127.0.0.1:{}/api/cases", ports.qa);
    let cases = wait_for("the uncertain study in the QA queue", Duration::from_secs(240), || {
        let body = http_get(&cases_url, Some(TOKEN))?;
        let cases: serde_json::Value = serde_json::from_str(&body).ok()?;
        (cases.as_array().is_some_and(|a| !a.is_empty()) || cases["cases"].as_array().is_some_and(|a| !a.is_empty()))
            .then_some(cases)
    });
    assert!(cases.to_string().contains("pending"), "{cases}");

    // The radiologist accepts it: the study is re-exported as reviewed and forwarded again.
    let case = &cases["cases"][0];
    let id = case["id"].as_i64().expect("case id");
    let study_uid = case["study_uid"].as_str().expect("case study UID").to_string();
    let forwarded_before = received_classes(&received).len();
    let response = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{}/api/cases/{id}/decision", ports.qa))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "action": "accept", "reviewer": "acceptance test" }))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "decision answered {}", response.status());
    let report_path = exports.join(&study_uid).join("report.json");
    let report = wait_for("the reviewed report", Duration::from_secs(60), || {
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).ok()?).ok()?;
        (report["qa_status"] == "approved").then_some(report)
    });
    assert!(report["reviewed"]["core_volume_ml"].is_number(), "{report}");
    wait_for("the reviewed outputs at storescp", Duration::from_secs(60), || {
        (received_classes(&received).len() >= forwarded_before + 3).then_some(())
    });
}
