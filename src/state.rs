//! The state store: one SQLite file (`state.sqlite` in `state_dir`) holding, per site, the previous good
//! capture and its analysis; the files already processed; and the outbox of events waiting for the broker.
//! Moving a site's baseline, remembering the file and queueing its event happen in one transaction, so a
//! crash or power cut leaves all of them or none.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::capture::{from_millis_since_epoch, millis_since_epoch, FileStamp};

/// The file inside `state_dir`.
pub const FILE_NAME: &str = "state.sqlite";

/// Schema migrations; `PRAGMA user_version` is the number applied. Append only: a released step never
/// changes, a later one alters what it must.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE sites (
         site TEXT PRIMARY KEY NOT NULL,
         capture TEXT NOT NULL,          -- name of the previous good capture
         taken_at_ms INTEGER NOT NULL,
         sha256 TEXT NOT NULL,
         analysis BLOB NOT NULL,         -- the daemon's per-capture analysis (embeddings, tiles, greenery)
         updated_at_ms INTEGER NOT NULL
     );
     CREATE TABLE processed (
         source TEXT NOT NULL,
         name TEXT NOT NULL,
         size INTEGER NOT NULL,
         mtime_ns INTEGER NOT NULL,
         sha256 TEXT NOT NULL,
         processed_at_ms INTEGER NOT NULL,
         PRIMARY KEY (source, name, size, mtime_ns)
     ) WITHOUT ROWID;
     CREATE TABLE outbox (
         seq INTEGER PRIMARY KEY NOT NULL,  -- from meta.next_seq: never reused, even after deletes
         id TEXT NOT NULL UNIQUE,           -- ULID
         kind TEXT NOT NULL,                -- 'event' or 'snapshot'
         site TEXT NOT NULL,
         payload BLOB NOT NULL,             -- compact JSON for an event, JPEG for a snapshot
         created_at_ms INTEGER NOT NULL,
         bytes INTEGER NOT NULL
     );
     CREATE INDEX outbox_kind ON outbox (kind, seq);
     CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO meta (key, value) VALUES ('next_seq', 1), ('dropped_events', 0), ('dropped_snapshots', 0);",
];

/// Errors of the store; every message names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot create the state directory: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error(
        "{path}: schema version {found} is newer than this edge-change knows ({known}); upgrade it"
    )]
    NewerSchema { path: PathBuf, found: i64, known: i64 },
    #[error("{path}: an event payload must be a JSON object, not {found}")]
    Payload { path: PathBuf, found: &'static str },
}

/// How large the outbox may grow while the broker is unreachable, and what goes first when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    pub max_rows: u64,
    pub max_bytes: u64,
}

impl Default for OutboxLimits {
    /// About a week of one event a minute from a dozen sites, well inside a small SD card.
    fn default() -> Self {
        OutboxLimits { max_rows: 100_000, max_bytes: 256 * 1024 * 1024 }
    }
}

/// A site's previous good capture: what the next capture of the site is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The capture's name (file name, URL, …).
    pub capture: String,
    pub taken_at: SystemTime,
    pub sha256: String,
    /// The capture's analysis as the daemon serialises it (tile embeddings via [`f32s_to_le_bytes`],
    /// geometry, greenery, learned vegetation), so the next pair needs one encoder pass. Opaque here.
    pub analysis: Vec<u8>,
}

/// A file from a watched directory that has been dealt with (analysed, found a duplicate or failed).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedFile {
    pub source: String,
    /// Path relative to the watched directory.
    pub name: String,
    pub stamp: FileStamp,
    pub sha256: String,
}

/// An event to queue: the store adds `"id"` and `"seq"` to the JSON object before writing it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub site: String,
    pub payload: serde_json::Value,
}

/// Where a queued event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A JSON event for `<prefix>/events` (and the site's retained state).
    Event,
    /// A JPEG thumbnail for the site's retained snapshot topic; dropped first when the outbox is full.
    Snapshot,
}

impl OutboxKind {
    fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Event => "event",
            OutboxKind::Snapshot => "snapshot",
        }
    }
}

