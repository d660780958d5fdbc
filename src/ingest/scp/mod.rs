//! C-STORE SCP: receives instances over DICOM and acknowledges each one only after an
//! [`InstanceSink`] (the spool) has stored it durably.
//!
//! One thread accepts connections and one thread serves each association. At most
//! `max_associations` run at once; the next request gets a transient A-ASSOCIATE-RJ with the
//! reason "local limit exceeded". A data set is passed to the sink only once its last fragment
//! has arrived, so an A-ABORT or a dropped connection mid-transfer never leaves a file.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource, Pdu,
};

mod association;
pub use association::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
pub mod dimse;
pub mod pdu_stream;
mod placement;
pub mod sop;

/// Settings of the C-STORE SCP.
#[derive(Debug, Clone)]
pub struct ScpConfig {
    /// AE title of this node. An association calling another title is rejected.
    pub ae_title: String,
    /// Address to listen on; port 0 picks a free port (see [`ScpHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Calling AE titles allowed to associate; empty allows any.
    pub allowed_calling_ae: Vec<String>,
    /// Maximum associations served at once.
    pub max_associations: usize,
    /// Maximum PDU length this node receives, in bytes.
    pub max_pdu_length: u32,
    /// Time allowed for the A-ASSOCIATE-RQ to arrive after the connection opens (ARTIM timer).
    pub artim_timeout: Duration,
    /// Time an established association may stay silent before it is aborted.
    pub idle_timeout: Duration,
    /// Free space the sink must report before an instance is stored. Below it, C-STORE returns
    /// status 0xA700 (out of resources).
    pub min_free_disk_bytes: u64,
}

impl Default for ScpConfig {
    fn default() -> Self {
        ScpConfig {
            ae_title: "PENUMBRA".to_string(),
            listen: SocketAddr::from(([0, 0, 0, 0], 11112)),
            allowed_calling_ae: Vec::new(),
            max_associations: 16,
            max_pdu_length: 131_072,
            artim_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            min_free_disk_bytes: 1 << 30,
        }
    }
}

/// Identifiers of a received instance, taken from the data set (not only from the command).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceIds {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    pub transfer_syntax_uid: String,
    /// AE title of the peer that sent the instance.
    pub calling_ae_title: String,
    /// Number of Temporal Positions (0020,0105), when the data set has a positive one.
    pub number_of_temporal_positions: Option<u32>,
    /// Image Position (Patient) (0020,0032) in mm, when the data set has three finite values.
    pub image_position_patient: Option<[f64; 3]>,
}

/// Result of storing an instance in the sink. Every variant means the bytes are durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Written and flushed to disk.
    Stored,
    /// An identical instance with the same SOP Instance UID was already stored.
    Duplicate,
    /// Another instance with the same SOP Instance UID but different content was already
    /// stored; this one was kept apart for review.
    Conflict,
}

/// Failure of the sink to store an instance durably, which the SCP reports as status 0xA700
/// (out of resources).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("failed to write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Rejection of a data set that lacks what storing it requires: a Study or Series Instance
    /// UID, or a UID usable as a file name. The SCP returns status 0xC000 (cannot understand).
    #[error("instance rejected: {0}")]
    Invalid(String),
    #[error("instance not stored: {0}")]
    Other(String),
}

/// Work that a sink leaves for after the C-STORE response, run with the same bytes, possibly on
/// another thread.
pub type Completion<'a> = Box<dyn FnOnce(&[u8]) + Send + 'a>;

/// Durable destination of received instances (the spool at integration).
pub trait InstanceSink: Send + Sync {
    /// Stores `bytes`, a complete Part 10 file, and returns only once it is on disk (fsynced).
    fn store(&self, ids: &InstanceIds, bytes: &[u8]) -> Result<StoreOutcome, SinkError>;

