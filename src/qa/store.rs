//! The QA queue: cases, their review states and an audit log, behind the [`QaStore`] trait.
//!
//! States and the legal transitions:
//!
//! | action | from | to |
//! |---|---|---|
//! | `claim` | pending | in_review |
//! | `release` | in_review | pending |
//! | `accept` | pending, in_review | accepted |
//! | `accept_threshold` | pending, in_review | accepted_threshold |
//! | `correct` | pending, in_review (with a saved mask) | corrected |
//! | `reject` | pending, in_review | rejected |
//!
//! Decided cases (accepted, accepted_threshold, corrected, rejected) are final. Every change,
//! including each saved mask slice, writes an audit entry in the same transaction.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ndarray::ArrayView2;
use penumbra_imaging::LabelVolume;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::files::{self, CaseMaps, MaskKind};
use super::QaError;
use crate::confidence::{Confidence, LesionVolumes};

/// Row id of a case.
pub type CaseId = i64;

/// Review state of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    Pending,
    InReview,
    Accepted,
    Corrected,
    Rejected,
    AcceptedThreshold,
}

impl CaseState {
    /// All states, in queue order.
    pub const ALL: [CaseState; 6] = [
        Self::Pending,
        Self::InReview,
        Self::Accepted,
        Self::Corrected,
        Self::Rejected,
        Self::AcceptedThreshold,
    ];

    /// Returns the name stored in the database and used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InReview => "in_review",
            Self::Accepted => "accepted",
            Self::Corrected => "corrected",
            Self::Rejected => "rejected",
            Self::AcceptedThreshold => "accepted_threshold",
        }
    }

    /// Parses a stored state name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Returns whether a reviewer has decided the case.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::InReview)
    }
}

impl fmt::Display for CaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reviewer's action on a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Claim,
    Release,
    Accept,
    AcceptThreshold,
    Correct,
    Reject,
}

impl Action {
    /// Returns the action's API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Release => "release",
            Self::Accept => "accept",
            Self::AcceptThreshold => "accept_threshold",
            Self::Correct => "correct",
            Self::Reject => "reject",
        }
    }

    /// Returns the state this action leads to from `from`, or `None` when it is illegal there.
    pub fn target(self, from: CaseState) -> Option<CaseState> {
        use CaseState::*;
        match (self, from) {
            (Self::Claim, Pending) => Some(InReview),
            (Self::Release, InReview) => Some(Pending),
            (Self::Accept, Pending | InReview) => Some(Accepted),
            (Self::AcceptThreshold, Pending | InReview) => Some(AcceptedThreshold),
            (Self::Correct, Pending | InReview) => Some(Corrected),
            (Self::Reject, Pending | InReview) => Some(Rejected),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reviewer's decision as the API receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    /// Reviewer name as entered at login, or `api` for bearer-token clients that give none.
    pub reviewer: String,
    /// Free text for the audit log.
    #[serde(default)]
    pub note: String,
}

/// Volumes shown to the reviewer, in millilitres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CaseVolumes {
    pub unet: LesionVolumes,
    pub threshold: LesionVolumes,
}

/// One study's review material, as the pipeline passes it to [`QaStore::enqueue`].
#[derive(Debug, Clone)]
pub struct NewCase {
    /// Study Instance UID. It must be a valid DICOM UID because it names a directory.
    pub study_uid: String,
    /// When the study arrived.
    pub arrival: OffsetDateTime,
    /// Higher values are reviewed first, and ties go by arrival.
    pub urgency: i32,
    pub confidence: Confidence,
    pub volumes: CaseVolumes,
    /// Identifier of the U-Net weights that produced the labels.
    pub model_version: String,
    pub maps: CaseMaps,
}

