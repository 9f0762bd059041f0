//! `check --pairs`: results in input order, partial failure, exit codes.

use std::fs;

use crate::check::assert_report_shape;
use crate::harness::{cleared, field, model, run, save, temp};

#[test]
fn results_come_in_input_order_and_failures_do_not_stop_the_rest() {
    let Some(_) = model() else { return };
    let dir = temp();
    fs::create_dir(dir.path().join("img")).expect("mkdir");
    let img = dir.path().join("img");
    // Sizes differ so that rows take different times on the two workers.
    let sizes = [(384, 256), (128, 128), (256, 256), (128, 128), (512, 128), (128, 256)];
    let mut csv = String::from("site,before,after,mask\n");
    for (i, (w, h)) in sizes.iter().enumerate() {
        save(&img, &format!("b{i}.png"), &field(*w, *h));
        save(&img, &format!("a{i}.png"), &cleared(*w, *h));
        if i == 3 {
            csv += "broken,img/b3.png,img/missing.png,\n";
        } else {
            csv += &format!("s{i},img/b{i}.png,img/a{i}.png,\n");
        }
    }
    csv += "short,img/b0.png\n";
    fs::write(dir.path().join("pairs.csv"), csv).expect("write csv");

    let out = run(dir.path(), &["check", "--pairs", "pairs.csv", "--json"]);
    assert_eq!(out.code, 2, "a failed row makes the exit code 2: {}", out.stderr);
    let objects = out.json_lines();
    assert_eq!(objects.len(), 7);
    for (i, o) in objects.iter().enumerate().take(6) {
        assert_eq!(o["before"], format!("img/b{i}.png"), "row {i} in order");
        if i == 3 {
            assert!(o["error"]
                .as_str()
                .is_some_and(|e| e.contains("img/missing.png: cannot read")));
        } else {
            assert_report_shape(o);
        }
    }
    assert!(objects[6]["error"].as_str().is_some_and(|e| e.contains("pairs.csv: line 8")));
    assert_eq!(
        out.stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        2,
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains('\r'), "no progress bar when stderr is not a terminal");
}

#[test]
fn all_rows_analysed_exits_0_even_with_changes() {
    let Some(_) = model() else { return };
    let dir = temp();
    save(dir.path(), "a.png", &field(128, 128));
    save(dir.path(), "b.png", &cleared(128, 128));
    save(dir.path(), "m.png", &image::RgbImage::from_pixel(128, 128, image::Rgb([255; 3])));
    fs::write(dir.path().join("p.csv"), "before,after,mask\na.png,b.png,m.png\na.png,a.png,\n")
        .expect("csv");
    let out = run(dir.path(), &["check", "--pairs", "p.csv", "--threshold", "0.000001"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summaries: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with("  ")).collect();
    assert_eq!(summaries, ["CHANGED  a.png -> b.png", "no change  a.png -> a.png"]);
}

/// Rows that share captures (analysed once per run) give what each pair gives on its own: with and
/// without a mask, a capture as before and as after, one fitted to another size, and a broken
/// file among them.
#[test]
fn rows_sharing_captures_agree_with_each_pair_alone() {
    let Some(_) = model() else { return };
    let dir = temp();
    save(dir.path(), "a.png", &field(256, 128));
    save(dir.path(), "b.png", &cleared(256, 128));
    save(dir.path(), "c.png", &cleared(128, 128)); // fitted to 256x128 after a, to itself as before
    let half =
        image::RgbImage::from_fn(256, 128, |x, _| image::Rgb([if x < 128 { 255 } else { 0 }; 3]));
    save(dir.path(), "m.png", &half);
    fs::write(dir.path().join("broken.png"), &fs::read(dir.path().join("a.png")).unwrap()[..200])
        .unwrap();
    let rows = [
        ("a.png", "b.png", ""),
        ("a.png", "b.png", "m.png"),
        ("b.png", "a.png", ""),
        ("a.png", "broken.png", ""),
        ("a.png", "c.png", ""),
        ("c.png", "a.png", ""),
        ("a.png", "b.png", ""),
        ("b.png", "a.png", "m.png"),
    ];
    let mut csv = String::from("before,after,mask\n");
    for (b, a, m) in rows {
        csv += &format!("{b},{a},{m}\n");
    }
    fs::write(dir.path().join("p.csv"), csv).unwrap();
    let out = run(dir.path(), &["check", "--pairs", "p.csv", "--json"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let together = out.json_lines();
    assert_eq!(together.len(), rows.len());

    // Without timings, the rest must be equal to the last digit.
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("timings_ms");
        v
    };
    for (i, (b, a, m)) in rows.iter().enumerate() {
        let mut args = vec!["check", *b, *a, "--json"];
        if !m.is_empty() {
            args.extend(["--mask", *m]);
        }
        let alone = run(dir.path(), &args).json_lines().remove(0);
        assert_eq!(strip(together[i].clone()), strip(alone), "row {i}: {b},{a},{m}");
    }
    assert!(together[3]["error"].as_str().is_some_and(|e| e.contains("broken.png")));
    assert_ne!(together[0]["tiles"], together[1]["tiles"], "the mask changes the analysis");
}
