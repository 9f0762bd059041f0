//! `check` on one pair with the real model: decisions, exit codes, JSON fields and types, the
//! human summary, masks, different sizes, --visualize and a model that disagrees with its card.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::harness::{cleared, field, model, repo, run, run_plain, save, temp, BIN};

/// Asserts the schema-1 field list, order and types of one analysed pair.
pub fn assert_report_shape(o: &Value) {
    let keys: Vec<&str> = o.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "schema",
            "before",
            "after",
            "changed",
            "distance",
            "threshold",
            "tiles",
            "vegetation",
            "learned",
            "direction",
            "model",
            "timings_ms"
        ]
    );
    assert_eq!(o["schema"], 1);
    assert!(o["before"].is_string() && o["after"].is_string() && o["changed"].is_boolean());
    assert!(o["distance"].is_f64() && o["threshold"].is_f64());
    for tile in o["tiles"].as_array().expect("tiles") {
        for k in ["x", "y", "w", "h"] {
            assert!(tile[k].is_u64(), "{k} in {tile}");
        }
        assert!(tile["distance"].is_f64() && tile["changed"].is_boolean());
    }
    for measure in ["vegetation", "learned"] {
        let m = &o[measure];
        assert!(m["before"].is_number() && m["after"].is_number() && m["delta"].is_number(), "{m}");
        assert!(["gain", "loss", "none"].contains(&m["direction"].as_str().expect("direction")));
    }
    assert!(["gain", "loss", "none"].contains(&o["direction"].as_str().expect("direction")));
    assert!(o["model"]["name"].is_string());
    assert_eq!(o["model"]["sha256"].as_str().map(str::len), Some(64));
    for t in ["decode", "encode", "total"] {
        assert!(o["timings_ms"][t].is_number(), "timings_ms.{t}");
    }
}

