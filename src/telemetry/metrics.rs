//! Prometheus metrics, registered once per process.
//!
//! Names follow Prometheus conventions: the `penumbra_` prefix, base units (seconds, bytes) and
//! `_total` on counters. Labels come from a fixed, low-cardinality set (`source`, `outcome`,
//! `stage`, `error_type`, `state`, `destination`, `reason`): a UID, a path or a patient attribute
//! is never a label. `ops/grafana/penumbra-dashboard.json` and `ops/prometheus/alerts.yml` use
//! only the names registered here, and a test checks that.

use std::sync::OnceLock;

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Instances stored in the spool, by `source` (`scp` or `watch`).
    pub instances_received: IntCounterVec,
    /// Files moved to quarantine, by `reason` kind.
    pub quarantined_files: IntCounterVec,
    /// Studies that left the pipeline, by `outcome` (`exported`, `failed`, `not_assessable`).
    pub studies: IntCounterVec,
    /// Time spent in each stage per study.
    pub stage_duration: HistogramVec,
    /// Stage failures, by `stage` and `error_type`.
    pub stage_errors: IntCounterVec,
    /// Studies waiting in front of each stage.
    pub queue_depth: IntGaugeVec,
    /// Time from a study's last received instance to its export.
    pub end_to_end_latency: HistogramVec,
    /// U-Net inference time per study.
    pub inference_duration: HistogramVec,
    /// QA cases by `state`.
    pub qa_cases: IntGaugeVec,
    /// Age of the oldest pending QA case, 0 when none is pending.
    pub qa_oldest_pending_age: IntGauge,
    /// Outbox items not yet delivered, by `destination` AE title.
    pub outbox_pending: IntGaugeVec,
    /// Delivery attempts that failed and will be retried, by `destination`.
    pub outbox_retries: IntCounterVec,
    /// Items given up after the last attempt or a permanent rejection, by `destination`.
    pub outbox_dead_letters: IntCounterVec,
    /// Bytes held in the spool.
    pub spool_bytes: IntGauge,
    /// Free bytes on the file system that contains the data directory.
    pub disk_free_bytes: IntGauge,
    /// 1 when `/readyz` reports ready, else 0.
    pub ready: IntGauge,
    /// Constant 1 with the daemon and model versions as labels.
    pub build_info: GaugeVec,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Returns the process-wide metrics, registering them on first use.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::register)
}

