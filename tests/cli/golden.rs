//! Golden tests: the Rust analysis against training/reference.py on real images.
//!
//! Each `tests/golden/*.json` file (written by the Python reference) holds one pair:
//! ```json
//! {"before": "brunei-s2/images/2018_01_patch_018.tif",   // relative to ../shared/data
//!  "after":  "brunei-s2/images/2022_02_patch_018.tif",
//!  "mask":   null,                                        // or a path relative to ../shared/data
//!  "tile":   128,                                         // analysis.tile used
//!  "model":  "encoder-fp32",                              // models/<model>.onnx
//!  "result": { ... the `check --json` object ... },
//!  "embeddings": {"before": [[128 floats], ...], "after": [[...], ...]}}  // one per analysed tile
//! ```
//! Agreement required: embedding cosine ≥ 0.999 per tile, distances within 1 % (5 % for int8, see
//! `tolerance`), the same decisions except where the reference distance is within that tolerance
//! of the threshold, the same vegetation directions. Skipped, saying so, when tests/golden or
//! ../shared/data is absent.

use std::path::{Path, PathBuf};

use edge_change::analysis::{decode, fit_to, Analyzer, Encoder, Mask, Settings};
use serde_json::Value;

use crate::harness::{repo, run, shared_data};

fn golden_files() -> Option<Vec<PathBuf>> {
    let dir = repo().join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    if files.is_empty() {
        println!("skipped: no tests/golden/*.json");
        return None;
    }
    Some(files)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-12)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn embeddings(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).expect("embeddings are arrays of floats")
}

/// Relative distance tolerance per encoding. fp32 must agree within 1 % (the issue's bound). Two
/// int8 runtimes round requantization differently (tract vs onnxruntime `QLinearConv`), which moves
/// distances by up to a few percent while embeddings stay at cosine ≥ 0.999, so int8 gets 5 %.
fn tolerance(model: &str) -> f64 {
    if model.ends_with("int8") {
        0.05
    } else {
        0.01
    }
}

fn close(ours: f64, theirs: f64, tolerance: f64) -> bool {
    (ours - theirs).abs() <= tolerance * theirs.abs().max(1e-3)
}

#[test]
fn rust_agrees_with_the_python_reference() {
    let Some(files) = golden_files() else { return };
    let Some(data) = shared_data() else { return };
    // Every disagreement of every file, reported together.
    let mut problems: Vec<String> = Vec::new();
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut check = |ok: bool, what: String| {
            if !ok {
                problems.push(format!("{name}: {what}"));
            }
        };
        let g: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("read golden"))
            .expect("golden json");
        let model_name = g["model"].as_str().expect("model");
        let model = repo().join("models").join(format!("{model_name}.onnx"));
        let tol = tolerance(model_name);
        let result = &g["result"];
        let threshold = f(&result["threshold"]);
        let settings = Settings {
            tile: g["tile"].as_u64().expect("tile") as u32,
            threshold: Some(threshold),
            ..Settings::default()
        };
        let analyzer = Analyzer::new(Encoder::load(&model).expect("model"), settings);
        let path = |key: &str| g[key].as_str().map(|p| data.join(p));
        let (before_path, after_path) =
            (path("before").expect("before"), path("after").expect("after"));
        let mask = path("mask").map(|m| Mask::load(&m, u64::MAX).expect("mask"));
        let before = decode::decode_file(&before_path, u64::MAX).expect("before");
        let after =
            fit_to(decode::decode_file(&after_path, u64::MAX).expect("after"), before.dimensions());
        let ours_before = analyzer.embed_capture(&before, mask.as_ref()).expect("embed before");
        let ours_after = analyzer.embed_capture(&after, mask.as_ref()).expect("embed after");

        for (side, ours) in [("before", &ours_before), ("after", &ours_after)] {
            let theirs = embeddings(&g["embeddings"][side]);
            check(ours.tiles.len() == theirs.len(), format!("{side} tile count"));
            for (i, (o, t)) in ours.tiles.iter().zip(&theirs).enumerate() {
                let c = cosine(&o.embedding, t);
                check(c >= 0.999, format!("{side} tile {i} cosine {c:.5}"));
            }
        }

        let cmp = analyzer.compare(&ours_before, &ours_after).expect("compare");
        let tiles = result["tiles"].as_array().expect("tiles");
        check(cmp.tiles.len() == tiles.len(), "tile count".into());
        // Decisions are only required to agree where the reference is not within the distance
        // tolerance of the threshold.
        let borderline = |d: f64| (d - threshold).abs() <= tol * threshold;
        for (o, t) in cmp.tiles.iter().zip(tiles) {
            let d = f(&t["distance"]);
            check(
                close(o.distance, d, tol),
                format!("tile {:?} distance {:.6} vs {d}", o.tile, o.distance),
            );
            check(
                borderline(d) || t["changed"] == o.changed,
                format!("tile {:?} changed {} vs {}", o.tile, o.changed, t["changed"]),
            );
        }
        let distance = f(&result["distance"]);
        check(
            close(cmp.distance, distance, tol),
            format!("distance {:.6} vs {distance}", cmp.distance),
        );
        check(
            borderline(distance) || result["changed"] == cmp.changed,
            format!("changed {} vs {}", cmp.changed, result["changed"]),
        );
        let direction = |d| serde_json::to_value(d).expect("direction");
        check(
            direction(cmp.vegetation.direction) == result["vegetation"]["direction"],
            "hsv direction".into(),
        );
        check(
            direction(cmp.learned.direction) == result["learned"]["direction"],
            format!("learned direction {:?} vs {}", cmp.learned, result["learned"]),
        );
        check(
            (cmp.vegetation.before - f(&result["vegetation"]["before"])).abs() < 1e-3,
            "greenery".into(),
        );
        if model_name.ends_with("int8") {
            continue; // the binary runs the same library code; once per pair (fp32) is enough
        }

        // The same pair through the binary gives the same decision.
        let config = tempfile::tempdir().expect("temp");
        let config_file = config.path().join("c.toml");
        std::fs::write(&config_file, format!("[analysis]\ntile = {}\n", g["tile"]))
            .expect("config");
        let mut args = vec![
            "check".to_owned(),
            before_path.display().to_string(),
            after_path.display().to_string(),
            "--json".into(),
            "--model".into(),
            model.display().to_string(),
            "--threshold".into(),
            threshold.to_string(),
            "--config".into(),
            config_file.display().to_string(),
        ];
        if let Some(m) = path("mask") {
            args.extend(["--mask".to_owned(), m.display().to_string()]);
        }
        let out = run(Path::new("."), &args.iter().map(String::as_str).collect::<Vec<_>>());
        let o = &out.json_lines()[0];
        check(o["changed"] == cmp.changed, format!("binary changed {}", o["changed"]));
        check(
            close(f(&o["distance"]), cmp.distance, 1e-5),
            format!("binary distance {}", o["distance"]),
        );
    }
    assert!(problems.is_empty(), "{} disagreements:\n{}", problems.len(), problems.join("\n"));
    println!("{} golden pairs agree", files.len());
}
