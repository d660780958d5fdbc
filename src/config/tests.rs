//! Tests of config parsing and validation.

use std::path::Path;
use std::time::Duration;

use super::*;

fn validate_text(text: &str) -> Result<Settings, Vec<ConfigError>> {
    let raw = parse_raw(text).map_err(|err| vec![err])?;
    raw.validate_in(Path::new("/etc/penumbra"))
}

fn error_keys(text: &str) -> Vec<String> {
    match validate_text(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(errors) => errors.into_iter().map(|e| e.key).collect(),
    }
}

#[test]
fn empty_file_is_default_config() {
    let settings = validate_text("").unwrap();
    assert_eq!(settings.data_dir, Path::new("/etc/penumbra/var"));
    assert_eq!(settings.ingest.scp.ae_title, "PENUMBRA");
    assert_eq!(settings.ingest.scp.max_pdu_length, 116_794);
    assert_eq!(settings.ingest.scp.journal.segment_bytes, 64 * 1024 * 1024);
    assert_eq!(settings.ingest.scp.journal.segments, 4);
    assert_eq!(settings.ingest.watch.settle, Duration::from_millis(1500));
    assert_eq!(settings.ingest.watch.folders, vec![Path::new("/etc/penumbra/var/incoming")]);
    assert_eq!(settings.ingest.study_quiet, Duration::from_secs(20));
    assert_eq!(settings.perfusion.osvd_oi, 0.035);
    assert_eq!(settings.labelling.core_rcbf_below, 0.30);
    assert_eq!(settings.model.batch, 8);
    assert_eq!(settings.export.formats.len(), 4);
    assert_eq!(settings.shutdown.drain_deadline, Duration::from_secs(30));
}

#[test]
fn comment_only_file_is_default_config() {
    assert!(validate_text("# nothing set\n---\n").is_ok());
}

#[test]
fn settle_ms_error_names_key_value_and_minimum() {
    let errors = validate_text("ingest:\n  watch:\n    settle_ms: 0\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].to_string(), "ingest.watch.settle_ms must be at least 100, got 0");
}

#[test]
fn every_error_is_collected() {
    let text = "\
ingest:
  scp:
    ae_title: 'THIS_TITLE_IS_TOO_LONG'
    max_pdu_length: 1000
    listen: 'nowhere'
    journal_segment_mb: 0
    journal_segments: 1
  watch:
    settle_ms: 5
pipeline:
  stages:
    infer: { workers: 0, queue: 0 }
perfusion:
  osvd_oi: 1.5
labelling:
  core_rcbf_below: -0.1
confidence:
  review_below: 2
export:
  destinations:
    - { ae_title: 'PACS', address: 'pacs.example' }
  outbox: { initial_backoff_s: 10, max_backoff_s: 5 }
qa:
  languages: ['']
metrics:
  listen: '127.0.0.1'
";
    let keys = error_keys(text);
    for expected in [
        "ingest.scp.ae_title",
        "ingest.scp.max_pdu_length",
        "ingest.scp.listen",
        "ingest.scp.journal_segment_mb",
        "ingest.scp.journal_segments",
        "ingest.watch.settle_ms",
        "pipeline.stages.infer.workers",
        "pipeline.stages.infer.queue",
        "perfusion.osvd_oi",
        "labelling.core_rcbf_below",
        "confidence.review_below",
        "export.destinations[0].address",
        "export.outbox.max_backoff_s",
        "qa.languages[0]",
        "metrics.listen",
    ] {
        assert!(keys.contains(&expected.to_string()), "missing {expected} in {keys:?}");
    }
    assert_eq!(keys.len(), 15, "{keys:?}");
}

#[test]
fn each_message_names_its_key_and_value() {
    let errors = validate_text("perfusion:\n  k_h: 7\nmodel:\n  batch: 0\n").unwrap_err();
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(messages.contains(&"perfusion.k_h must be in (0, 1.5), got 7".to_string()), "{messages:?}");
    assert!(messages.contains(&"model.batch must be at least 1, got 0".to_string()), "{messages:?}");
}

#[test]
fn unknown_key_names_its_path() {
    let err = parse_raw("ingest:\n  watch:\n    setle_ms: 200\n").unwrap_err();
    assert_eq!(err.key, "ingest.watch.setle_ms");
    assert!(err.message.contains("setle_ms"), "{}", err.message);
}

#[test]
fn wrong_type_names_its_path() {
    let err = parse_raw("ingest:\n  scp:\n    max_associations: many\n").unwrap_err();
    assert_eq!(err.key, "ingest.scp.max_associations");
}

#[test]
fn unknown_enum_value_names_its_path() {
    let err = parse_raw("perfusion:\n  method: magic\n").unwrap_err();
    assert_eq!(err.key, "perfusion.method");
    assert!(err.message.contains("osvd"), "{}", err.message);
}

#[test]
fn ae_title_with_backslash_is_rejected() {
    let keys = error_keys("ingest:\n  scp:\n    ae_title: 'A\\\\B'\n");
    assert_eq!(keys, vec!["ingest.scp.ae_title"]);
}

#[test]
fn destination_parses_host_and_port() {
    let settings = validate_text(
        "export:\n  destinations:\n    - { ae_title: PACS, address: 'pacs.local:104' }\n",
    )
    .unwrap();
    let dest = &settings.export.destinations[0];
    assert_eq!((dest.ae_title.as_str(), dest.host.as_str(), dest.port), ("PACS", "pacs.local", 104));
}

#[test]
fn absolute_paths_stay_absolute() {
    let settings = validate_text("data_dir: /srv/penumbra\nmodel:\n  path: /opt/model\n").unwrap();
    assert_eq!(settings.data_dir, Path::new("/srv/penumbra"));
    assert_eq!(settings.model.path, Path::new("/opt/model"));
}

#[test]
fn shipped_pipeline_yaml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.yaml");
    let settings = load(&path).unwrap_or_else(|errors| panic!("{errors:?}"));
    assert!(settings.data_dir.ends_with("var"));
    assert_eq!(settings.config_path.as_deref(), Some(path.as_path()));
}
