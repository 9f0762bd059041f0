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
