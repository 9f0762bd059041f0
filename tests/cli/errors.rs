//! Every error of issue 3: one line on stderr naming the file and the reason, exit code 2, no
//! panic. These run without the model: a single check decodes before it loads the model.

use std::fs;

use crate::harness::{field, run, save, temp};

#[test]
fn missing_file() {
    let dir = temp();
    save(dir.path(), "a.png", &field(64, 64));
    run(dir.path(), &["check", "a.png", "nope.png"]).assert_error(&["nope.png", "cannot read"]);
}

#[test]
fn empty_file() {
    let dir = temp();
    save(dir.path(), "a.png", &field(64, 64));
    fs::write(dir.path().join("empty.png"), b"").expect("write");
    run(dir.path(), &["check", "empty.png", "a.png"]).assert_error(&["empty.png", "empty file"]);
}

#[test]
fn text_file_named_png() {
    let dir = temp();
    save(dir.path(), "a.png", &field(64, 64));
    fs::write(dir.path().join("notes.png"), "this is not an image\n").expect("write");
    run(dir.path(), &["check", "a.png", "notes.png"])
        .assert_error(&["notes.png", "not a PNG, JPEG, TIFF, BMP or WebP image"]);
}

#[test]
fn truncated_png_and_jpeg() {
    let dir = temp();
    save(dir.path(), "a.png", &field(64, 64));
    for name in ["b.png", "b.jpg"] {
        save(dir.path(), name, &field(200, 200));
        let bytes = fs::read(dir.path().join(name)).expect("read");
        let cut = format!("cut-{name}");
        fs::write(dir.path().join(&cut), &bytes[..bytes.len() * 2 / 3]).expect("write");
        let kind = if name.ends_with("png") { "truncated PNG" } else { "truncated JPEG" };
        run(dir.path(), &["check", "a.png", &cut]).assert_error(&[&cut, kind]);
    }
}

#[test]
fn image_over_the_pixel_limit() {
    let dir = temp();
    save(dir.path(), "a.png", &field(64, 64));
    save(dir.path(), "big.png", &field(300, 200));
    fs::write(dir.path().join("c.toml"), "[analysis]\nmax_pixels = 50000\n").expect("write");
    run(dir.path(), &["check", "a.png", "big.png", "--config", "c.toml"]).assert_error(&[
        "big.png",
        "300x200",
        "pixel limit of 50000",
    ]);
}

#[test]
fn mask_of_the_wrong_size() {
    let dir = temp();
    save(dir.path(), "a.png", &field(64, 64));
    save(dir.path(), "m.png", &field(32, 64));
    run(dir.path(), &["check", "a.png", "a.png", "--mask", "m.png"])
        .assert_error(&["m.png", "mask is 32x64 but the capture is 64x64"]);
}

#[test]
fn error_as_json_object() {
    let dir = temp();
    save(dir.path(), "a.png", &field(64, 64));
    let out = run(dir.path(), &["check", "a.png", "gone.png", "--json"]);
    out.assert_error(&["gone.png"]);
    let objects = out.json_lines();
    assert_eq!(objects.len(), 1);
    let o = &objects[0];
    assert_eq!(o["schema"], 1);
    assert_eq!(o["before"], "a.png");
    assert_eq!(o["after"], "gone.png");
    assert!(o["error"].as_str().is_some_and(|e| e.contains("gone.png: cannot read")));
    let keys: Vec<&String> = o.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["schema", "before", "after", "error"]);
}

#[test]
fn malformed_pairs_csv() {
    let dir = temp();
    fs::write(dir.path().join("p.csv"), "old,new\na.png,b.png\n").expect("write");
    run(dir.path(), &["check", "--pairs", "p.csv"]).assert_error(&["p.csv", "malformed pairs CSV"]);
    run(dir.path(), &["check", "--pairs", "none.csv"]).assert_error(&["none.csv", "cannot read"]);
}

#[test]
fn invalid_threshold_and_usage() {
    let dir = temp();
    save(dir.path(), "a.png", &field(64, 64));
    run(dir.path(), &["check", "a.png", "a.png", "--threshold", "0"])
        .assert_error(&["--threshold"]);
    let usage = run(dir.path(), &["check", "a.png"]);
    assert_eq!(usage.code, 2, "clap usage errors exit 2 too");
}
