//! The files in `ops/` are valid for the tools that load them, and the dashboard and alert rules
//! use only metric names the daemon exports.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_penumbra");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join("ops/prometheus/alerts.yml"))
        .output()
        .expect("promtool is installed (Debian package prometheus)");
    assert!(output.status.success(), "{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
}

#[test]
fn systemd_unit_passes_verify() {
    // systemd-analyze checks that ExecStart exists, so the unit is verified against the test binary.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("ops/systemd/penumbra.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/penumbra serve"), "the unit's ExecStart changed");
    let unit = unit.replace("/usr/local/bin/penumbra", BIN);
    let path = dir.path().join("penumbra.service");
    std::fs::write(&path, unit).unwrap();

    let output = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze is installed");
    let messages = String::from_utf8_lossy(&output.stderr);
    let own: Vec<&str> = messages.lines().filter(|l| l.contains("penumbra.service")).collect();
    assert!(own.is_empty(), "systemd-analyze verify reported: {own:?}");
}

/// Returns the `penumbra_*` metric names an expression uses, with histogram suffixes removed.
fn metric_names(expression: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expression.as_bytes();
    let mut start = 0;
    while let Some(found) = expression[start..].find("penumbra_") {
        let begin = start + found;
        let mut end = begin;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expression[begin..end];
        let base = ["_bucket", "_sum", "_count"].iter().fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
        names.insert(base.to_string());
        start = end;
    }
    names
}

fn dashboard_and_alert_names() -> BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo().join("ops/grafana/penumbra-dashboard.json")).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            names.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    let rules = std::fs::read_to_string(repo().join("ops/prometheus/alerts.yml")).unwrap();
    for line in rules.lines().filter(|l| l.trim_start().starts_with("expr:")) {
        names.extend(metric_names(line));
    }
    names
}

fn write_config(dir: &Path, metrics_port: u16) -> PathBuf {
    let config = format!(
        "data_dir: {data}\ningest:\n  scp: {{ listen: \"127.0.0.1:{scp}\" }}\n  watch: {{ folders: [{incoming}] }}\n\
         model: {{ path: {model} }}\n\
         export:\n  destinations:\n    - {{ ae_title: PACS, address: \"127.0.0.1:{pacs}\" }}\n\
         qa: {{ listen: \"127.0.0.1:{qa}\" }}\nmetrics: {{ listen: \"127.0.0.1:{metrics_port}\" }}\n",
        data = dir.join("var").display(),
        incoming = dir.join("incoming").display(),
        model = repo().join("models/ctp-resunet-v1").display(),
        scp = free_port(),
        pacs = free_port(),
        qa = free_port(),
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn dashboard_uses_exported_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let _daemon = Running(
        Command::new(BIN).args(["serve", "--config"]).arg(&config).stderr(Stdio::null()).spawn().unwrap(),
    );

    let url = format!("http://127.0.0.1:{port}/metrics");
    let started = Instant::now();
    let text = loop {
        if let Ok(response) = reqwest::blocking::get(&url) {
            if let Ok(text) = response.text() {
                if text.contains("penumbra_build_info") {
                    break text;
                }
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no /metrics answer");
        std::thread::sleep(Duration::from_millis(200));
    };

    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let used = dashboard_and_alert_names();
    assert!(used.len() >= 10, "too few names found in the dashboard: {used:?}");
    let missing: Vec<&String> = used.iter().filter(|name| !exported.contains(*name)).collect();
    assert!(missing.is_empty(), "dashboard or alerts use metrics the daemon does not export: {missing:?}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("2.25."), "a UID value in a metric: {line}");
        assert!(!line.contains("_uid"), "a UID label in a metric: {line}");
    }
}

#[test]
fn metric_names_strip_histogram_suffixes() {
    let names = metric_names("histogram_quantile(0.9, rate(penumbra_stage_duration_seconds_bucket[5m])) / penumbra_ready");
    assert_eq!(names, BTreeSet::from(["penumbra_stage_duration_seconds".to_string(), "penumbra_ready".to_string()]));
}