/// One row of the outbox, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub seq: u64,
    pub id: String,
    pub kind: OutboxKind,
    pub site: String,
    pub payload: Vec<u8>,
    pub created_at: SystemTime,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub rows: u64,
    pub bytes: u64,
}

/// Rows removed to keep the outbox within its limits, since the database was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub events: u64,
    pub snapshots: u64,
}

/// One connection to the state database. Not `Sync`: each task that needs the store opens its own (the
/// daemon's writer, the MQTT sink, a directory source's "already processed?" look-ups); WAL lets them read
/// while one writes, and a busy timeout makes writers wait their turn.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    limits: OutboxLimits,
    ids: ulid::Generator,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("limits", &self.limits).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `dir/state.sqlite` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        let path = dir.join(FILE_NAME);
        let conn = Connection::open(&path).map_err(sqlite(&path))?;
        let mut store =
            Store { conn, path, limits: OutboxLimits::default(), ids: ulid::Generator::new() };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// Replaces the outbox limits (checked on each new event or snapshot).
    pub fn with_limits(mut self, limits: OutboxLimits) -> Store {
        self.limits = limits;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&self) -> Result<(), StoreError> {
        // WAL: readers (the sink, a source's look-ups) never block the writer, and a commit is one
        // append. synchronous=FULL fsyncs the WAL at every commit. NORMAL would also never corrupt the
        // file, but a power cut could roll back the last commits, and those may already have been
        // published: the rolled-back sequence numbers would then be handed out again to other events, and
        // a command or HTTP capture (which exists nowhere else) would be lost. Boards lose power; one fsync
        // per capture is cheap.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| self.conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| self.conn.busy_timeout(Duration::from_secs(10)))
            .map_err(sqlite(&self.path))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(&path))?;
        let version: i64 =
            tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite(&path))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::NewerSchema { path, found: version, known });
        }
        for step in &MIGRATIONS[version as usize..] {
            tx.execute_batch(step).map_err(sqlite(&path))?;
        }
        tx.pragma_update(None, "user_version", known).map_err(sqlite(&path))?;
        tx.commit().map_err(sqlite(&path))
    }

    /// The site's previous good capture, if it has one.
    pub fn previous(&self, site: &str) -> Result<Option<Baseline>, StoreError> {
        self.conn
            .query_row(
                "SELECT capture, taken_at_ms, sha256, analysis FROM sites WHERE site = ?1",
                [site],
                |r| {
                    Ok(Baseline {
                        capture: r.get(0)?,
                        taken_at: from_millis_since_epoch(r.get(1)?),
                        sha256: r.get(2)?,
                        analysis: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(sqlite(&self.path))
    }

    /// Whether this version of a directory source's file was already dealt with.
    pub fn is_processed(
        &self,
        source: &str,
        name: &str,
        stamp: FileStamp,
    ) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM processed
                 WHERE source = ?1 AND name = ?2 AND size = ?3 AND mtime_ns = ?4",
                params![source, name, stamp.size as i64, stamp.mtime_ns],
                |_| Ok(()),
            )
            .optional()
            .map(|row| row.is_some())
            .map_err(sqlite(&self.path))
    }

    /// Everything that follows from one capture, in one transaction: the site's new baseline (the first
    /// capture of a site, or a newly analysed one), its event (none for a first capture), and the file it
    /// came from (so it is never processed twice). Returns where the event landed.
    pub fn commit_analysis(
        &mut self,
        site: &str,
        new_baseline: Option<&Baseline>,
        event: Option<NewEvent>,
        processed: Option<&ProcessedFile>,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let path = self.path.clone();
        let now = millis_since_epoch(SystemTime::now());
        let limits = self.limits;
        let id = self.next_id();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(&path))?;
        if let Some(b) = new_baseline {
            tx.execute(
                "INSERT INTO sites (site, capture, taken_at_ms, sha256, analysis, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (site) DO UPDATE SET capture = excluded.capture,
                     taken_at_ms = excluded.taken_at_ms, sha256 = excluded.sha256,
                     analysis = excluded.analysis, updated_at_ms = excluded.updated_at_ms",
                params![site, b.capture, millis_since_epoch(b.taken_at), b.sha256, b.analysis, now],
            )
            .map_err(sqlite(&path))?;
        }
        if let Some(p) = processed {
            tx.execute(
                "INSERT OR REPLACE INTO processed
                     (source, name, size, mtime_ns, sha256, processed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p.source, p.name, p.stamp.size as i64, p.stamp.mtime_ns, p.sha256, now],
            )
            .map_err(sqlite(&path))?;
        }
        let stored = match event {
            None => None,
            Some(event) => {
                let serde_json::Value::Object(mut object) = event.payload else {
                    return Err(StoreError::Payload { path, found: json_kind(&event.payload) });
                };
                let seq = take_seq(&tx).map_err(sqlite(&path))?;
                object.insert("id".into(), id.clone().into());
                object.insert("seq".into(), seq.into());
                let payload = serde_json::Value::Object(object).to_string().into_bytes();
                insert_row(&tx, limits, seq, &id, OutboxKind::Event, &event.site, &payload, now)
                    .map_err(sqlite(&path))?;
                Some(StoredEvent { seq, id })
            }
        };
        tx.commit().map_err(sqlite(&path))?;
        Ok(stored)
    }

    /// Queues a site's JPEG thumbnail. Only the newest matters (it is published retained), so it replaces
    /// any of the site's snapshots still waiting.
    pub fn push_snapshot(&mut self, site: &str, jpeg: &[u8]) -> Result<StoredEvent, StoreError> {
        let path = self.path.clone();
        let now = millis_since_epoch(SystemTime::now());
        let limits = self.limits;
        let id = self.next_id();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(&path))?;
        tx.execute("DELETE FROM outbox WHERE kind = 'snapshot' AND site = ?1", [site])
            .map_err(sqlite(&path))?;
        let seq = take_seq(&tx).map_err(sqlite(&path))?;
        insert_row(&tx, limits, seq, &id, OutboxKind::Snapshot, site, jpeg, now)
            .map_err(sqlite(&path))?;
        tx.commit().map_err(sqlite(&path))?;
        Ok(StoredEvent { seq, id })
    }

    /// Up to `n` of the oldest rows, in `seq` order: what the sink publishes next.
    pub fn outbox_peek(&self, n: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT seq, id, kind, site, payload, created_at_ms FROM outbox
                 ORDER BY seq LIMIT ?1",
            )
            .map_err(sqlite(&self.path))?;
        let rows = statement
            .query_map([n as i64], |r| {
                let kind: String = r.get(2)?;
                Ok(OutboxRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    id: r.get(1)?,
                    kind: if kind == "snapshot" { OutboxKind::Snapshot } else { OutboxKind::Event },
                    site: r.get(3)?,
                    payload: r.get(4)?,
                    created_at: from_millis_since_epoch(r.get(5)?),
                })
            })
            .map_err(sqlite(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sqlite(&self.path))
    }

    /// Removes a delivered row (after the broker acknowledged it). False if it was not there (already
    /// deleted, or dropped for space).
    pub fn outbox_delete(&mut self, seq: u64) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM outbox WHERE seq = ?1", [seq as i64])
            .map(|n| n > 0)
            .map_err(sqlite(&self.path))
    }

    pub fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        depth(&self.conn).map_err(sqlite(&self.path))
    }

    /// Rows dropped so far to keep within the limits.
    pub fn dropped(&self) -> Result<Dropped, StoreError> {
        let get = |key: &str| -> rusqlite::Result<u64> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, i64>(0))
                .map(|v| v as u64)
        };
        Ok(Dropped {
            events: get("dropped_events").map_err(sqlite(&self.path))?,
            snapshots: get("dropped_snapshots").map_err(sqlite(&self.path))?,
        })
    }

    /// The sites with a baseline, in name order (the MQTT sink announces them to Home Assistant).
    pub fn sites(&self) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT site FROM sites ORDER BY site")
            .map_err(sqlite(&self.path))?;
        let sites = statement
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(sqlite(&self.path))?;
        Ok(sites)
    }

    /// `PRAGMA integrity_check`: empty when the database is sound, else SQLite's findings.
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        let mut statement =
            self.conn.prepare("PRAGMA integrity_check").map_err(sqlite(&self.path))?;
        let lines: Vec<String> = statement
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(sqlite(&self.path))?;
        Ok(lines.into_iter().filter(|l| l != "ok").collect())
    }

    fn next_id(&mut self) -> String {
        // The generator keeps ids sortable within one millisecond; it fails only after 2^80 ids in one
        // millisecond, where a fresh random one is still unique.
        self.ids.generate().unwrap_or_else(|_| ulid::Ulid::generate()).to_string()
    }
}