    /// Stores the Part 10 file `buffer[..len]` and returns once it is durable, possibly before
    /// the instance is in its final place. The bytes after `len` are room that the sink may
    /// write along with the file to save a copy (their values do not matter). The SCP sends the
    /// response, then runs the returned completion with the file's bytes on the association's
    /// placement thread, and reads the next instance meanwhile. The default stores
    /// completely and returns no completion.
    ///
    /// # Errors
    ///
    /// As for [`InstanceSink::store`].
    fn store_durable(&self, ids: &InstanceIds, buffer: &[u8], len: usize) -> Result<(StoreOutcome, Option<Completion<'_>>), SinkError> {
        self.store(ids, &buffer[..len]).map(|outcome| (outcome, None))
    }

    /// Returns the free space, in bytes, where instances are stored, or `None` when unknown
    /// (the watermark check is then skipped).
    fn free_disk_bytes(&self) -> Option<u64>;
}

/// Failure to start the SCP.
#[derive(Debug, thiserror::Error)]
pub enum ScpError {
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid scp setting {key}: {message}")]
    InvalidConfig { key: &'static str, message: String },
    #[error("failed to start the scp thread: {0}")]
    Spawn(std::io::Error),
}

/// A running SCP. Dropping the handle does not stop it; call [`ScpHandle::shutdown`].
#[derive(Debug)]
pub struct ScpHandle {
    local_addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
}

impl ScpHandle {
    /// Returns the address the listener is bound to (with the real port when 0 was requested).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the number of associations being served now.
    pub fn active_associations(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Stops accepting connections, then waits up to `grace` for open associations to end.
    /// Returns the number of associations still open when it gave up.
    pub fn shutdown(mut self, grace: Duration) -> usize {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }

        let deadline = Instant::now() + grace;
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.active.load(Ordering::SeqCst)
    }
}

/// Time the accept loop sleeps when no connection is waiting; it bounds how late a shutdown
/// request is noticed.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// Starts the SCP: binds `config.listen` and serves associations on background threads until
/// `shutdown` becomes true or [`ScpHandle::shutdown`] is called.
///
/// # Errors
///
/// [`ScpError::InvalidConfig`] for an empty AE title or zero limits, [`ScpError::Bind`] when the
/// address cannot be bound.
pub fn spawn_scp(
    config: ScpConfig,
    sink: Arc<dyn InstanceSink>,
    shutdown: Arc<AtomicBool>,
) -> Result<ScpHandle, ScpError> {
    validate(&config)?;

    let listener = TcpListener::bind(config.listen).map_err(|source| ScpError::Bind {
        addr: config.listen,
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| ScpError::Bind {
        addr: config.listen,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ScpError::Bind {
            addr: config.listen,
            source,
        })?;

    if config.allowed_calling_ae.is_empty() {
        tracing::warn!(ae_title = %config.ae_title, "C-STORE SCP accepts any calling AE title; set allowed_calling_ae to restrict it");
    }
    tracing::info!(
        ae_title = %config.ae_title,
        address = %local_addr,
        max_associations = config.max_associations,
        max_pdu_length = config.max_pdu_length,
        "C-STORE SCP listening"
    );

    let active = Arc::new(AtomicUsize::new(0));
    let context = Arc::new(association::AssociationContext::new(config, sink));
    let acceptor = {
        let shutdown = Arc::clone(&shutdown);
        let active = Arc::clone(&active);
        std::thread::Builder::new()
            .name("scp-accept".to_string())
            .spawn(move || accept_loop(listener, context, active, shutdown))
            .map_err(ScpError::Spawn)?
    };

    Ok(ScpHandle {
        local_addr,
        shutdown,
        active,
        acceptor: Some(acceptor),
    })
}

fn validate(config: &ScpConfig) -> Result<(), ScpError> {
    let ae = config.ae_title.trim();
    if ae.is_empty() || ae.len() > 16 {
        return Err(ScpError::InvalidConfig {
            key: "ae_title",
            message: format!("must be 1 to 16 characters, got {:?}", config.ae_title),
        });
    }
    if config.max_associations == 0 {
        return Err(ScpError::InvalidConfig {
            key: "max_associations",
            message: "must be at least 1, got 0".to_string(),
        });
    }
    if config.max_pdu_length < dicom_ul::pdu::MINIMUM_PDU_SIZE {
        return Err(ScpError::InvalidConfig {
            key: "max_pdu_length",
            message: format!(
                "must be at least {} bytes, got {}",
                dicom_ul::pdu::MINIMUM_PDU_SIZE,
                config.max_pdu_length
            ),
        });
    }
    Ok(())
}

fn accept_loop(
    listener: TcpListener,
    context: Arc<association::AssociationContext>,
    active: Arc<AtomicUsize>,
    shutdown: Arc<AtomicBool>,
) {
    while !shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => dispatch(stream, peer, &context, &active),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL)
            }
            Err(err) => {
                // Typically EMFILE: back off so the loop does not spin while descriptors free up.
                tracing::error!(error = %err, "Failed to accept a connection; retrying in 100 ms");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    tracing::info!("C-STORE SCP stopped accepting connections");
}

/// Hands an accepted connection to a new association thread, or rejects it when the limit is
/// reached.
fn dispatch(
    stream: TcpStream,
    peer: SocketAddr,
    context: &Arc<association::AssociationContext>,
    active: &Arc<AtomicUsize>,
) {
    if let Err(err) = prepare_socket(&stream) {
        tracing::warn!(peer_addr = %peer, error = %err, "Failed to configure an accepted socket; closing it");
        return;
    }

    let limit = context.config.max_associations;
    let reserved = active
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok();
    let artim = context.config.artim_timeout;

    let spawned = if reserved {
        let context = Arc::clone(context);
        let guard = ActiveGuard(Arc::clone(active));
        std::thread::Builder::new()
            .name("scp-association".to_string())
            .spawn(move || {
                let _guard = guard;
                association::serve(stream, peer, &context);
            })
    } else {
        std::thread::Builder::new()
            .name("scp-reject".to_string())
            .spawn(move || reject_over_limit(stream, peer, artim, limit))
    };
    if let Err(err) = spawned {
        tracing::error!(peer_addr = %peer, error = %err, "Failed to start an association thread; connection closed");
    }
}

/// Decrements the active association count when the association thread ends, even by panic.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn prepare_socket(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)
}

/// Reads the A-ASSOCIATE-RQ and sends A-ASSOCIATE-RJ, transient, source "service provider
/// (presentation)", reason "local limit exceeded" (PS3.8 section 9.3.4).
fn reject_over_limit(mut stream: TcpStream, peer: SocketAddr, artim: Duration, limit: usize) {
    let _ = stream.set_read_timeout(Some(artim));
    let _ = stream.set_write_timeout(Some(artim));

    if let Err(err) = skip_pdu(&mut stream) {
        tracing::info!(peer_addr = %peer, error = %err, "Connection over the association limit closed before its request");
        return;
    }

    let rejection = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut out = Vec::new();
    if dicom_ul::pdu::write_pdu(&mut out, &rejection).is_ok() {
        use std::io::Write;
        let _ = stream.write_all(&out);
    }
    tracing::info!(peer_addr = %peer, max_associations = limit, "Association rejected: local limit exceeded");
}

/// Reads one PDU header (type, reserved byte, 32-bit big-endian length) and discards the body
/// without buffering it.
fn skip_pdu(stream: &mut TcpStream) -> std::io::Result<()> {
    use std::io::Read;

    let mut header = [0u8; 6];
    stream.read_exact(&mut header)?;
    let length = u64::from(u32::from_be_bytes([
        header[2], header[3], header[4], header[5],
    ]));
    let copied = std::io::copy(&mut stream.take(length), &mut std::io::sink())?;
    if copied < length {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed inside the pdu",
        ));
    }
    Ok(())
}
