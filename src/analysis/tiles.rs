//! The tile grid and per-tile preprocessing (crop, resize to the model input, mask), exactly as in
//! models/CONTRACT.md so that Rust and training/reference.py feed the encoder the same tensors.

use image::{imageops, imageops::FilterType, RgbImage};
use serde::{Deserialize, Serialize};

use super::Mask;

/// A tile's box in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// Tile starts along an axis of length `len`: one tile when `len <= tile`, else every `tile`
/// pixels while the tile fits short of the end, and a last tile flush with the end (overlapping
/// its neighbour) so every tile is `tile` wide.
pub fn origins(len: u32, tile: u32) -> Vec<u32> {
    if tile == 0 || len <= tile {
        return vec![0];
    }
    let mut starts: Vec<u32> = (0..).map(|i| i * tile).take_while(|s| s + tile < len).collect();
    starts.push(len - tile);
    starts
}

/// The grid for an image, row by row; `tile == 0` is the whole image as one tile.
pub fn grid(width: u32, height: u32, tile: u32) -> Vec<TileBox> {
    let side = |len: u32| if tile == 0 { len } else { tile.min(len) };
    let (w, h) = (side(width), side(height));
    origins(height, tile)
        .into_iter()
        .flat_map(|y| origins(width, tile).into_iter().map(move |x| TileBox { x, y, w, h }))
        .collect()
}

/// A tile ready for the encoder: `size`×`size` RGB and its mask cells.
#[derive(Debug, Clone)]
pub struct PreparedTile {
    pub rgb: RgbImage,
    /// Row-major validity of the `size`×`size` cells.
    pub valid: Vec<bool>,
    /// Unmasked source pixels inside the box (the tile's weight for learned vegetation).
    pub valid_px: u64,
}

/// Crops and resizes one tile. Returns `None` when the mask leaves nothing to analyse in it
/// (no valid source pixel, or none left after the nearest-neighbour resize of the mask).
pub fn prepare(
    image: &RgbImage,
    mask: Option<&Mask>,
    b: TileBox,
    size: u32,
) -> Option<PreparedTile> {
    let (valid, valid_px) = match mask {
        None => (vec![true; (size * size) as usize], u64::from(b.w) * u64::from(b.h)),
        Some(mask) => {
            let valid_px = (b.y..b.y + b.h)
                .flat_map(|y| (b.x..b.x + b.w).map(move |x| (x, y)))
                .filter(|&(x, y)| mask.valid(x, y))
                .count() as u64;
            // Nearest neighbour as PIL does it: the source of cell i is floor((i + 0.5) * len / size).
            let near =
                |i: u32, len: u32| ((f64::from(i) + 0.5) * f64::from(len) / f64::from(size)) as u32;
            let cells = (0..size)
                .flat_map(|cy| (0..size).map(move |cx| (cx, cy)))
                .map(|(cx, cy)| {
                    mask.valid(b.x + near(cx, b.w).min(b.w - 1), b.y + near(cy, b.h).min(b.h - 1))
                })
                .collect();
            (cells, valid_px)
        }
    };
    if valid_px == 0 || !valid.contains(&true) {
        return None;
    }
    let crop = imageops::crop_imm(image, b.x, b.y, b.w, b.h).to_image();
    let rgb = if (b.w, b.h) == (size, size) {
        crop
    } else {
        // Triangle antialiases on downscale like PIL's BILINEAR (close, not bit-identical).
        imageops::resize(&crop, size, size, FilterType::Triangle)
    };
    Some(PreparedTile { rgb, valid, valid_px })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn origins_cover_the_axis_with_a_flush_last_tile() {
        assert_eq!(origins(128, 128), [0]);
        assert_eq!(origins(100, 128), [0]);
        assert_eq!(origins(256, 128), [0, 128]);
        assert_eq!(origins(300, 128), [0, 128, 172]);
        assert_eq!(origins(129, 128), [0, 1]);
        assert_eq!(origins(640, 128), [0, 128, 256, 384, 512]);
        assert_eq!(origins(500, 0), [0]);
    }

    #[test]
    fn grid_is_row_major_and_clipped_to_small_images() {
        let g = grid(300, 100, 128);
        assert_eq!(
            g,
            [
                TileBox { x: 0, y: 0, w: 128, h: 100 },
                TileBox { x: 128, y: 0, w: 128, h: 100 },
                TileBox { x: 172, y: 0, w: 128, h: 100 },
            ]
        );
        assert_eq!(grid(300, 200, 0), [TileBox { x: 0, y: 0, w: 300, h: 200 }]);
        assert_eq!(grid(256, 256, 128).len(), 4);
        assert_eq!(grid(256, 256, 128)[1], TileBox { x: 128, y: 0, w: 128, h: 128 });
    }

    #[test]
    fn prepare_keeps_128_crops_untouched() {
        let img = RgbImage::from_fn(200, 130, |x, y| Rgb([x as u8, y as u8, 7]));
        let b = TileBox { x: 72, y: 2, w: 128, h: 128 };
        let t = prepare(&img, None, b, 128).expect("tile");
        assert_eq!(t.rgb.get_pixel(0, 0), &Rgb([72, 2, 7]));
        assert_eq!(t.rgb.get_pixel(127, 127), &Rgb([199, 129, 7]));
        assert_eq!(t.valid_px, 128 * 128);
        assert!(t.valid.iter().all(|v| *v));
    }

    #[test]
    fn prepare_resizes_other_sizes() {
        let img = RgbImage::from_pixel(256, 64, Rgb([10, 20, 30]));
        let t = prepare(&img, None, TileBox { x: 0, y: 0, w: 256, h: 64 }, 128).expect("tile");
        assert_eq!(t.rgb.dimensions(), (128, 128));
        assert_eq!(t.rgb.get_pixel(64, 64), &Rgb([10, 20, 30]));
    }

    #[test]
    fn masked_tiles_are_skipped_and_partial_ones_weighted() {
        let img = RgbImage::new(256, 128);
        // Only the right 28 columns of the second tile are valid.
        let mask = Mask::from_fn(256, 128, |x, _| x >= 228);
        let boxes = grid(256, 128, 128);
        assert!(prepare(&img, Some(&mask), boxes[0], 128).is_none());
        let t = prepare(&img, Some(&mask), boxes[1], 128).expect("partly valid");
        assert_eq!(t.valid_px, 28 * 128);
        assert!(!t.valid[0] && t.valid[127] && t.valid[100] && !t.valid[99]);
    }

    #[test]
    fn mask_resize_is_nearest_with_pixel_centres() {
        // A 256-wide tile: cell i samples source column floor((i + 0.5) * 2) = 2i + 1.
        let img = RgbImage::new(256, 256);
        let mask = Mask::from_fn(256, 256, |x, _| x % 2 == 1);
        let t =
            prepare(&img, Some(&mask), TileBox { x: 0, y: 0, w: 256, h: 256 }, 128).expect("tile");
        assert!(t.valid.iter().all(|v| *v));
        assert_eq!(t.valid_px, 128 * 256);
    }
}