/// Takes the next sequence number. A counter in `meta` rather than the rowid: the rowid of an emptied
/// table restarts, and delivered rows are deleted.
fn take_seq(tx: &Transaction<'_>) -> rusqlite::Result<u64> {
    tx.query_row(
        "UPDATE meta SET value = value + 1 WHERE key = 'next_seq' RETURNING value - 1",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|v| v as u64)
}

/// Inserts one outbox row, first making room: the oldest snapshots go before any event, then the oldest
/// events (after a long outage the newest are worth more); each drop is counted in `meta`.
#[allow(clippy::too_many_arguments)]
fn insert_row(
    tx: &Transaction<'_>,
    limits: OutboxLimits,
    seq: u64,
    id: &str,
    kind: OutboxKind,
    site: &str,
    payload: &[u8],
    now: i64,
) -> rusqlite::Result<()> {
    let bytes = payload.len() as u64;
    let mut current = depth(tx)?;
    for victim in [OutboxKind::Snapshot, OutboxKind::Event] {
        while current.rows > 0
            && (current.rows + 1 > limits.max_rows || current.bytes + bytes > limits.max_bytes)
        {
            let Some((old_seq, old_bytes)) = tx
                .query_row(
                    "SELECT seq, bytes FROM outbox WHERE kind = ?1 ORDER BY seq LIMIT 1",
                    [victim.as_str()],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64)),
                )
                .optional()?
            else {
                break;
            };
            tx.execute("DELETE FROM outbox WHERE seq = ?1", [old_seq])?;
            let counter = match victim {
                OutboxKind::Event => "dropped_events",
                OutboxKind::Snapshot => "dropped_snapshots",
            };
            tx.execute("UPDATE meta SET value = value + 1 WHERE key = ?1", [counter])?;
            current.rows -= 1;
            current.bytes -= old_bytes;
        }
    }
    tx.execute(
        "INSERT INTO outbox (seq, id, kind, site, payload, created_at_ms, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq as i64, id, kind.as_str(), site, payload, now, bytes as i64],
    )?;
    Ok(())
}

