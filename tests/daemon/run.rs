//! `edge-change run` end to end: the real binary and model on generated captures (and on a real
//! pair from ../shared/data when present) — events in order, error events that keep the baseline,
//! restarts, SIGHUP, SIGKILL in a burst, systemd notifications and start-up failures.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use edge_change::state::Store;
use image::ImageFormat;

use crate::harness::temp;
use crate::running::{
    config, directory_source, drop_in, encode, events, field, image, model, run_to_exit,
    wait_events, Daemon, BIN,
};

fn png(seed: u32) -> Vec<u8> {
    encode(&image(seed), ImageFormat::Png)
}

fn pairs(events: &[serde_json::Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            let previous = e["previous"].as_str().unwrap_or("-").to_owned();
            (field(e, "type").to_owned(), previous, field(e, "capture").to_owned())
        })
        .collect()
}

fn assert_seq_increases(events: &[serde_json::Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq not increasing: {seqs:?}");
    let ids: HashSet<&str> = events.iter().map(|e| field(e, "id")).collect();
    assert_eq!(ids.len(), events.len(), "ids are unique");
}

#[test]
fn captures_become_events_in_order_and_errors_keep_the_baseline() {
    let Some(model) = model() else { return };
    let root = temp();
    let drop = root.path().join("north");
    let sources = directory_source("north", &drop);
    let mut daemon = Daemon::start(root.path(), &config(root.path(), &model, &sources));

    drop_in(&drop, "01-a.png", &png(1));
    // The same pixels in another format: other bytes, distance 0.
    drop_in(&drop, "02-b.bmp", &encode(&image(1), ImageFormat::Bmp));
    drop_in(&drop, "03-c.png", &png(2));
    let truncated = png(3);
    drop_in(&drop, "04-d.png", &truncated[..truncated.len() / 2]);
    drop_in(&drop, "05-e.png", &png(4));
    // Byte for byte the previous capture: recorded, no event, and it does not move the baseline.
    drop_in(&drop, "06-e-again.png", &png(4));
    drop_in(&drop, "07-f.png", &png(5));
    let found = wait_events(&mut daemon, 5);

    let expected = [
        ("no_change", "01-a.png", "02-b.bmp"),
        ("change", "02-b.bmp", "03-c.png"),
        ("error", "03-c.png", "04-d.png"),
        ("change", "03-c.png", "05-e.png"),
        ("change", "05-e.png", "07-f.png"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(t, p, c)| (t.to_string(), p.to_string(), c.to_string())).collect();
    assert_eq!(pairs(&found), expected, "log:\n{}", daemon.log());
    assert_seq_increases(&found);
    for event in &found {
        assert_eq!(field(event, "device"), "test-device");
        assert_eq!(field(event, "site"), "north");
        assert_eq!(event["schema"], 1);
        assert_eq!(field(event, "before"), field(event, "previous"));
        assert_eq!(field(event, "after"), field(event, "capture"));
        assert!(field(event, "captured_at").ends_with('Z'));
        assert!(field(event, "previous_captured_at").ends_with('Z'));
    }
    assert_eq!(found[0]["distance"], 0.0);
    assert_eq!(found[0]["changed"], false);
    assert_eq!(found[0]["direction"], "none");
    assert!(found[1]["distance"].as_f64().expect("distance") > 0.0);
    assert_eq!(found[1]["changed"], true);
    assert!(found[1]["tiles"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(field(&found[2], "error").contains("04-d.png: truncated PNG"), "{}", found[2]);
    // Each event is logged in its capture's span with the event's id.
    let id = field(&found[3], "id");
    daemon.wait_log(&format!("capture=05-e.png id=\"{id}\""));
    daemon.stop();
}

#[test]
fn files_added_while_down_are_processed_after_a_restart_and_none_twice() {
    let Some(model) = model() else { return };
    let root = temp();
    let drop = root.path().join("north");
    let config = config(root.path(), &model, &directory_source("north", &drop));
    let mut daemon = Daemon::start(root.path(), &config);
    drop_in(&drop, "a.png", &png(10));
    drop_in(&drop, "b.png", &png(11));
    wait_events(&mut daemon, 1);
    daemon.stop();

    drop_in(&drop, "c.png", &png(12));
    drop_in(&drop, "d.png", &png(13));
    let mut daemon = Daemon::start(root.path(), &config);
    wait_events(&mut daemon, 3);
    // One more after the catch-up: had anything been taken twice, it would show before this.
    drop_in(&drop, "e.png", &png(14));
    let found = wait_events(&mut daemon, 4);
    daemon.stop();
    let captures: Vec<&str> = found.iter().map(|e| field(e, "capture")).collect();
    assert_eq!(captures, ["b.png", "c.png", "d.png", "e.png"]);
    assert_eq!(field(&found[1], "previous"), "b.png", "compared across the restart");
    assert_seq_increases(&found);
}

#[test]
fn sighup_keeps_an_invalid_config_out_and_swaps_a_valid_one_in() {
    let Some(model) = model() else { return };
    let root = temp();
    let north = root.path().join("north");
    let valid = config(root.path(), &model, &directory_source("north", &north));
    let mut daemon = Daemon::start(root.path(), &valid);

    let broken =
        format!("{valid}\n[sources.cam]\ntype = \"command\"\ncommand = []\ninterval = \"0s\"\n");
    std::fs::write(root.path().join("config.toml"), broken).expect("write");
    daemon.signal("-HUP");
    daemon.wait_log("sources.cam.interval: must be longer than zero");
    drop_in(&north, "a.png", &png(20));
    drop_in(&north, "b.png", &png(21));
    wait_events(&mut daemon, 1);

    let south = root.path().join("south");
    let grown = format!("{valid}{}", directory_source("south", &south));
    std::fs::write(root.path().join("config.toml"), grown).expect("write");
    daemon.signal("-HUP");
    daemon.wait_log("configuration reloaded");
    drop_in(&south, "s1.png", &png(22));
    drop_in(&south, "s2.png", &png(23));
    drop_in(&north, "c.png", &png(24));
    let found = wait_events(&mut daemon, 3);
    daemon.stop();
    let sites: HashMap<&str, &str> =
        found.iter().map(|e| (field(e, "capture"), field(e, "site"))).collect();
    assert_eq!(sites["s2.png"], "south");
    assert_eq!(sites["c.png"], "north");
}

#[test]
fn sigkill_in_a_burst_of_200_then_restart_gives_every_capture_one_event() {
    const BURST: usize = 200;
    let Some(model) = model() else { return };
    let root = temp();
    let drop = root.path().join("north");
    let config = config(root.path(), &model, &directory_source("north", &drop));
    let mut daemon = Daemon::start(root.path(), &config);
    for i in 0..BURST {
        drop_in(&drop, &format!("{i:03}.png"), &png(1000 + i as u32));
    }
    wait_events(&mut daemon, 20);
    daemon.signal("-KILL");
    assert_eq!(daemon.wait_exit(), -1);
    let interrupted = events(&root.path().join("state")).len();
    assert!(interrupted < BURST - 1, "killed before the end ({interrupted} events)");

    let mut daemon = Daemon::start(root.path(), &config);
    let found = wait_events(&mut daemon, BURST - 1);
    daemon.stop();
    assert_eq!(found.len(), BURST - 1);
    assert_seq_increases(&found);
    let mut per_capture: HashMap<&str, usize> = HashMap::new();
    for e in &found {
        *per_capture.entry(field(e, "capture")).or_default() += 1;
    }
    assert!(per_capture.values().all(|&n| n == 1), "an event twice: {per_capture:?}");
    assert!(!per_capture.contains_key("000.png"), "the first capture is the baseline");
    assert_eq!(per_capture.len(), BURST - 1);
    let store = Store::open(&root.path().join("state")).expect("open");
    assert_eq!(store.integrity_check().expect("check"), Vec::<String>::new());
}

#[test]
fn systemd_hears_ready_status_and_watchdog_pings() {
    let Some(model) = model() else { return };
    let root = temp();
    let drop = root.path().join("north");
    let config = config(root.path(), &model, &directory_source("north", &drop));
    let mut daemon = Daemon::start_with(root.path(), &config, &[("WATCHDOG_USEC", "400000")]);
    daemon.wait_notification("WATCHDOG=1");
    drop_in(&drop, "a.png", &png(30));
    drop_in(&drop, "b.png", &png(31));
    wait_events(&mut daemon, 1);
    daemon.wait_notification("STATUS=captures 2, changes 1, errors 0, outbox 1");
    daemon.wait_notification("WATCHDOG=1");
    daemon.signal("-TERM");
    daemon.wait_notification("STOPPING=1");
    assert_eq!(daemon.wait_exit(), 0);
}

#[test]
fn a_real_pair_gives_the_same_numbers_as_check() {
    let Some(model) = model() else { return };
    let pair = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/sztaki/Szada_1");
    if !pair.is_dir() {
        println!("skipped: ../shared/data/sztaki/Szada_1 not found");
        return;
    }
    let root = temp();
    let drop = root.path().join("szada");
    // The card's calibrated threshold, as `check` uses it.
    let config = config(root.path(), &model, &directory_source("szada", &drop))
        .replace("threshold = 0.000001", "threshold = 0.0");
    let mut daemon = Daemon::start(root.path(), &config);
    for name in ["before.bmp", "after.bmp"] {
        drop_in(&drop, name, &std::fs::read(pair.join(name)).expect("read pair"));
    }
    let event = wait_events(&mut daemon, 1).remove(0);
    daemon.stop();

    let out = Command::new(BIN)
        .args(["check", "--json", "--model"])
        .arg(&model)
        .arg(pair.join("before.bmp"))
        .arg(pair.join("after.bmp"))
        .output()
        .expect("run check");
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check JSON");
    for key in ["changed", "distance", "threshold", "tiles", "vegetation", "learned", "direction"] {
        assert_eq!(event[key], check[key], "{key}: daemon vs check");
    }
    let kind = if check["changed"] == true { "change" } else { "no_change" };
    assert_eq!(field(&event, "type"), kind);
}

#[test]
fn configuration_mistakes_exit_78_with_every_key_path() {
    let root = temp();
    let (code, stderr) = run_to_exit(root.path(), "[analysis]\nsize = 3\n");
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("unknown field `size`") && stderr.contains("(key analysis.size)"),
        "{stderr}"
    );

    let (code, stderr) = run_to_exit(root.path(), "workers = \"two\"\n");
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("(key workers)"), "{stderr}");

    let several = "[sources.north]\ntype = \"directory\"\npath = \"/no/such/folder\"\n\
                   pattern = \"[\"\nsettle = \"soon\"\n\
                   [sources.cam]\ntype = \"command\"\ncommand = [\"true\"]\ninterval = \"0s\"\n\
                   mask = \"/no/such/mask.png\"\n";
    let (code, stderr) = run_to_exit(root.path(), several);
    assert_eq!(code, 78, "{stderr}");
    for key in [
        "sources.cam.interval",
        "sources.north.pattern",
        "sources.north.settle",
        "sources.north.path",
        "sources.cam.mask",
    ] {
        assert!(stderr.contains(&format!("config.toml: {key}: ")), "{key} in:\n{stderr}");
    }
    assert_eq!(stderr.lines().count(), 5, "one line per problem:\n{stderr}");
}

#[test]
fn start_up_failures_exit_1_with_one_line_naming_the_file() {
    let root = temp();
    let missing = root.path().join("nowhere/encoder.onnx");
    let text =
        format!("state_dir = {:?}\n[model]\npath = {missing:?}\n", root.path().join("state"));
    let (code, stderr) = run_to_exit(root.path(), &text);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("nowhere/encoder."), "{stderr}");

    let Some(model) = model() else { return };
    let text =
        format!("state_dir = \"/dev/null/state\"\n[model]\npath = {model:?}\n[mqtt]\nurl = \"\"\n");
    let (code, stderr) = run_to_exit(root.path(), &text);
    assert_eq!(code, 1, "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("/dev/null/state"), "{stderr}");
}

#[test]
fn a_camera_command_gives_events_and_a_failing_one_error_events() {
    let Some(model) = model() else { return };
    let root = temp();
    for (i, seed) in [(0, 40), (1, 41)] {
        std::fs::write(root.path().join(format!("img{i}.png")), png(seed)).expect("write");
    }
    // A "camera" that returns the two images in turn (the same bytes twice would be a duplicate).
    let camera =
        "n=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) > count; cat img$((n % 2)).png";
    let sources = format!(
        "[sources.cam]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", {camera:?}]\n\
         interval = \"300ms\"\ntimeout = \"10s\"\n\
         [sources.broken]\ntype = \"command\"\n\
         command = [\"sh\", \"-c\", \"echo no camera found >&2; exit 3\"]\ninterval = \"300ms\"\n"
    );
    let mut daemon = Daemon::start(root.path(), &config(root.path(), &model, &sources));
    let deadline = std::time::Instant::now() + crate::running::WITHIN;
    let found = loop {
        let found = wait_events(&mut daemon, 1);
        let has = |site: &str| found.iter().any(|e| field(e, "site") == site);
        if has("cam") && has("broken") {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "no events of both sources: {found:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    daemon.stop();
    let cam = found.iter().find(|e| field(e, "site") == "cam").expect("a cam event");
    assert_eq!(field(cam, "type"), "change");
    assert!(field(cam, "capture").starts_with("cam@"), "{cam}");
    let broken = found.iter().find(|e| field(e, "site") == "broken").expect("an error event");
    assert_eq!(field(broken, "type"), "error");
    assert_eq!(field(broken, "error"), "`sh` exited with status 3: no camera found");
    assert!(broken["previous"].is_null(), "no good capture yet: {broken}");
}
