//! `check` on real imagery from ../shared/data (read in place, never copied into the repo).

use crate::check::assert_report_shape;
use crate::harness::{model, run, shared_data, temp};

#[test]
fn real_pairs_of_every_source_format() {
    let Some(_) = model() else { return };
    let Some(data) = shared_data() else { return };
    let pairs = [
        // TIFF patches, aerial BMPs and city PNGs: decoding and analysing real files end to end.
        ("brunei-s2/images/2018_01_patch_018.tif", "brunei-s2/images/2022_02_patch_018.tif"),
        ("sztaki/Szada_1/before.bmp", "sztaki/Szada_1/after.bmp"),
        ("oscd/beirut/before/rgb.png", "oscd/beirut/after/rgb.png"),
    ];
    let dir = temp();
    let mut ran = 0;
    for (before, after) in pairs {
        let (b, a) = (data.join(before), data.join(after));
        if !(b.is_file() && a.is_file()) {
            println!("skipped: {before} or {after} not in ../shared/data");
            continue;
        }
        let out = run(
            dir.path(),
            &["check", b.to_str().expect("utf-8"), a.to_str().expect("utf-8"), "--json"],
        );
        assert!(out.code == 0 || out.code == 1, "{before}: {}", out.stderr);
        assert_report_shape(&out.json_lines()[0]);
        ran += 1;
    }
    println!("{ran} real pairs checked");
}