/// One case as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub id: CaseId,
    pub study_uid: String,
    /// RFC 3339, UTC.
    pub arrival: String,
    pub urgency: i32,
    pub state: CaseState,
    pub confidence: Confidence,
    pub volumes: CaseVolumes,
    pub model_version: String,
    /// Directory with the case's maps, masks and slice images.
    pub dir: PathBuf,
    /// Grid shape `(z, y, x)`.
    pub shape: [usize; 3],
    /// Whether a corrected mask has been saved.
    pub has_correction: bool,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub case_id: CaseId,
    /// RFC 3339, UTC.
    pub at: String,
    pub who: String,
    /// An [`Action`] name, `enqueue` or `save_mask`.
    pub what: String,
    pub from_state: Option<CaseState>,
    pub to_state: CaseState,
    pub note: String,
}

/// The queue's persistence. A PostgreSQL implementation would keep the files on a shared disk and
/// the rows in the database.
pub trait QaStore: Send + Sync {
    /// Stores a new pending case and writes its files.
    fn enqueue(&self, case: NewCase) -> Result<CaseId, QaError>;
    /// Lists cases in the given states (all states when empty), by urgency then arrival.
    fn list(&self, states: &[CaseState]) -> Result<Vec<CaseRecord>, QaError>;
    /// Returns one case.
    fn get(&self, id: CaseId) -> Result<CaseRecord, QaError>;
    /// Applies a decision, or fails with [`QaError::IllegalTransition`] leaving the case unchanged.
    fn decide(&self, id: CaseId, decision: &Decision) -> Result<CaseRecord, QaError>;
    /// Replaces one `(y, x)` slice of the corrected mask of an undecided case.
    fn save_mask_slice(&self, id: CaseId, slice: usize, mask: ArrayView2<u8>, who: &str) -> Result<(), QaError>;
    /// Returns the audit log of one case, oldest first.
    fn audit(&self, id: CaseId) -> Result<Vec<AuditEntry>, QaError>;
    /// Reads one label volume of a case, or `None` for a correction never saved.
    fn mask(&self, id: CaseId, kind: MaskKind) -> Result<Option<LabelVolume>, QaError>;
}

/// Returns the labels a decided case ends with: the U-Net labels when accepted, the threshold
/// labels when accepted_threshold, the corrected mask when corrected, and `None` otherwise.
pub fn final_mask(store: &dyn QaStore, case: &CaseRecord) -> Result<Option<LabelVolume>, QaError> {
    match case.state {
        CaseState::Accepted => store.mask(case.id, MaskKind::Unet),
        CaseState::AcceptedThreshold => store.mask(case.id, MaskKind::Threshold),
        CaseState::Corrected => store.mask(case.id, MaskKind::Corrected),
        CaseState::Pending | CaseState::InReview | CaseState::Rejected => Ok(None),
    }
}

/// The SQLite store: `<data_dir>/qa.sqlite` in WAL mode plus files under `<data_dir>/qa/`.
pub struct SqliteQaStore {
    data_dir: PathBuf,
    connection: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    arrival_ms INTEGER NOT NULL,
    urgency INTEGER NOT NULL,
    state TEXT NOT NULL,
    score REAL NOT NULL,
    confidence_json TEXT NOT NULL,
    volumes_json TEXT NOT NULL,
    model_version TEXT NOT NULL,
    dir TEXT NOT NULL,
    depth INTEGER NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    has_correction INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cases_queue ON cases (state, urgency DESC, arrival_ms);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id INTEGER NOT NULL REFERENCES cases (id),
    at_ms INTEGER NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_case ON audit (case_id, id);
";

const CASE_COLUMNS: &str = "id, study_uid, arrival_ms, urgency, state, confidence_json, volumes_json, \
     model_version, dir, depth, height, width, has_correction";

impl SqliteQaStore {
    /// Opens or creates the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, QaError> {
        std::fs::create_dir_all(data_dir.join("qa")).map_err(|e| QaError::io(data_dir, e))?;
        let connection = Connection::open(data_dir.join("qa.sqlite"))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        Ok(Self { data_dir: data_dir.to_owned(), connection: Mutex::new(connection) })
    }

