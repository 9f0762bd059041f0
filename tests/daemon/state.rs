//! The state store under SIGKILL: a child process (this test binary, re-run on one ignored test)
//! commits a burst of captures and is killed in the middle; after the restart every processed capture
//! has exactly one event, no `seq` repeats, and `PRAGMA integrity_check` passes.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use edge_change::capture::FileStamp;
use edge_change::state::{Baseline, NewEvent, ProcessedFile, Store};
use serde_json::json;

use crate::harness::{eventually, temp};

const BURST: usize = 200;
const DIR_VARIABLE: &str = "EDGE_CHANGE_TEST_STATE_DIR";

/// The child's work: what the daemon does per capture, for captures 000..199, skipping those
/// already processed (as the directory source would after a restart).
#[test]
#[ignore = "run as a child process by the SIGKILL test"]
fn burst_writer() {
    let Some(dir) = std::env::var_os(DIR_VARIABLE) else { return };
    let mut store = Store::open(Path::new(&dir)).expect("open store");
    for i in 0..BURST {
        let name = format!("{i:03}.png");
        let stamp = FileStamp { size: 1000 + i as u64, mtime_ns: i as i64 };
        if store.is_processed("north", &name, stamp).expect("look up") {
            continue;
        }
        let baseline = Baseline {
            capture: name.clone(),
            taken_at: SystemTime::now(),
            sha256: format!("{i:064}"),
            analysis: vec![i as u8; 4096],
        };
        let event =
            NewEvent { site: "north".into(), payload: json!({"type": "change", "capture": name}) };
        let file = ProcessedFile {
            source: "north".into(),
            name: name.clone(),
            stamp,
            sha256: baseline.sha256.clone(),
        };
        store.commit_analysis("north", Some(&baseline), Some(event), Some(&file)).expect("commit");
    }
}

fn spawn_writer(dir: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["state::burst_writer", "--exact", "--ignored", "--test-threads=1"])
        .env(DIR_VARIABLE, dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the writer")
}

/// Outbox events by capture name, checking that seq increases with no repeats.
fn events_by_capture(store: &Store) -> HashMap<String, Vec<u64>> {
    let rows = store.outbox_peek(10 * BURST).expect("peek");
    let mut by_capture: HashMap<String, Vec<u64>> = HashMap::new();
    let mut last = 0;
    for row in rows {
        assert!(row.seq > last, "seq {} after {last}", row.seq);
        last = row.seq;
        let payload: serde_json::Value = serde_json::from_slice(&row.payload).expect("json");
        assert_eq!(payload["seq"], row.seq);
        let capture = payload["capture"].as_str().expect("capture").to_owned();
        by_capture.entry(capture).or_default().push(row.seq);
    }
    by_capture
}

#[tokio::test]
async fn sigkill_in_a_burst_loses_and_duplicates_nothing() {
    let state = temp();
    let reader = Store::open(state.path()).expect("open store");
    let mut writer = spawn_writer(state.path());
    eventually(Duration::from_secs(60), "the writer committed some captures", || {
        reader.outbox_depth().is_ok_and(|d| d.rows >= 20)
    })
    .await;
    writer.kill().expect("SIGKILL");
    writer.wait().expect("reap");
    drop(reader);

    let store = Store::open(state.path()).expect("reopen after the kill");
    assert_eq!(store.integrity_check().expect("check"), Vec::<String>::new());
    let events = events_by_capture(&store);
    let processed = events.len();
    println!("killed after {processed} of {BURST} captures");
    for (i, name) in (0..processed).map(|i| (i, format!("{i:03}.png"))) {
        assert_eq!(events.get(&name).map(Vec::len), Some(1), "{name}: one event");
        let stamp = FileStamp { size: 1000 + i as u64, mtime_ns: i as i64 };
        assert!(store.is_processed("north", &name, stamp).expect("look up"), "{name} processed");
    }
    let baseline = store.previous("north").expect("read").expect("a baseline");
    assert_eq!(
        baseline.capture,
        format!("{:03}.png", processed - 1),
        "baseline moved with its event"
    );
    drop(store);

    // Restart: the rest is processed, nothing twice.
    let status = spawn_writer(state.path()).wait().expect("second writer");
    assert!(status.success());
    let store = Store::open(state.path()).expect("reopen");
    assert_eq!(store.integrity_check().expect("check"), Vec::<String>::new());
    let events = events_by_capture(&store);
    assert_eq!(events.len(), BURST);
    assert!(events.values().all(|seqs| seqs.len() == 1), "exactly one event per capture");
}