#[test]
fn identical_captures_do_not_change() {
    let Some(_) = model() else { return };
    let dir = temp();
    save(dir.path(), "a.png", &field(300, 200));
    let out = run(dir.path(), &["check", "a.png", "a.png", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let o = &out.json_lines()[0];
    assert_report_shape(o);
    assert_eq!(o["changed"], false);
    assert_eq!(o["direction"], "none");
    assert_eq!(o["tiles"].as_array().map(Vec::len), Some(6), "300x200 in 128-px tiles: 3 x 2");
    assert_eq!(o["tiles"][2]["x"], 172, "the last column is flush with the edge");
    assert!(o["distance"].as_f64().expect("distance") < 1e-4);
    assert_eq!(o["vegetation"]["before"], o["vegetation"]["after"]);
    assert!(o["vegetation"]["before"].as_f64().expect("greenery") > 0.9, "the field is green");
}

#[test]
fn threshold_decides_and_sets_the_exit_code() {
    let Some(_) = model() else { return };
    let dir = temp();
    save(dir.path(), "a.png", &field(256, 128));
    save(dir.path(), "b.png", &cleared(256, 128));
    let changed =
        run(dir.path(), &["check", "a.png", "b.png", "--json", "--threshold", "0.000001"]);
    assert_eq!(changed.code, 1, "{}", changed.stderr);
    let o = &changed.json_lines()[0];
    assert_report_shape(o);
    assert_eq!(o["changed"], true);
    assert_eq!(o["threshold"], 0.000001);
    assert_eq!(o["vegetation"]["direction"], "loss", "soil replaced half the field");

    let unchanged = run(dir.path(), &["check", "a.png", "b.png", "--json", "--threshold", "1e9"]);
    assert_eq!(unchanged.code, 0, "{}", unchanged.stderr);
    assert_eq!(unchanged.json_lines()[0]["direction"], "none");
}

#[test]
fn human_summary() {
    let Some(_) = model() else { return };
    let dir = temp();
    save(dir.path(), "a.png", &field(128, 128));
    save(dir.path(), "b.png", &cleared(128, 128));
    let out = run(dir.path(), &["check", "a.png", "b.png", "--threshold", "0.000001"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.starts_with("CHANGED  a.png -> b.png\n"), "{}", out.stdout);
    assert!(out.stdout.contains("> threshold 0.000"), "{}", out.stdout);
    assert!(out.stdout.contains("greenery (HSV) 100.0% -> "), "{}", out.stdout);
    assert!(out.stdout.contains("changed tiles: 0,0 128x128"), "{}", out.stdout);
    let same = run(dir.path(), &["check", "a.png", "a.png"]);
    assert_eq!(same.code, 0);
    assert!(same.stdout.starts_with("no change  a.png -> a.png\n"), "{}", same.stdout);
}

#[test]
fn after_of_another_size_and_other_formats() {
    let Some(_) = model() else { return };
    let dir = temp();
    save(dir.path(), "a.png", &field(256, 256));
    save(dir.path(), "b.jpg", &field(512, 512));
    save(dir.path(), "c.bmp", &field(256, 256));
    for after in ["b.jpg", "c.bmp"] {
        let out = run(dir.path(), &["check", "a.png", after, "--json"]);
        assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
        assert_eq!(out.json_lines()[0]["tiles"].as_array().map(Vec::len), Some(4));
    }
}

#[test]
fn mask_skips_tiles_and_greenery() {
    let Some(_) = model() else { return };
    let dir = temp();
    save(dir.path(), "a.png", &field(256, 128));
    save(dir.path(), "b.png", &cleared(256, 128));
    // Only the left tile is analysed: the cleared part is mostly in the right one.
    let mask =
        image::RgbImage::from_fn(256, 128, |x, _| image::Rgb([if x < 128 { 255 } else { 0 }; 3]));
    save(dir.path(), "m.png", &mask);
    let out = run(dir.path(), &["check", "a.png", "b.png", "--mask", "m.png", "--json"]);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let o = &out.json_lines()[0];
    assert_eq!(o["tiles"].as_array().map(Vec::len), Some(1));
    assert_eq!(o["tiles"][0]["x"], 0);

    let black = image::RgbImage::new(256, 128);
    save(dir.path(), "black.png", &black);
    run(dir.path(), &["check", "a.png", "b.png", "--mask", "black.png"])
        .assert_error(&["black.png", "mask leaves no pixel to analyse"]);
}

#[test]
fn visualize_writes_side_by_side() {
    let Some(_) = model() else { return };
    let dir = temp();
    save(dir.path(), "a.png", &field(256, 128));
    save(dir.path(), "b.png", &cleared(256, 128));
    let out = run(
        dir.path(),
        &["check", "a.png", "b.png", "--threshold", "0.000001", "--visualize", "v.png"],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let picture = image::open(dir.path().join("v.png")).expect("visualization").to_rgb8();
    assert_eq!(picture.dimensions(), (2 * 256 + 8, 128));
    assert_eq!(picture.get_pixel(0, 0), &image::Rgb([255, 0, 0]), "changed tile outlined");
}

#[test]
fn model_disagreeing_with_its_card_is_refused() {
    let Some(onnx) = model() else { return };
    let dir = temp();
    save(dir.path(), "a.png", &field(128, 128));
    fs::copy(&onnx, dir.path().join("m.onnx")).expect("copy model");
    let card = fs::read_to_string(onnx.with_extension("json")).expect("card");
    let mut card: Value = serde_json::from_str(&card).expect("card json");
    let original_sha = card["sha256"].clone();
    card["sha256"] = Value::from("0".repeat(64));
    fs::write(dir.path().join("m.json"), card.to_string()).expect("write card");
    run(dir.path(), &["check", "a.png", "a.png", "--model", "m.onnx"]).assert_error(&[
        "m.onnx",
        "sha256",
        "disagrees with its card",
    ]);

    card["sha256"] = original_sha;
    card["input"]["size"] = Value::from(64);
    fs::write(dir.path().join("m.json"), card.to_string()).expect("write card");
    run(dir.path(), &["check", "a.png", "a.png", "--model", "m.onnx"])
        .assert_error(&["m.onnx", "input `image` has shape"]);

    fs::remove_file(dir.path().join("m.json")).expect("remove card");
    run(dir.path(), &["check", "a.png", "a.png", "--model", "m.onnx"])
        .assert_error(&["m.json", "cannot read"]);
}

#[test]
fn model_is_found_from_the_executable_location() {
    let Some(_) = model() else { return };
    // The temp dir has no models/: the binary finds the repo's through its own path.
    if !Path::new(BIN).starts_with(repo()) {
        println!("skipped: the binary is built outside the repo (CARGO_TARGET_DIR)");
        return;
    }
    let dir = temp();
    save(dir.path(), "a.png", &field(128, 128));
    let out = run_plain(dir.path(), &["check", "a.png", "a.png", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}
