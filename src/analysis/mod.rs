//! The per-capture analysis shared by `check` and the daemon: pure, synchronous, no I/O beyond
//! reading files it is given. A capture is embedded once (`Analyzer::embed_capture`), stored, and
//! compared with the next one (`Analyzer::compare`) without a second encoder pass.

pub mod decide;
pub mod decode;
pub mod encoder;
pub mod greenery;
pub mod mask;
pub mod tiles;
pub mod visualize;

use std::sync::atomic::{AtomicUsize, Ordering};

use image::{imageops, imageops::FilterType, RgbImage};
use serde::{Deserialize, Serialize};

pub use decide::{Direction, Trend};
pub use decode::DecodeError;
pub use encoder::{Encoder, ModelCard, ModelError};
pub use greenery::GreenRange;
pub use mask::Mask;
pub use tiles::TileBox;

/// Which vegetation measure a report's top-level `direction` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionSource {
    Learned,
    Hsv,
}

/// Everything the analysis needs besides the model (the daemon builds it from its config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tile side in source pixels; 0 = the whole image as one tile.
    pub tile: u32,
    /// `None` = the model card's calibrated threshold.
    pub threshold: Option<f64>,
    pub green: GreenRange,
    pub min_delta: f64,
    pub direction: DirectionSource,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tile: 128,
            threshold: None,
            green: GreenRange::default(),
            min_delta: 0.05,
            direction: DirectionSource::Learned,
        }
    }
}

/// Why a capture could not be analysed or compared.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{mask}: mask is {mask_w}x{mask_h} but the capture is {width}x{height}")]
    MaskSize { mask: String, mask_w: u32, mask_h: u32, width: u32, height: u32 },
    #[error("{mask}: mask leaves no pixel to analyse")]
    MaskEmpty { mask: String },
    #[error("captures cannot be compared: {0}")]
    Incomparable(String),
}

/// One analysed tile of a capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileEmbedding {
    #[serde(flatten)]
    pub tile: TileBox,
    pub embedding: Vec<f32>,
    /// Unmasked source pixels in the tile (its weight for learned vegetation).
    pub valid_px: u64,
}

/// What is kept of a capture: enough to compare it with the next one without re-encoding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureAnalysis {
    pub width: u32,
    pub height: u32,
    /// sha256 of the model that made the embeddings (embeddings of different models don't compare).
    pub model_sha256: String,
    /// Tiles with at least one unmasked pixel, row by row.
    pub tiles: Vec<TileEmbedding>,
    /// HSV greenery: share of unmasked pixels in the green range.
    pub greenery: f64,
    /// Learned vegetation: tile fractions from the embedding norm, weighted by `valid_px`.
    pub learned_veg: f64,
}

/// A tile's distance in a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TileDistance {
    #[serde(flatten)]
    pub tile: TileBox,
    pub distance: f64,
    pub changed: bool,
}

/// The decision for a pair of captures (the analysis part of a `check --json` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub changed: bool,
    /// The largest tile distance.
    pub distance: f64,
    pub threshold: f64,
    pub tiles: Vec<TileDistance>,
    pub vegetation: Trend,
    pub learned: Trend,
    /// `none` when nothing changed; else the direction of the configured measure.
    pub direction: Direction,
}

/// The encoder plus the settings: one per process, shared by reference between threads.
#[derive(Debug)]
pub struct Analyzer {
    encoder: Encoder,
    settings: Settings,
    /// Threads that encode the tiles of one capture or pair (1 = the calling thread only).
    tile_threads: usize,
}

impl Analyzer {
    pub fn new(encoder: Encoder, settings: Settings) -> Analyzer {
        Analyzer { encoder, settings, tile_threads: 1 }
    }

