//! `/metrics`, `/healthz` and `/readyz` on `metrics.listen`.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 only when every
//! readiness check (config loaded, model loaded, spool writable, SCP listening) has passed, and
//! 503 with the failing checks and their reasons otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::metrics::metrics;

/// The readiness checks `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Config,
    Model,
    Spool,
    Scp,
}

/// Readiness shared between the parts of the daemon that set it and the HTTP handler that reports it.
#[derive(Debug, Default)]
pub struct Readiness {
    checks: Mutex<BTreeMap<Check, Result<(), String>>>,
}

#[derive(Debug, Serialize)]
struct ReadinessReport {
    ready: bool,
    checks: BTreeMap<Check, CheckReport>,
}

#[derive(Debug, Serialize)]
struct CheckReport {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Readiness {
    /// Creates a readiness set where every listed check is pending (not ready).
    pub fn new(expected: &[Check]) -> Readiness {
        let checks = expected.iter().map(|&c| (c, Err("not checked yet".to_string()))).collect();
        Readiness { checks: Mutex::new(checks) }
    }

    /// Records that `check` passed.
    pub fn pass(&self, check: Check) {
        self.set(check, Ok(()));
    }

    /// Records that `check` failed, with the reason `/readyz` shows.
    pub fn fail(&self, check: Check, reason: impl Into<String>) {
        self.set(check, Err(reason.into()));
    }

    fn set(&self, check: Check, outcome: Result<(), String>) {
        let mut checks = self.checks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        checks.insert(check, outcome);
        let ready = checks.values().all(Result::is_ok);
        metrics().ready.set(i64::from(ready));
    }

    /// Returns whether every check passed.
    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    fn report(&self) -> ReadinessReport {
        let checks = self.checks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ready = checks.values().all(Result::is_ok);
        let checks = checks
            .iter()
            .map(|(&check, outcome)| {
                let report = CheckReport { ok: outcome.is_ok(), reason: outcome.clone().err() };
                (check, report)
            })
            .collect();
        ReadinessReport { ready, checks }
    }
}

/// Builds the router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(serve_readyz))
        .with_state(readiness)
}

/// Serves the router on `listen` until `shutdown` completes.
pub async fn serve(
    listen: SocketAddr,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "Metrics and health endpoints listening");
    axum::serve(listener, router(readiness)).with_graceful_shutdown(shutdown).await
}

async fn serve_metrics() -> Response {
    let body = metrics().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn serve_readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    let report = readiness.report();
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report)).into_response()
}
