//! `edge-change config default|check`.

use std::fs;

use crate::harness::{run, temp};

#[test]
fn default_config_round_trips_through_check() {
    let dir = temp();
    let out = run(dir.path(), &["config", "default"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("[analysis]") && out.stdout.contains("max_pixels = 40000000"));
    fs::write(dir.path().join("c.toml"), &out.stdout).expect("write");
    let check = run(dir.path(), &["config", "check", "--config", "c.toml"]);
    assert_eq!(check.code, 0, "{}", check.stderr);
}

#[test]
fn invalid_config_lists_every_problem_and_exits_78() {
    let dir = temp();
    fs::write(dir.path().join("c.toml"), "[analysis]\ntile = 3\n[vegetation]\nmin_delta = 2.0\n")
        .expect("write");
    let out = run(dir.path(), &["config", "check", "--config", "c.toml"]);
    assert_eq!(out.code, 78);
    assert!(out.stderr.contains("c.toml: analysis.tile: "), "{}", out.stderr);
    assert!(out.stderr.contains("c.toml: vegetation.min_delta: "), "{}", out.stderr);

    fs::write(dir.path().join("u.toml"), "[analysis]\nsize = 3\n").expect("write");
    let out = run(dir.path(), &["config", "check", "--config", "u.toml"]);
    assert_eq!(out.code, 78);
    assert!(out.stderr.contains("u.toml:2: unknown field `size`"), "{}", out.stderr);
}