    /// Encodes the tiles of one capture or pair on up to `threads` threads. For one pair at a
    /// time (`check` of a single pair); callers that already run captures in parallel keep 1, since
    /// more threads than cores only adds switching.
    pub fn with_tile_threads(mut self, threads: usize) -> Analyzer {
        self.tile_threads = threads.max(1);
        self
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The threshold in force: the configured one, else the model card's.
    pub fn threshold(&self) -> f64 {
        self.settings.threshold.unwrap_or(self.encoder.card().threshold)
    }

    /// Tiles, encoder passes and greenery for one capture. `mask` must be the capture's size.
    pub fn embed_capture(
        &self,
        image: &RgbImage,
        mask: Option<&Mask>,
    ) -> Result<CaptureAnalysis, AnalysisError> {
        let [capture] = self.embed_captures([image], mask)?;
        Ok(capture)
    }

    /// Both captures of a pair. Their tiles share one pool of `tile_threads`, so a pair of
    /// one-tile captures still keeps two cores busy.
    pub fn embed_pair(
        &self,
        before: &RgbImage,
        after: &RgbImage,
        mask: Option<&Mask>,
    ) -> Result<(CaptureAnalysis, CaptureAnalysis), AnalysisError> {
        let [before, after] = self.embed_captures([before, after], mask)?;
        Ok((before, after))
    }

    /// The tiles of every capture, encoded in one pool; the first failure in capture and grid
    /// order is reported.
    fn embed_captures<const N: usize>(
        &self,
        images: [&RgbImage; N],
        mask: Option<&Mask>,
    ) -> Result<[CaptureAnalysis; N], AnalysisError> {
        if let Some(m) = mask {
            images.iter().try_for_each(|image| m.check_size(image.dimensions()))?;
        }
        let size = self.encoder.input_size();
        let work: Vec<(usize, TileBox)> = images
            .iter()
            .enumerate()
            .flat_map(|(i, image)| {
                let (width, height) = image.dimensions();
                tiles::grid(width, height, self.settings.tile).into_iter().map(move |t| (i, t))
            })
            .collect();
        let encoded = parallel_map(&work, self.tile_threads, |&(i, tile)| {
            let prepared = tiles::prepare(images[i], mask, tile, size)?;
            Some(self.encoder.embed(&prepared).map(|embedding| TileEmbedding {
                tile,
                embedding,
                valid_px: prepared.valid_px,
            }))
        });
        let mut per_image: [Vec<TileEmbedding>; N] = std::array::from_fn(|_| Vec::new());
        // Fully masked tiles (`None`) are skipped.
        for (&(i, _), tile) in work.iter().zip(encoded) {
            if let Some(tile) = tile {
                per_image[i].push(tile?);
            }
        }
        let mut out = Vec::with_capacity(N);
        for (image, tiles) in images.into_iter().zip(per_image) {
            out.push(self.finish_capture(image, mask, tiles)?);
        }
        Ok(out.try_into().unwrap_or_else(|_| unreachable!("one analysis per image")))
    }

    /// Greenery and learned vegetation of a capture whose tiles are encoded.
    fn finish_capture(
        &self,
        image: &RgbImage,
        mask: Option<&Mask>,
        tiles: Vec<TileEmbedding>,
    ) -> Result<CaptureAnalysis, AnalysisError> {
        if tiles.is_empty() {
            let mask = mask.map_or("mask", |m| m.name()).to_owned();
            return Err(AnalysisError::MaskEmpty { mask });
        }
        let vegetation = &self.encoder.card().vegetation;
        let (mut weighted, mut weight) = (0.0, 0u64);
        for tile in &tiles {
            let norm = tile.embedding.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            weighted += vegetation.fraction(norm) * tile.valid_px as f64;
            weight += tile.valid_px;
        }
        let greenery = greenery::count_green(image, mask, &self.settings.green).fraction();
        let (width, height) = image.dimensions();
        Ok(CaptureAnalysis {
            width,
            height,
            model_sha256: self.encoder.card().sha256.clone(),
            tiles,
            greenery,
            learned_veg: weighted / weight as f64,
        })
    }

    /// Distances, decisions and directions for a pair of analysed captures of the same grid.
    pub fn compare(
        &self,
        before: &CaptureAnalysis,
        after: &CaptureAnalysis,
    ) -> Result<Comparison, AnalysisError> {
        compare_captures(before, after, self.threshold(), &self.settings)
    }
}

/// A scoped thread's result; its panic, if it panicked, goes on in the caller.
pub(crate) fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `f` over `items` on up to `threads` scoped threads, results in the order of `items`. Threads
/// take the next item as they finish one, so uneven items (edge tiles) balance themselves.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<R>> = items.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break done };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        for worker in workers {
            let done = join(worker);
            for (i, r) in done {
                out[i] = Some(r);
            }
        }
    });
    out.into_iter().map(|r| r.expect("every item was taken by a worker")).collect()
}

/// `Analyzer::compare` without the encoder: the decision rules on stored analyses.
pub fn compare_captures(
    before: &CaptureAnalysis,
    after: &CaptureAnalysis,
    threshold: f64,
    settings: &Settings,
) -> Result<Comparison, AnalysisError> {
    if before.model_sha256 != after.model_sha256 {
        return Err(AnalysisError::Incomparable("embedded by different models".into()));
    }
    if (before.width, before.height) != (after.width, after.height)
        || before.tiles.len() != after.tiles.len()
        || before.tiles.iter().zip(&after.tiles).any(|(b, a)| b.tile != a.tile)
    {
        return Err(AnalysisError::Incomparable(format!(
            "{}x{} with {} tiles vs {}x{} with {} tiles (resize with `fit_to` and use the same mask)",
            before.width,
            before.height,
            before.tiles.len(),
            after.width,
            after.height,
            after.tiles.len()
        )));
    }
    let tiles: Vec<TileDistance> = before
        .tiles
        .iter()
        .zip(&after.tiles)
        .map(|(b, a)| {
            let distance = decide::l2(&b.embedding, &a.embedding);
            TileDistance { tile: b.tile, distance, changed: decide::changed(distance, threshold) }
        })
        .collect();
    let distance = tiles.iter().map(|t| t.distance).fold(0.0, f64::max);
    let changed = tiles.iter().any(|t| t.changed);
    let min_delta = settings.min_delta;
    let vegetation = Trend::new(before.greenery, after.greenery, min_delta);
    let learned = Trend::new(before.learned_veg, after.learned_veg, min_delta);
    let direction = match (changed, settings.direction) {
        (false, _) => Direction::None,
        (true, DirectionSource::Learned) => learned.direction,
        (true, DirectionSource::Hsv) => vegetation.direction,
    };
    Ok(Comparison { changed, distance, threshold, tiles, vegetation, learned, direction })
}

