//! `penumbra qa`: the QA web server on its own, and the export of reviewed labels.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::qa::http::{self, QaState};
use crate::qa::store::SqliteQaStore;
use crate::qa::{export, read_token};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: QaCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum QaCommand {
    /// Serve the QA page and API for an existing data directory, without the daemon.
    ServeStandalone {
        /// Data directory holding qa.sqlite and qa/.
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// File whose first line is the access token.
        #[arg(long)]
        token_file: PathBuf,
        /// UI languages offered, comma-separated. The first is the default.
        #[arg(long, value_delimiter = ',', default_value = "en,cs")]
        languages: Vec<String>,
    },
    /// Write reviewed cases (accepted, accepted_threshold, corrected) as training data.
    ExportLabels {
        /// Data directory holding qa.sqlite and qa/.
        #[arg(long)]
        data_dir: PathBuf,
        /// Output folder, which gets one subfolder per case.
        out: PathBuf,
    },
}

pub fn run(args: Args) -> ExitCode {
    match args.command {
        QaCommand::ServeStandalone { data_dir, listen, token_file, languages } => {
            serve_standalone(data_dir, listen, token_file, languages)
        }
        QaCommand::ExportLabels { data_dir, out } => export_labels(data_dir, out),
    }
}

fn serve_standalone(data_dir: PathBuf, listen: SocketAddr, token_file: PathBuf, languages: Vec<String>) -> ExitCode {
    let token = match read_token(&token_file) {
        Ok(token) => token,
        Err(error) => {
            eprintln!("penumbra qa: {error}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let store = match SqliteQaStore::open(&data_dir) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("penumbra qa: cannot open the qa store in {}: {error}", data_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let state = QaState::new(Arc::new(store), token, &languages);

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("penumbra qa: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        println!("penumbra qa: listening on http://{address}/");
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        http::serve(listener, state, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("penumbra qa: server on {listen} failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn export_labels(data_dir: PathBuf, out: PathBuf) -> ExitCode {
    let store = match SqliteQaStore::open(&data_dir) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("penumbra qa: cannot open the qa store in {}: {error}", data_dir.display());
            return ExitCode::FAILURE;
        }
    };
    match export::export_labels(&store, &out) {
        Ok(summary) => {
            for skipped in &summary.skipped {
                eprintln!("penumbra qa: case {} (study {}) skipped: {}", skipped.case_id, skipped.study_uid, skipped.reason);
            }
            println!(
                "penumbra qa: exported {} reviewed cases to {} ({} skipped as not usable for training)",
                summary.exported,
                out.display(),
                summary.skipped.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("penumbra qa: export to {} failed: {error}", out.display());
            ExitCode::FAILURE
        }
    }
}
