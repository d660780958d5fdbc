//! Shared set-up for the QA tests: small synthetic cases and a QA server on a loopback port.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use ndarray::Array3;
use penumbra::confidence::{Confidence, LesionVolumes};
use penumbra::qa::files::CaseMaps;
use penumbra::qa::http::{self, DecisionHook, QaState};
use penumbra::qa::store::{CaseVolumes, NewCase, QaStore, SqliteQaStore};

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const DEPTH: usize = 3;
pub const HEIGHT: usize = 32;
pub const WIDTH: usize = 40;
/// Voxel spacing `(z, y, x)` of the synthetic cases in millimetres.
pub const SPACING_MM: [f64; 3] = [5.0, 0.9, 0.9];

/// Builds maps with a core disk (radius 4) inside a penumbra disk (radius 8) centred at
/// (16, 20) for the U-Net, and the same disks shifted 2 voxels right for the thresholds.
pub fn synthetic_maps() -> CaseMaps {
    let disk = |shift: f64| {
        Array3::from_shape_fn((DEPTH, HEIGHT, WIDTH), |(_, y, x)| {
            let distance = ((y as f64 - 16.0).powi(2) + (x as f64 - 20.0 - shift).powi(2)).sqrt();
            if distance <= 4.0 {
                2u8
            } else if distance <= 8.0 {
                1
            } else {
                0
            }
        })
    };
    let unet_labels = disk(0.0);
    let cbf = Array3::from_shape_fn((DEPTH, HEIGHT, WIDTH), |(z, _, x)| {
        (20.0 + x as f32 + 5.0 * z as f32) * if unet_labels[(z, 16, x)] > 0 { 0.3 } else { 1.0 }
    });
    let tmax = unet_labels.mapv(|label| match label {
        2 => 14.0,
        1 => 8.0,
        _ => 1.0,
    });
    // CBV and MTT follow from CBF and Tmax so that each channel differs and is easy to check.
    let cbv = cbf.mapv(|v| v * 0.05);
    let mtt = tmax.mapv(|v| v + 3.0);
    let rcbf = cbf.mapv(|v| v / 60.0);
    let tissue = cbf.mapv(|v| if v > 25.0 { 1.0 } else { 0.0 });
    CaseMaps { cbf, cbv, mtt, tmax, rcbf, tissue, unet_labels, threshold_labels: disk(2.0), spacing_mm: SPACING_MM }
}

pub fn confidence(score: f64) -> Confidence {
    Confidence {
        score,
        components: [("entropy".to_owned(), 0.8), ("input_quality".to_owned(), 0.9)].into_iter().collect(),
        assessable: true,
        reasons: vec!["the U-Net is uncertain in the lesion region".to_owned()],
    }
}

/// Returns a new case; `minutes` sets the arrival after a fixed epoch.
pub fn new_case(study_uid: &str, urgency: i32, minutes: i64) -> NewCase {
    NewCase {
        study_uid: study_uid.to_owned(),
        arrival: time::macros::datetime!(2026-12-04 03:00 UTC) + time::Duration::minutes(minutes),
        urgency,
        confidence: confidence(0.42),
        volumes: CaseVolumes {
            unet: LesionVolumes { core_ml: 12.5, hypoperfused_ml: 48.0 },
            threshold: LesionVolumes { core_ml: 11.0, hypoperfused_ml: 51.5 },
        },
        model_version: "unet-test-1".to_owned(),
        maps: synthetic_maps(),
    }
}

/// A QA server running on its own thread and runtime, bound to an ephemeral loopback port.
pub struct TestServer {
    pub address: SocketAddr,
    pub store: Arc<SqliteQaStore>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(data_dir: &Path, hook: Option<Arc<dyn DecisionHook>>) -> Self {
        let store = Arc::new(SqliteQaStore::open(data_dir).expect("store opens"));
        let mut state = QaState::new(store.clone() as Arc<dyn QaStore>, TOKEN.to_owned(), &["en".to_owned(), "cs".to_owned()]);
        if let Some(hook) = hook {
            state = state.with_decision_hook(hook);
        }

        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback port binds");
        std_listener.set_nonblocking(true).expect("listener is non-blocking");
        let address = std_listener.local_addr().expect("listener has an address");
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();

        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime starts");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener converts");
                let shutdown = async {
                    let _ = receiver.await;
                };
                http::serve(listener, state, shutdown).await.expect("server runs");
            });
        });

        Self { address, store, shutdown: Some(sender), thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