impl Metrics {
    fn register() -> Metrics {
        let registry = Registry::new();
        let seconds = |lo: f64, n: usize| exponential_buckets(lo, 2.0, n).expect("valid buckets");

        let metrics = Metrics {
            instances_received: counter_vec(
                "penumbra_instances_received_total",
                "DICOM instances stored in the spool, by source.",
                &["source"],
            ),
            quarantined_files: counter_vec(
                "penumbra_quarantined_files_total",
                "Files moved to quarantine, by reason.",
                &["reason"],
            ),
            studies: counter_vec(
                "penumbra_studies_total",
                "Studies that left the pipeline, by outcome.",
                &["outcome"],
            ),
            stage_duration: histogram_vec(
                "penumbra_stage_duration_seconds",
                "Time spent in one stage for one study.",
                seconds(0.01, 14),
                &["stage"],
            ),
            stage_errors: counter_vec(
                "penumbra_stage_errors_total",
                "Studies a stage failed on, by stage and error type.",
                &["stage", "error_type"],
            ),
            queue_depth: IntGaugeVec::new(
                Opts::new("penumbra_queue_depth", "Studies waiting in front of a stage."),
                &["stage"],
            )
            .expect("valid metric"),
            end_to_end_latency: histogram_vec(
                "penumbra_end_to_end_latency_seconds",
                "Time from a study's last received instance to its export.",
                seconds(0.5, 12),
                &[],
            ),
            inference_duration: histogram_vec(
                "penumbra_inference_duration_seconds",
                "U-Net inference time for one study.",
                seconds(0.05, 12),
                &[],
            ),
            qa_cases: IntGaugeVec::new(
                Opts::new("penumbra_qa_cases", "QA review cases by state."),
                &["state"],
            )
            .expect("valid metric"),
            qa_oldest_pending_age: IntGauge::new(
                "penumbra_qa_oldest_pending_age_seconds",
                "Age of the oldest pending QA case, 0 when none is pending.",
            )
            .expect("valid metric"),
            outbox_pending: IntGaugeVec::new(
                Opts::new("penumbra_outbox_pending", "Outputs not yet delivered, by destination."),
                &["destination"],
            )
            .expect("valid metric"),
            outbox_retries: counter_vec(
                "penumbra_outbox_retries_total",
                "Failed delivery attempts that will be retried, by destination.",
                &["destination"],
            ),
            outbox_dead_letters: counter_vec(
                "penumbra_outbox_dead_letters_total",
                "Outputs given up after the last attempt or a permanent rejection.",
                &["destination"],
            ),
            spool_bytes: IntGauge::new("penumbra_spool_bytes", "Bytes held in the spool.")
                .expect("valid metric"),
            disk_free_bytes: IntGauge::new(
                "penumbra_disk_free_bytes",
                "Free bytes on the file system of the data directory.",
            )
            .expect("valid metric"),
            ready: IntGauge::new("penumbra_ready", "1 when the daemon is ready, else 0.")
                .expect("valid metric"),
            build_info: GaugeVec::new(
                Opts::new("penumbra_build_info", "Constant 1, labelled with versions."),
                &["version", "model_version"],
            )
            .expect("valid metric"),
            registry,
        };

        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.instances_received.clone()),
            Box::new(self.quarantined_files.clone()),
            Box::new(self.studies.clone()),
            Box::new(self.stage_duration.clone()),
            Box::new(self.stage_errors.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.end_to_end_latency.clone()),
            Box::new(self.inference_duration.clone()),
            Box::new(self.qa_cases.clone()),
            Box::new(self.qa_oldest_pending_age.clone()),
            Box::new(self.outbox_pending.clone()),
            Box::new(self.outbox_retries.clone()),
            Box::new(self.outbox_dead_letters.clone()),
            Box::new(self.spool_bytes.clone()),
            Box::new(self.disk_free_bytes.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.build_info.clone()),
        ];
        for collector in collectors {
            self.registry.register(collector).expect("metric names are unique");
        }
    }

    /// Creates every series of the fixed label sets at zero, so dashboards and `rate()` see them
    /// from the first scrape on. `destinations` are the configured AE titles.
    pub fn initialize_labels(&self, stages: &[&str], destinations: &[String]) {
        for source in ["scp", "watch"] {
            self.instances_received.with_label_values(&[source]);
        }
        for outcome in ["exported", "failed", "not_assessable"] {
            self.studies.with_label_values(&[outcome]);
        }
        for &stage in stages {
            self.stage_duration.with_label_values(&[stage]);
            self.queue_depth.with_label_values(&[stage]);
            for error_type in ["stage_rejected", "stage_failed", "stage_panicked"] {
                self.stage_errors.with_label_values(&[stage, error_type]);
            }
        }
        for reason in ["empty_file", "not_dicom", "truncated", "length_exceeds_file", "malformed"] {
            self.quarantined_files.with_label_values(&[reason]);
        }
        for state in ["pending", "in_review", "accepted", "corrected", "rejected", "accepted_threshold"] {
            self.qa_cases.with_label_values(&[state]);
        }
        for destination in destinations {
            self.outbox_pending.with_label_values(&[destination.as_str()]);
            self.outbox_retries.with_label_values(&[destination.as_str()]);
            self.outbox_dead_letters.with_label_values(&[destination.as_str()]);
        }
        self.end_to_end_latency.with_label_values::<&str>(&[]);
        self.inference_duration.with_label_values::<&str>(&[]);
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram_vec(name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric")
}