fn depth(conn: &Connection) -> rusqlite::Result<OutboxDepth> {
    conn.query_row("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox", [], |r| {
        Ok(OutboxDepth { rows: r.get::<_, i64>(0)? as u64, bytes: r.get::<_, i64>(1)? as u64 })
    })
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite { path: path.to_owned(), source }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Little-endian f32s, the stored form of embeddings (the same bytes on every board).
pub fn f32s_to_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The inverse of [`f32s_to_le_bytes`]; `None` when the length is not a multiple of 4.
pub fn f32s_from_le_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    let chunks = bytes.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    Some(chunks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    fn baseline(name: &str, ms: u64) -> Baseline {
        Baseline {
            capture: name.into(),
            taken_at: UNIX_EPOCH + Duration::from_millis(ms),
            sha256: format!("sha-{name}"),
            analysis: f32s_to_le_bytes(&[1.0, -2.5, ms as f32]),
        }
    }

    fn event(site: &str, capture: &str) -> NewEvent {
        NewEvent { site: site.into(), payload: json!({"type": "change", "capture": capture}) }
    }

    fn file(name: &str, size: u64) -> ProcessedFile {
        ProcessedFile {
            source: "north".into(),
            name: name.into(),
            stamp: FileStamp { size, mtime_ns: 1_000 },
            sha256: format!("sha-{name}"),
        }
    }

    fn payload(row: &OutboxRow) -> serde_json::Value {
        serde_json::from_slice(&row.payload).expect("json payload")
    }

    #[test]
    fn opens_in_wal_mode_with_full_sync_and_the_current_schema() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("nested/state")).expect("open");
        let mode: String =
            store.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).expect("mode");
        let sync: i64 =
            store.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).expect("s");
        let version: i64 =
            store.conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("v");
        assert_eq!((mode.as_str(), sync, version), ("wal", 2, MIGRATIONS.len() as i64));
        assert_eq!(store.integrity_check().expect("check"), Vec::<String>::new());
    }

    #[test]
    fn sites_lists_the_sites_with_a_baseline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path()).expect("open");
        for site in ["south", "north"] {
            store.commit_analysis(site, Some(&baseline("a", 1)), None, None).expect("commit");
        }
        assert_eq!(store.sites().expect("sites"), ["north", "south"]);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(Store::open(dir.path()).expect("open"));
        let conn = Connection::open(dir.path().join(FILE_NAME)).expect("raw");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        let err = Store::open(dir.path()).expect_err("newer");
        assert!(err.to_string().contains("schema version 99 is newer"), "{err}");
    }

    #[test]
    fn first_capture_is_a_baseline_without_an_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path()).expect("open");
        assert_eq!(store.previous("north").expect("read"), None);
        let first = baseline("a.png", 1_000);
        let stored = store
            .commit_analysis("north", Some(&first), None, Some(&file("a.png", 10)))
            .expect("c");
        assert_eq!(stored, None);
        assert_eq!(store.previous("north").expect("read"), Some(first));
        assert_eq!(store.outbox_depth().expect("depth"), OutboxDepth::default());
        assert!(store.is_processed("north", "a.png", file("a.png", 10).stamp).expect("p"));
        assert!(!store.is_processed("north", "a.png", file("a.png", 11).stamp).expect("p"));
        assert!(!store.is_processed("south", "a.png", file("a.png", 10).stamp).expect("p"));
    }

    #[test]
    fn events_get_ids_and_increasing_seqs_and_move_the_baseline_together() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path()).expect("open");
        store.commit_analysis("north", Some(&baseline("a", 1)), None, None).expect("first");
        let one = store
            .commit_analysis("north", Some(&baseline("b", 2)), Some(event("north", "b")), None)
            .expect("commit")
            .expect("stored");
        // An error event leaves the baseline alone.
        let two = store
            .commit_analysis("north", None, Some(event("north", "broken")), None)
            .expect("commit")
            .expect("stored");
        assert_eq!((one.seq, two.seq), (1, 2));
        assert_eq!(one.id.len(), 26);
        assert!(one.id < two.id, "ULIDs sort in creation order");
        assert_eq!(store.previous("north").expect("read").expect("some").capture, "b");

        let rows = store.outbox_peek(10).expect("peek");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            payload(&rows[0]),
            json!({"type": "change", "capture": "b", "id": one.id, "seq": 1})
        );
        assert_eq!(
            (rows[1].seq, rows[1].kind, rows[1].site.as_str()),
            (2, OutboxKind::Event, "north")
        );
        let depth = store.outbox_depth().expect("depth");
        assert_eq!(depth.rows, 2);
        assert_eq!(depth.bytes, (rows[0].payload.len() + rows[1].payload.len()) as u64);
    }

    #[test]
    fn a_failed_commit_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path()).expect("open");
        store.commit_analysis("north", Some(&baseline("a", 1)), None, None).expect("first");
        let bad = NewEvent { site: "north".into(), payload: json!([1, 2]) };
        let err = store
            .commit_analysis("north", Some(&baseline("b", 2)), Some(bad), Some(&file("b", 1)))
            .expect_err("array payload");
        assert!(err.to_string().contains("must be a JSON object, not an array"), "{err}");
        assert_eq!(store.previous("north").expect("read").expect("some").capture, "a");
        assert!(!store.is_processed("north", "b", file("b", 1).stamp).expect("p"));
        let next =
            store.commit_analysis("north", None, Some(event("north", "c")), None).expect("ok");
        assert_eq!(next.expect("stored").seq, 1, "the failed commit took no sequence number");
    }

    #[test]
    fn seq_is_never_reused_after_delivery_and_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path()).expect("open");
        for i in 0..3 {
            store.commit_analysis("s", None, Some(event("s", &i.to_string())), None).expect("c");
        }
        for row in store.outbox_peek(10).expect("peek") {
            assert!(store.outbox_delete(row.seq).expect("delete"));
        }
        assert!(!store.outbox_delete(1).expect("delete again"));
        assert_eq!(store.outbox_depth().expect("depth"), OutboxDepth::default());
        drop(store);

        let mut store = Store::open(dir.path()).expect("reopen");
        let next = store.commit_analysis("s", None, Some(event("s", "3")), None).expect("c");
        assert_eq!(next.expect("stored").seq, 4);
        assert_eq!(store.integrity_check().expect("check"), Vec::<String>::new());
    }

    #[test]
    fn a_full_outbox_drops_snapshots_before_events_and_counts_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = OutboxLimits { max_rows: 3, max_bytes: 1 << 20 };
        let mut store = Store::open(dir.path()).expect("open").with_limits(limits);
        store.push_snapshot("a", b"jpeg-a").expect("snapshot");
        store.push_snapshot("b", b"jpeg-b").expect("snapshot");
        // A newer snapshot of a site replaces its waiting one instead of queueing behind it.
        let b2 = store.push_snapshot("b", b"jpeg-b2").expect("snapshot");
        assert_eq!(store.outbox_depth().expect("depth").rows, 2);
        store.commit_analysis("a", None, Some(event("a", "1")), None).expect("c");
        store.commit_analysis("a", None, Some(event("a", "2")), None).expect("c");
        let kinds = |s: &Store| -> Vec<(u64, OutboxKind)> {
            s.outbox_peek(10).expect("peek").iter().map(|r| (r.seq, r.kind)).collect()
        };
        assert_eq!(
            kinds(&store),
            [(b2.seq, OutboxKind::Snapshot), (4, OutboxKind::Event), (5, OutboxKind::Event)]
        );
        store.commit_analysis("a", None, Some(event("a", "3")), None).expect("c");
        store.commit_analysis("a", None, Some(event("a", "4")), None).expect("c");
        assert_eq!(
            kinds(&store),
            [(5, OutboxKind::Event), (6, OutboxKind::Event), (7, OutboxKind::Event)]
        );
        assert_eq!(store.dropped().expect("dropped"), Dropped { events: 1, snapshots: 2 });
    }

    #[test]
    fn the_byte_limit_is_kept_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = OutboxLimits { max_rows: 100, max_bytes: 250 };
        let mut store = Store::open(dir.path()).expect("open").with_limits(limits);
        for i in 0..10 {
            store.commit_analysis("s", None, Some(event("s", &i.to_string())), None).expect("c");
            assert!(store.outbox_depth().expect("depth").bytes <= 250);
        }
        let dropped = store.dropped().expect("dropped");
        let depth = store.outbox_depth().expect("depth");
        assert_eq!(dropped.events + depth.rows, 10);
        assert!(dropped.events > 0);
    }

    #[test]
    fn state_survives_reopening_and_a_second_connection_sees_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = Store::open(dir.path()).expect("open");
        let reader = Store::open(dir.path()).expect("second connection");
        writer
            .commit_analysis(
                "n",
                Some(&baseline("a", 7)),
                Some(event("n", "a")),
                Some(&file("a", 3)),
            )
            .expect("commit");
        assert_eq!(reader.outbox_depth().expect("depth").rows, 1);
        assert!(reader.is_processed("north", "a", file("a", 3).stamp).expect("p"));
        drop(writer);
        drop(reader);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.previous("n").expect("read"), Some(baseline("a", 7)));
        let analysis = store.previous("n").expect("read").expect("some").analysis;
        assert_eq!(f32s_from_le_bytes(&analysis), Some(vec![1.0, -2.5, 7.0]));
        assert_eq!(f32s_from_le_bytes(&[0, 0, 0]), None);
        assert_eq!(store.integrity_check().expect("check"), Vec::<String>::new());
    }
}
