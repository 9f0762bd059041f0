//! config/examples/: every example passes `edge-change config check`. Directory sources name
//! /srv/captures/…, which `config check` requires to exist: the test checks a copy whose
//! /srv/captures is a temp dir holding those folders.

use std::fs;

use crate::harness::{repo, run, temp};

#[test]
fn every_example_config_passes_config_check() {
    let dir = temp();
    let captures = dir.path().join("captures");
    let mut names = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(repo().join("config/examples"))
        .expect("config/examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).expect("read example");
        let text = text.replace("\"/srv/captures/", &format!("\"{}/", captures.display()));
        for line in text.lines() {
            let folder = line.strip_prefix("path = \"").and_then(|l| l.strip_suffix('"'));
            if let Some(folder) = folder.filter(|f| f.starts_with(&*captures.to_string_lossy())) {
                fs::create_dir_all(folder).expect("capture folder");
            }
        }
        fs::write(dir.path().join(&name), text).expect("write copy");
        let out = run(dir.path(), &["config", "check", "--config", &name]);
        assert_eq!(out.code, 0, "{name}:\n{}", out.stderr);
        names.push(name);
    }
    for wanted in [
        "ip-camera.toml",
        "jetson-csi.toml",
        "rpicam-still.toml",
        "satellite-drop.toml",
        "usb-webcam.toml",
    ] {
        assert!(names.iter().any(|n| n == wanted), "config/examples/{wanted} missing");
    }
}
