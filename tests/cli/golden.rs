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
//! Agreement required: embedding cosine ≥ 0.999 per tile, the same decisions (pair and tiles,
//! except tiles whose reference distance is within 1 % of the threshold), distances within 1 %,
//! the same vegetation directions. Skipped, saying so, when tests/golden or ../shared/data is
//! absent.

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

fn within_1_percent(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 0.01 * theirs.abs().max(1e-3)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn embeddings(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).expect("embeddings are arrays of floats")
}

#[test]
fn rust_agrees_with_the_python_reference() {
    let Some(files) = golden_files() else { return };
    let Some(data) = shared_data() else { return };
    for file in &files {
        let name = file.display();
        let g: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("read golden"))
            .expect("golden json");
        let model =
            repo().join("models").join(format!("{}.onnx", g["model"].as_str().expect("model")));
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
            assert_eq!(ours.tiles.len(), theirs.len(), "{name}: {side} tile count");
            for (i, (o, t)) in ours.tiles.iter().zip(&theirs).enumerate() {
                let c = cosine(&o.embedding, t);
                assert!(c >= 0.999, "{name}: {side} tile {i} cosine {c}");
            }
        }

        let cmp = analyzer.compare(&ours_before, &ours_after).expect("compare");
        let tiles = result["tiles"].as_array().expect("tiles");
        assert_eq!(cmp.tiles.len(), tiles.len(), "{name}: tiles");
        let mut borderline = false;
        for (o, t) in cmp.tiles.iter().zip(tiles) {
            let d = f(&t["distance"]);
            assert!(within_1_percent(o.distance, d), "{name}: tile distance {} vs {d}", o.distance);
            if (d - threshold).abs() <= 0.01 * threshold {
                borderline = true;
            } else {
                assert_eq!(Value::from(o.changed), t["changed"], "{name}: tile at {:?}", o.tile);
            }
        }
        if !borderline {
            assert_eq!(Value::from(cmp.changed), result["changed"], "{name}: changed");
        }
        assert!(within_1_percent(cmp.distance, f(&result["distance"])), "{name}: distance");
        let direction = |d| serde_json::to_value(d).expect("direction");
        assert_eq!(
            direction(cmp.vegetation.direction),
            result["vegetation"]["direction"],
            "{name}: hsv"
        );
        assert_eq!(
            direction(cmp.learned.direction),
            result["learned"]["direction"],
            "{name}: learned"
        );
        assert!(
            (cmp.vegetation.before - f(&result["vegetation"]["before"])).abs() < 1e-3,
            "{name}: greenery"
        );

        // The same pair through the binary gives the same decision.
        let mut args = vec![
            "check".to_owned(),
            before_path.display().to_string(),
            after_path.display().to_string(),
        ];
        args.extend(["--json", "--model"].map(String::from));
        args.push(model.display().to_string());
        args.extend(["--threshold".to_owned(), threshold.to_string(), "--config".to_owned()]);
        let dir = tempfile::tempdir().expect("temp");
        std::fs::write(dir.path().join("c.toml"), format!("[analysis]\ntile = {}\n", g["tile"]))
            .expect("config");
        args.push(dir.path().join("c.toml").display().to_string());
        if let Some(m) = path("mask") {
            args.extend(["--mask".to_owned(), m.display().to_string()]);
        }
        let out = run(Path::new("."), &args.iter().map(String::as_str).collect::<Vec<_>>());
        let o = &out.json_lines()[0];
        assert_eq!(
            o["changed"],
            Value::from(cmp.changed),
            "{name}: binary vs library\n{}",
            out.stderr
        );
        assert!(
            within_1_percent(f(&o["distance"]), cmp.distance),
            "{name}: binary vs library distance"
        );
    }
    println!("{} golden pairs agree", files.len());
}
