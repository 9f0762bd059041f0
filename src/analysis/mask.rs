//! The analysis mask: which pixels of a site's captures count (white = analyse, black = ignore).

use std::path::Path;

use image::RgbImage;

use super::decode::{decode_file, DecodeError};
use super::AnalysisError;

/// A per-pixel validity map the size of the captures it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    name: String,
    width: u32,
    height: u32,
    valid: Vec<bool>,
}

impl Mask {
    /// Decodes a mask image (any supported format); luma ≥ 128 means analyse.
    pub fn load(path: &Path, max_pixels: u64) -> Result<Mask, DecodeError> {
        let rgb = decode_file(path, max_pixels)?;
        Ok(Mask::from_rgb(path.display().to_string(), &rgb))
    }

    /// Luma as PIL's `convert("L")` computes it (ITU-R 601, fixed point), so grey masks
    /// threshold the same way in training/reference.py.
    pub fn from_rgb(name: impl Into<String>, rgb: &RgbImage) -> Mask {
        let valid = rgb
            .pixels()
            .map(|p| {
                let [r, g, b] = p.0.map(u32::from);
                (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16 >= 128
            })
            .collect();
        Mask { name: name.into(), width: rgb.width(), height: rgb.height(), valid }
    }

    /// A mask computed from coordinates (for tests and generated masks).
    pub fn from_fn(width: u32, height: u32, f: impl Fn(u32, u32) -> bool) -> Mask {
        let valid = (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| f(x, y));
        Mask { name: "mask".into(), width, height, valid: valid.collect() }
    }

    /// The file it came from, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// A mask applies only to captures of its own size.
    pub fn check_size(&self, (width, height): (u32, u32)) -> Result<(), AnalysisError> {
        let (mask_w, mask_h) = self.dimensions();
        if (mask_w, mask_h) != (width, height) {
            let mask = self.name.clone();
            return Err(AnalysisError::MaskSize { mask, mask_w, mask_h, width, height });
        }
        Ok(())
    }

    pub fn valid(&self, x: u32, y: u32) -> bool {
        self.valid[(y as usize) * (self.width as usize) + x as usize]
    }

    /// Validity by row-major pixel index, the order of `RgbImage::pixels()`.
    pub fn valid_at_index(&self, index: usize) -> bool {
        self.valid[index]
    }

    pub fn count_valid(&self) -> u64 {
        self.valid.iter().filter(|v| **v).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn luma_threshold_is_128_with_pil_weights() {
        let rgb = RgbImage::from_fn(4, 1, |x, _| match x {
            0 => Rgb([128, 128, 128]),
            1 => Rgb([127, 127, 127]),
            2 => Rgb([255, 0, 0]),   // luma 76
            _ => Rgb([0, 255, 255]), // luma 179
        });
        let mask = Mask::from_rgb("m", &rgb);
        assert_eq!(
            (0..4).map(|x| mask.valid(x, 0)).collect::<Vec<_>>(),
            [true, false, false, true]
        );
        assert_eq!(mask.count_valid(), 2);
    }
}
