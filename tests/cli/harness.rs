//! Shared test helpers: running the binary, generating images, finding the model and the data.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{Rgb, RgbImage};

pub const BIN: &str = env!("CARGO_BIN_EXE_edge-change");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fp32 encoder in models/, or `None` after printing why the test is skipped.
pub fn model() -> Option<PathBuf> {
    let path = repo().join("models/encoder-fp32.onnx");
    if path.is_file() {
        Some(path)
    } else {
        println!("skipped: models/encoder-fp32.onnx not found");
        None
    }
}

/// ../shared/data, or `None` after printing why the test is skipped.
pub fn shared_data() -> Option<PathBuf> {
    let path = repo().join("../shared/data");
    if path.is_dir() {
        Some(path)
    } else {
        println!("skipped: ../shared/data not found");
        None
    }
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The stdout lines parsed as JSON objects.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Asserts a clean failure: exit 2 and one `error:` line on stderr containing `needle`s.
    pub fn assert_error(&self, needles: &[&str]) {
        assert_eq!(self.code, 2, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got: {}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{}", lines[0]);
        for needle in needles {
            assert!(lines[0].contains(needle), "{:?} not in {:?}", needle, lines[0]);
        }
        assert!(!self.stderr.contains("panicked"));
    }
}

/// Runs `check` in `dir` with the repo's fp32 model passed explicitly (when it exists), so tests
/// do not depend on where the binary was built (CARGO_TARGET_DIR may be outside the repo).
pub fn run(dir: &Path, args: &[&str]) -> Output {
    let model = repo().join("models/encoder-fp32.onnx");
    let mut args: Vec<&str> = args.to_vec();
    if args.first() == Some(&"check") && !args.contains(&"--model") && model.is_file() {
        args.extend(["--model", model.to_str().expect("utf-8 repo path")]);
    }
    run_plain(dir, &args)
}

/// Runs the binary in `dir` with exactly these arguments.
pub fn run_plain(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).current_dir(dir).output().expect("run edge-change");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A deterministic pseudo-random value per pixel and seed.
fn noise(x: u32, y: u32, seed: u32) -> u8 {
    let v =
        x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ seed.wrapping_mul(0xC2B2_AE3D);
    ((v ^ (v >> 15)).wrapping_mul(0x2C1B_3C6D) >> 24) as u8
}

/// A textured green field.
pub fn field(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([40 + noise(x, y, 1) % 20, 110 + noise(x, y, 2) % 40, 35]))
}

/// The field with bare soil over its lower-right part.
pub fn cleared(w: u32, h: u32) -> RgbImage {
    let mut img = field(w, h);
    for (x, y, px) in img.enumerate_pixels_mut() {
        if x > w / 3 && y > h / 3 {
            *px = Rgb([150 + noise(x, y, 3) % 20, 120, 90]);
        }
    }
    img
}

/// Saves `img` in the format its extension names and returns the file name.
pub fn save(dir: &Path, name: &str, img: &RgbImage) -> String {
    img.save(dir.join(name)).expect("save test image");
    name.to_owned()
}
