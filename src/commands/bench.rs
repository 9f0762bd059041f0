//! `edge-change bench`: times each encoder on this machine (median ms per tile) and compares the
//! decisions of the encodings on built-in generated tiles, so a user can pick the faster one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use image::{Rgb, RgbImage};

use crate::analysis::decide::{changed, l2};
use crate::analysis::tiles::PreparedTile;
use crate::analysis::Encoder;
use crate::cli::BenchArgs;
use crate::model;

/// Built-in tile pairs whose decisions are compared between encodings.
const PAIRS: [(usize, usize); 8] = [(0, 1), (0, 2), (0, 3), (1, 2), (3, 4), (4, 5), (5, 6), (0, 6)];

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let paths: Vec<PathBuf> = if args.model.is_empty() {
        let found: Vec<PathBuf> =
            model::MODEL_NAMES.iter().filter_map(|n| model::find(n).ok()).collect();
        if found.is_empty() {
            model::find(model::default_model_name())?;
        }
        found
    } else {
        args.model.clone()
    };

    println!(
        "{:<16} {:>8} {:>10} {:>14}  decisions (changed pairs of {})",
        "model",
        "encoding",
        "load ms",
        "median ms/tile",
        PAIRS.len()
    );
    let mut results: Vec<(String, Vec<bool>)> = Vec::new();
    for path in &paths {
        let started = Instant::now();
        let encoder = Encoder::load(path)?;
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        let tiles = builtin_tiles(encoder.input_size());
        encoder.embed(&tiles[0])?; // warm-up: first-run allocations are not what a board repeats
        let mut times = Vec::new();
        let mut embeddings = Vec::new();
        for _ in 0..args.runs {
            embeddings.clear();
            for tile in &tiles {
                let t = Instant::now();
                embeddings.push(encoder.embed(tile)?);
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let threshold = encoder.card().threshold;
        let decisions: Vec<bool> = PAIRS
            .iter()
            .map(|&(a, b)| changed(l2(&embeddings[a], &embeddings[b]), threshold))
            .collect();
        let card = encoder.card();
        println!(
            "{:<16} {:>8} {:>10.1} {:>14.2}  {}",
            card.name,
            card.encoding,
            load_ms,
            median(&mut times),
            decisions.iter().map(|c| if *c { 'C' } else { '.' }).collect::<String>()
        );
        results.push((card.name.clone(), decisions));
    }
    if let Some((reference, decisions)) = results.first() {
        for (name, other) in &results[1..] {
            let agree = decisions.iter().zip(other).filter(|(a, b)| a == b).count();
            println!("{name} vs {reference}: {agree} of {} decisions agree", decisions.len());
        }
    }
    println!(
        "(C = changed, . = unchanged; default encoding here: {})",
        model::default_model_name()
    );
    Ok(ExitCode::SUCCESS)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A generated picture: colour at (x, y).
type Scene = Box<dyn Fn(u32, u32) -> Rgb<u8>>;

/// Seven deterministic scenes: fields, a cleared patch, soil, a road, textures and their shifts.
pub fn builtin_tiles(size: u32) -> Vec<PreparedTile> {
    let noise = |x: u32, y: u32, seed: u32| {
        let v = x.wrapping_mul(0x9E37_79B1)
            ^ y.wrapping_mul(0x85EB_CA77)
            ^ seed.wrapping_mul(0xC2B2_AE3D);
        (v ^ (v >> 15)).wrapping_mul(0x2C1B_3C6D) >> 24
    };
    let field =
        move |x, y| Rgb([40 + (noise(x, y, 1) % 20) as u8, 110 + (noise(x, y, 2) % 40) as u8, 35]);
    let scenes: [Scene; 7] = [
        Box::new(field),
        Box::new(
            move |x, y| {
                if x > size / 3 && y > size / 3 {
                    Rgb([150, 120, 90])
                } else {
                    field(x, y)
                }
            },
        ),
        Box::new(move |x, y| Rgb([130 + (noise(x, y, 3) % 30) as u8, 100, 70])),
        Box::new(move |x, y| if (x + y / 2) % 48 < 10 { Rgb([90, 90, 95]) } else { field(x, y) }),
        Box::new(
            move |x, y| if (x + 12 + y / 2) % 48 < 10 { Rgb([90, 90, 95]) } else { field(x, y) },
        ),
        Box::new(move |x, y| Rgb([(x * 255 / size) as u8, (y * 255 / size) as u8, 160])),
        Box::new(move |x, y| {
            let v = noise(x / 4, y / 4, 7) as u8;
            Rgb([v, v / 2 + 60, 255 - v])
        }),
    ];
    scenes
        .iter()
        .map(|f| PreparedTile {
            rgb: RgbImage::from_fn(size, size, f),
            valid: vec![true; (size * size) as usize],
            valid_px: u64::from(size * size),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn builtin_tiles_are_distinct_and_sized() {
        let tiles = builtin_tiles(128);
        assert_eq!(tiles.len(), 7);
        assert!(PAIRS.iter().all(|&(a, b)| a < tiles.len() && b < tiles.len()));
        for (i, a) in tiles.iter().enumerate() {
            assert_eq!(a.rgb.dimensions(), (128, 128));
            assert!(tiles[i + 1..].iter().all(|b| b.rgb != a.rgb));
        }
    }
}