/// The after-capture resized to the before's size (Triangle, as the contract says); a capture of
/// the right size is returned as is.
pub fn fit_to(image: RgbImage, (width, height): (u32, u32)) -> RgbImage {
    if image.dimensions() == (width, height) {
        image
    } else {
        imageops::resize(&image, width, height, FilterType::Triangle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(embeddings: &[[f32; 2]], greenery: f64, learned_veg: f64) -> CaptureAnalysis {
        let tiles = embeddings
            .iter()
            .enumerate()
            .map(|(i, e)| TileEmbedding {
                tile: TileBox { x: 128 * i as u32, y: 0, w: 128, h: 128 },
                embedding: e.to_vec(),
                valid_px: 128 * 128,
            })
            .collect();
        CaptureAnalysis {
            width: 128 * embeddings.len() as u32,
            height: 128,
            model_sha256: "m".into(),
            tiles,
            greenery,
            learned_veg,
        }
    }

    #[test]
    fn pair_changes_when_any_tile_is_over_the_threshold() {
        let before = capture(&[[0.0, 0.0], [1.0, 1.0]], 0.40, 0.50);
        let after = capture(&[[0.0, 0.5], [1.0, 3.0]], 0.20, 0.60);
        let s = Settings::default();
        let c = compare_captures(&before, &after, 1.0, &s).expect("comparable");
        assert!(c.changed);
        assert_eq!(c.distance, 2.0);
        assert_eq!((c.tiles[0].changed, c.tiles[1].changed), (false, true));
        assert_eq!(c.vegetation.direction, Direction::Loss);
        assert_eq!(c.learned.direction, Direction::Gain);
        assert_eq!(c.direction, Direction::Gain, "learned is the default source");
        let hsv = Settings { direction: DirectionSource::Hsv, ..Settings::default() };
        assert_eq!(
            compare_captures(&before, &after, 1.0, &hsv).expect("ok").direction,
            Direction::Loss
        );
    }

    #[test]
    fn unchanged_pair_has_no_direction() {
        let before = capture(&[[0.0, 0.0]], 0.40, 0.50);
        let after = capture(&[[0.0, 2.0]], 0.10, 0.10);
        let c = compare_captures(&before, &after, 2.0, &Settings::default()).expect("ok");
        assert!(!c.changed, "distance equal to the threshold is not a change");
        assert_eq!(c.direction, Direction::None);
        assert_eq!(c.learned.direction, Direction::Loss);
    }

    #[test]
    fn different_grids_or_models_do_not_compare() {
        let one = capture(&[[0.0, 0.0]], 0.0, 0.0);
        let two = capture(&[[0.0, 0.0], [0.0, 0.0]], 0.0, 0.0);
        assert!(matches!(
            compare_captures(&one, &two, 1.0, &Settings::default()),
            Err(AnalysisError::Incomparable(_))
        ));
        let other = CaptureAnalysis { model_sha256: "n".into(), ..one.clone() };
        assert!(compare_captures(&one, &other, 1.0, &Settings::default()).is_err());
    }

    #[test]
    fn analyzer_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Analyzer>();
        assert_send_sync::<CaptureAnalysis>();
    }

    #[test]
    fn parallel_map_keeps_the_order_of_the_items() {
        let items: Vec<u64> = (0..97).collect();
        // Uneven work, so the threads finish out of order.
        let slow_square = |&i: &u64| {
            std::thread::sleep(std::time::Duration::from_micros((i % 7) * 50));
            i * i
        };
        let expected: Vec<u64> = items.iter().map(|i| i * i).collect();
        for threads in [0, 1, 2, 5, 200] {
            assert_eq!(parallel_map(&items, threads, slow_square), expected, "{threads} threads");
        }
        assert!(parallel_map(&[] as &[u64], 4, slow_square).is_empty());
    }

    #[test]
    fn fit_to_resizes_only_when_needed() {
        let img = RgbImage::from_pixel(10, 20, image::Rgb([1, 2, 3]));
        assert_eq!(fit_to(img.clone(), (10, 20)), img);
        assert_eq!(fit_to(img, (5, 5)).dimensions(), (5, 5));
    }
}
