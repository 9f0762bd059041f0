//! Shared helpers: temp dirs, generated PNGs, and waiting with deadlines instead of fixed sleeps.

use std::io::Cursor;
use std::time::Duration;

use edge_change::capture::{Capture, CaptureData};
use image::{ImageFormat, Rgb, RgbImage};
use tokio::sync::mpsc;

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A small PNG whose pixels depend on `seed`.
pub fn png(seed: u8) -> Vec<u8> {
    let image = RgbImage::from_fn(32, 24, |x, y| {
        Rgb([(x as u8).wrapping_mul(7) ^ seed, (y as u8).wrapping_mul(11), seed])
    });
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).expect("encode png");
    bytes
}

/// The next capture, failing the test after `within`.
pub async fn next(rx: &mut mpsc::Receiver<Capture>, within: Duration) -> Capture {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(capture)) => capture,
        Ok(None) => panic!("the source stopped"),
        Err(_) => panic!("no capture within {within:?}"),
    }
}

/// Asserts that nothing more arrives for `quiet`: the only way to show that something did *not*
/// happen, so `quiet` is a few of the source's own check periods, not a guess at how long work takes.
pub async fn assert_quiet(rx: &mut mpsc::Receiver<Capture>, quiet: Duration) {
    if let Ok(Some(extra)) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("unexpected capture {:?} ({:?})", extra.name, describe(&extra.data));
    }
}

/// Polls `condition` every 20 ms until it holds, failing the test after `within`.
pub async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn bytes(capture: &Capture) -> Vec<u8> {
    capture
        .read()
        .unwrap_or_else(|e| panic!("capture {:?} has no image: {e}", capture.name))
        .into_owned()
}

pub fn failure(capture: &Capture) -> &str {
    match &capture.data {
        CaptureData::Failed(reason) => reason,
        other => panic!("expected a failed capture, got {:?}", describe(other)),
    }
}

fn describe(data: &CaptureData) -> String {
    match data {
        CaptureData::Path { path, stamp } => format!("{} ({} bytes)", path.display(), stamp.size),
        CaptureData::Bytes(b) => format!("{} bytes", b.len()),
        CaptureData::Failed(reason) => format!("failed: {reason}"),
    }
}
