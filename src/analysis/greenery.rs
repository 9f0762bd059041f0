//! HSV greenery: OpenCV's 8-bit RGB→HSV conversion, bit for bit, and the share of unmasked pixels
//! inside the configured green range.

use image::RgbImage;

use super::Mask;

/// The green range in OpenCV's convention (H 0–179, S and V 0–255), bounds inclusive like `inRange`.
#[derive(Debug, Clone, PartialEq)]
pub struct GreenRange {
    pub hue: [u8; 2],
    pub saturation_min: u8,
    pub value_min: u8,
}

impl Default for GreenRange {
    fn default() -> Self {
        GreenRange { hue: [35, 85], saturation_min: 40, value_min: 40 }
    }
}

impl GreenRange {
    pub fn contains(&self, [h, s, v]: [u8; 3]) -> bool {
        (self.hue[0]..=self.hue[1]).contains(&h) && s >= self.saturation_min && v >= self.value_min
    }
}

// OpenCV's fixed-point tables (modules/imgproc/src/color_hsv.simd.hpp, RGB2HSV_b):
// sdiv[i] = round(255 << 12 / i), hdiv[i] = round(180 << 12 / (6 i)), both 0 at i = 0.
const HSV_SHIFT: u32 = 12;

const fn div_tables() -> ([i32; 256], [i32; 256]) {
    let mut sdiv = [0i32; 256];
    let mut hdiv = [0i32; 256];
    let mut i = 1;
    while i < 256 {
        // Integer rounding of a positive quotient: (n + d/2) / d.
        let n = 255 << HSV_SHIFT;
        sdiv[i] = (n + (i as i32) / 2) / i as i32;
        let n = 180 << HSV_SHIFT;
        let d = 6 * i as i32;
        hdiv[i] = (n + d / 2) / d;
        i += 1;
    }
    (sdiv, hdiv)
}

const TABLES: ([i32; 256], [i32; 256]) = div_tables();

/// `cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)` for one uint8 pixel.
pub fn rgb_to_hsv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (sdiv, hdiv) = (&TABLES.0, &TABLES.1);
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let v = r.max(g).max(b);
    let diff = v - r.min(g).min(b);
    let round = 1 << (HSV_SHIFT - 1);
    let s = (diff * sdiv[v as usize] + round) >> HSV_SHIFT;
    // Same branch order as OpenCV: red wins ties with green, green wins ties with blue.
    let h = if v == r {
        g - b
    } else if v == g {
        b - r + 2 * diff
    } else {
        r - g + 4 * diff
    };
    let mut h = (h * hdiv[diff as usize] + round) >> HSV_SHIFT;
    if h < 0 {
        h += 180;
    }
    [h as u8, s as u8, v as u8]
}

/// Pixels counted for the greenery share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreenCount {
    pub green: u64,
    pub valid: u64,
}

impl GreenCount {
    /// The share of valid pixels that are green (0 when no pixel is valid).
    pub fn fraction(self) -> f64 {
        if self.valid == 0 {
            0.0
        } else {
            self.green as f64 / self.valid as f64
        }
    }
}

/// Counts the green pixels among the unmasked ones. `mask` must match the image size.
pub fn count_green(image: &RgbImage, mask: Option<&Mask>, range: &GreenRange) -> GreenCount {
    let mut count = GreenCount { green: 0, valid: 0 };
    for (i, px) in image.pixels().enumerate() {
        if mask.is_some_and(|m| !m.valid_at_index(i)) {
            continue;
        }
        count.valid += 1;
        if range.contains(rgb_to_hsv(px.0)) {
            count.green += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// Colours and the HSV that OpenCV (5.1) gives for them. Produced once with opencv-python-headless
    /// by tools/opencv_hsv_table.py (`cv2.cvtColor(rgb_u8, cv2.COLOR_RGB2HSV)`), which also
    /// checks the integer formula above against OpenCV on all 2^24 colours (0 mismatches).
    const OPENCV_HSV: &[([u8; 3], [u8; 3])] = &include!("opencv_hsv_table.rs.in");

    #[test]
    fn matches_opencv_on_its_own_numbers() {
        assert!(OPENCV_HSV.len() > 200);
        for &(rgb, hsv) in OPENCV_HSV {
            assert_eq!(rgb_to_hsv(rgb), hsv, "rgb {rgb:?}");
        }
    }

    #[test]
    fn green_range_bounds_are_inclusive() {
        let range = GreenRange::default();
        assert!(range.contains([35, 40, 40]));
        assert!(range.contains([85, 255, 255]));
        assert!(!range.contains([34, 255, 255]));
        assert!(!range.contains([86, 255, 255]));
        assert!(!range.contains([60, 39, 255]));
        assert!(!range.contains([60, 255, 39]));
    }

    #[test]
    fn greenery_of_known_colours() {
        let range = GreenRange::default();
        for (rgb, green) in [
            ([0, 255, 0], true),      // H 60
            ([60, 140, 50], true),    // grass, H 53
            ([30, 40, 30], true),     // dark green exactly at the V 40 bound (H 60, S 64)
            ([30, 39, 30], false),    // one step darker
            ([135, 206, 235], false), // sky blue, H 99
            ([128, 128, 128], false), // grey, S 0
            ([255, 255, 0], false),   // yellow, H 30
        ] {
            let hsv = rgb_to_hsv(rgb);
            assert_eq!(range.contains(hsv), green, "{rgb:?} → {hsv:?}");
        }
    }

    #[test]
    fn fraction_counts_only_unmasked_pixels() {
        // Left half green, right half grey; the mask keeps the left column of each half.
        let img =
            RgbImage::from_fn(4, 2, |x, _| if x < 2 { Rgb([0, 200, 0]) } else { Rgb([90; 3]) });
        let all = count_green(&img, None, &GreenRange::default());
        assert_eq!(all, GreenCount { green: 4, valid: 8 });
        assert_eq!(all.fraction(), 0.5);

        let mask = Mask::from_fn(4, 2, |x, _| x == 0 || x == 3);
        let masked = count_green(&img, Some(&mask), &GreenRange::default());
        assert_eq!(masked, GreenCount { green: 2, valid: 4 });

        let none = Mask::from_fn(4, 2, |_, _| false);
        assert_eq!(count_green(&img, Some(&none), &GreenRange::default()).fraction(), 0.0);
    }
}