    /// Returns the data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written transaction behind, because
        // SQLite rolls back an unfinished one, so the poisoned connection is still usable.
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn insert_audit(
    connection: &Connection,
    case_id: CaseId,
    who: &str,
    what: &str,
    from: Option<CaseState>,
    to: CaseState,
    note: &str,
) -> Result<(), QaError> {
    connection.execute(
        "INSERT INTO audit (case_id, at_ms, who, what, from_state, to_state, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![case_id, now_ms(), who, what, from.map(CaseState::as_str), to.as_str(), note],
    )?;
    Ok(())
}

fn read_case(row: &Row) -> rusqlite::Result<Result<CaseRecord, QaError>> {
    let id: i64 = row.get(0)?;
    let state: String = row.get(4)?;
    let confidence: String = row.get(5)?;
    let volumes: String = row.get(6)?;
    let dims: [i64; 3] = [row.get(9)?, row.get(10)?, row.get(11)?];
    let arrival_ms: i64 = row.get(2)?;
    let study_uid: String = row.get(1)?;
    let urgency: i32 = row.get(3)?;
    let model_version: String = row.get(7)?;
    let dir: String = row.get(8)?;
    let has_correction: bool = row.get(12)?;

    Ok((|| {
        let corrupt = |what: &str| QaError::Corrupt(format!("case {id}: {what}"));
        Ok(CaseRecord {
            id,
            study_uid,
            arrival: format_ms(arrival_ms),
            urgency,
            state: CaseState::parse(&state).ok_or_else(|| corrupt(&format!("unknown state {state:?}")))?,
            confidence: serde_json::from_str(&confidence).map_err(|e| corrupt(&format!("confidence: {e}")))?,
            volumes: serde_json::from_str(&volumes).map_err(|e| corrupt(&format!("volumes: {e}")))?,
            model_version,
            dir: PathBuf::from(dir),
            shape: dims.map(|d| usize::try_from(d).unwrap_or(0)),
            has_correction,
        })
    })())
}

fn get_case(connection: &Connection, id: CaseId) -> Result<CaseRecord, QaError> {
    let sql = format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = ?1");
    connection.query_row(&sql, [id], read_case).optional()?.ok_or(QaError::NotFound(id))?
}

impl QaStore for SqliteQaStore {
    fn enqueue(&self, case: NewCase) -> Result<CaseId, QaError> {
        files::validate_study_uid(&case.study_uid)?;
        let [depth, height, width] = case.maps.shape()?;
        let confidence = serde_json::to_string(&case.confidence).map_err(|e| QaError::InvalidCase(e.to_string()))?;
        let volumes = serde_json::to_string(&case.volumes).map_err(|e| QaError::InvalidCase(e.to_string()))?;
        let arrival_ms = (case.arrival.unix_timestamp_nanos() / 1_000_000) as i64;

        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        transaction.execute(
            "INSERT INTO cases (study_uid, arrival_ms, urgency, state, score, confidence_json, volumes_json, \
             model_version, dir, depth, height, width) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', ?9, ?10, ?11)",
            params![
                case.study_uid,
                arrival_ms,
                case.urgency,
                CaseState::Pending.as_str(),
                case.confidence.score,
                confidence,
                volumes,
                case.model_version,
                depth as i64,
                height as i64,
                width as i64
            ],
        )?;
        let id = transaction.last_insert_rowid();

        let dir = files::case_dir(&self.data_dir, &case.study_uid, id);
        if let Err(error) = files::write_case_files(&dir, &case.maps) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(error);
        }
        transaction.execute("UPDATE cases SET dir = ?1 WHERE id = ?2", params![dir.to_string_lossy(), id])?;
        insert_audit(&transaction, id, "pipeline", "enqueue", None, CaseState::Pending, "")?;
        transaction.commit()?;

