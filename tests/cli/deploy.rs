//! deploy/: the systemd unit passes `systemd-analyze verify` and the sysusers file parses, where
//! those tools exist (skipped with a message otherwise: CI images without systemd).

use std::fs;
use std::process::Command;

use crate::harness::{repo, temp, BIN};

/// Whether `tool` runs here; prints why the test is skipped when it does not.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        println!("skipped: {tool} not found (install systemd)");
    }
    found
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        return;
    }
    let unit = fs::read_to_string(repo().join("deploy/edge-change.service")).expect("read unit");
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    assert!(unit.contains("\nExecStart=/usr/bin/edge-change run "), "ExecStart changed: {unit}");
    let unit = unit.replace("\nExecStart=/usr/bin/edge-change ", &format!("\nExecStart={BIN} "));
    let dir = temp();
    let path = dir.path().join("edge-change.service");
    fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Warnings about our unit (unknown keys, bad syntax) do not change the exit code: fail on them
    // too. Lines about other units on this machine are not ours to judge.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("edge-change.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn unit_keeps_the_contract() {
    let unit = fs::read_to_string(repo().join("deploy/edge-change.service")).expect("read unit");
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for wanted in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "User=edge-change",
        "SupplementaryGroups=video",
        "StateDirectory=edge-change",
        "ConfigurationDirectory=edge-change",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        // The credential name the MQTT sink looks up in $CREDENTIALS_DIRECTORY.
        "LoadCredential=mqtt-password:/etc/edge-change/mqtt-password",
    ] {
        assert!(lines.contains(&wanted), "{wanted} missing from the unit");
    }
    assert!(lines.iter().any(|l| l.starts_with("WatchdogSec=")), "WatchdogSec= missing");
    // PrivateDevices= would hide the cameras; PrivateTmp= the Jetson's /tmp/argus_socket.
    for banned in ["PrivateDevices=", "PrivateTmp="] {
        assert!(!lines.iter().any(|l| l.starts_with(banned)), "{banned} must not be set");
    }
}

#[test]
fn sysusers_file_creates_the_user_in_group_video() {
    if !have("systemd-sysusers") {
        return;
    }
    let dir = temp();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    let conf = dir.path().join("edge-change.conf");
    fs::copy(repo().join("deploy/edge-change.sysusers"), &conf).expect("copy");
    // --dry-run into an empty root: parses the file and says what it would create, writes nothing.
    let out = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(format!("--root={}", root.display()))
        .arg(&conf)
        .output()
        .expect("run systemd-sysusers");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Creating user 'edge-change'"), "{said}");
    assert!(!root.join("etc/passwd").exists(), "dry run wrote a file");
}

#[test]
fn install_script_stages_the_package_layout_and_uninstalls() {
    if !have("systemd-sysusers") {
        return;
    }
    let dir = temp();
    let root = dir.path().join("root");
    let script = repo().join("deploy/install.sh");
    let install = |args: &[&str]| {
        let out = Command::new("bash").arg(&script).args(args).output().expect("run install.sh");
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "install.sh {args:?}: {said}");
    };
    let root_arg = root.to_str().expect("utf-8 temp path");
    install(&["--binary", BIN, "--root", root_arg]);
    for file in [
        "usr/bin/edge-change",
        "lib/systemd/system/edge-change.service",
        "usr/lib/sysusers.d/edge-change.conf",
        "etc/edge-change/config.toml",
        "etc/edge-change/mqtt-password",
        "usr/share/edge-change/models/encoder-fp32.onnx",
        "usr/share/edge-change/models/encoder-fp32.json",
    ] {
        assert!(root.join(file).is_file(), "{file} not installed");
    }
    let passwd = fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(passwd.contains("edge-change:x:"), "{passwd}");
    // A second install keeps the administrator's configuration.
    fs::write(root.join("etc/edge-change/config.toml"), "workers = 1\n").expect("edit config");
    install(&["--binary", BIN, "--root", root_arg]);
    let config = fs::read_to_string(root.join("etc/edge-change/config.toml")).expect("config");
    assert_eq!(config, "workers = 1\n");
    assert!(root.join("etc/edge-change/config.toml.new").is_file());

    install(&["--uninstall", "--root", root_arg]);
    assert!(!root.join("usr/bin/edge-change").exists());
    assert!(root.join("etc/edge-change/config.toml").is_file(), "uninstall kept the config");
    install(&["--uninstall", "--purge", "--root", root_arg]);
    assert!(!root.join("etc/edge-change").exists());
}