        tracing::info!(case_id = id, study_uid = %case.study_uid, score = case.confidence.score, "Queued study for review");
        Ok(id)
    }

    fn list(&self, states: &[CaseState]) -> Result<Vec<CaseRecord>, QaError> {
        let connection = self.lock();
        let filter = if states.is_empty() {
            String::new()
        } else {
            let placeholders = vec!["?"; states.len()].join(", ");
            format!("WHERE state IN ({placeholders})")
        };
        let sql = format!("SELECT {CASE_COLUMNS} FROM cases {filter} ORDER BY urgency DESC, arrival_ms, id");
        let mut statement = connection.prepare(&sql)?;
        let names = states.iter().map(|s| s.as_str());
        let rows = statement.query_map(rusqlite::params_from_iter(names), read_case)?;

        let mut cases = Vec::new();
        for row in rows {
            cases.push(row??);
        }
        Ok(cases)
    }

    fn get(&self, id: CaseId) -> Result<CaseRecord, QaError> {
        get_case(&self.lock(), id)
    }

    fn decide(&self, id: CaseId, decision: &Decision) -> Result<CaseRecord, QaError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let case = get_case(&transaction, id)?;

        let target = decision.action.target(case.state).ok_or(QaError::IllegalTransition {
            id,
            from: case.state,
            action: decision.action,
        })?;
        if decision.action == Action::Correct && !case.has_correction {
            return Err(QaError::NoCorrection(id));
        }

        transaction.execute("UPDATE cases SET state = ?1 WHERE id = ?2", params![target.as_str(), id])?;
        insert_audit(
            &transaction,
            id,
            &decision.reviewer,
            decision.action.as_str(),
            Some(case.state),
            target,
            &decision.note,
        )?;
        let updated = get_case(&transaction, id)?;
        transaction.commit()?;

        tracing::info!(case_id = id, study_uid = %case.study_uid, from = %case.state, to = %target, "Review state changed");
        Ok(updated)
    }

    fn save_mask_slice(&self, id: CaseId, slice: usize, mask: ArrayView2<u8>, who: &str) -> Result<(), QaError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let case = get_case(&transaction, id)?;
        if case.state.is_final() {
            return Err(QaError::IllegalTransition { id, from: case.state, action: Action::Correct });
        }

        files::write_corrected_slice(&case.dir, slice, mask)?;
        transaction.execute("UPDATE cases SET has_correction = 1 WHERE id = ?1", [id])?;
        insert_audit(&transaction, id, who, "save_mask", Some(case.state), case.state, &format!("slice {slice}"))?;
        transaction.commit()?;
        Ok(())
    }

    fn audit(&self, id: CaseId) -> Result<Vec<AuditEntry>, QaError> {
        let connection = self.lock();
        get_case(&connection, id)?;
        let mut statement = connection.prepare(
            "SELECT case_id, at_ms, who, what, from_state, to_state, note FROM audit WHERE case_id = ?1 ORDER BY id",
        )?;
        let rows = statement.query_map([id], |row| {
            let from: Option<String> = row.get(4)?;
            let to: String = row.get(5)?;
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                from,
                to,
                row.get::<_, String>(6)?,
            ))
        })?;

        let mut entries = Vec::new();
        for row in rows {
            let (case_id, at_ms, who, what, from, to, note) = row?;
            let parse = |name: &str| {
                CaseState::parse(name).ok_or_else(|| QaError::Corrupt(format!("audit of case {id}: unknown state {name:?}")))
            };
            entries.push(AuditEntry {
                case_id,
                at: format_ms(at_ms),
                who,
                what,
                from_state: from.as_deref().map(parse).transpose()?,
                to_state: parse(&to)?,
                note,
            });
        }
        Ok(entries)
    }

    fn mask(&self, id: CaseId, kind: MaskKind) -> Result<Option<LabelVolume>, QaError> {
        let case = self.get(id)?;
        files::read_mask(&case.dir, kind)
    }
}
