//! The picture a field engineer looks at: before | after side by side, changed tiles outlined in
//! red, masked areas dimmed.

use image::{Rgb, RgbImage};

use super::{Comparison, Mask, TileBox};

const GAP: u32 = 8;
const RED: Rgb<u8> = Rgb([255, 0, 0]);

/// Renders the pair; `after` must already be at the before's size.
pub fn render(
    before: &RgbImage,
    after: &RgbImage,
    mask: Option<&Mask>,
    comparison: &Comparison,
) -> RgbImage {
    let (w, h) = before.dimensions();
    let mut out = RgbImage::from_pixel(2 * w + GAP, h, Rgb([255, 255, 255]));
    for (offset, image) in [(0, before), (w + GAP, after)] {
        for (x, y, px) in image.enumerate_pixels() {
            let dimmed = mask.is_some_and(|m| !m.valid(x, y));
            let px = if dimmed { Rgb(px.0.map(|c| c / 3)) } else { *px };
            out.put_pixel(offset + x, y, px);
        }
        for tile in comparison.tiles.iter().filter(|t| t.changed) {
            outline(&mut out, offset, tile.tile);
        }
    }
    out
}

/// A red frame two pixels wide (one for tiles too small for two) inside the tile's box.
fn outline(out: &mut RgbImage, offset: u32, b: TileBox) {
    let width = if b.w > 4 && b.h > 4 { 2 } else { 1 };
    for y in b.y..b.y + b.h {
        for x in b.x..b.x + b.w {
            let edge = x < b.x + width
                || x >= b.x + b.w - width
                || y < b.y + width
                || y >= b.y + b.h - width;
            if edge {
                out.put_pixel(offset + x, y, RED);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Direction, TileDistance, Trend};

    #[test]
    fn outlines_changed_tiles_and_dims_masked_pixels() {
        let before = RgbImage::from_pixel(20, 10, Rgb([90, 90, 90]));
        let after = before.clone();
        let mask = Mask::from_fn(20, 10, |x, _| x < 10);
        let tile = |x, changed| TileDistance {
            tile: TileBox { x, y: 0, w: 10, h: 10 },
            distance: 0.0,
            changed,
        };
        let trend = Trend::new(0.0, 0.0, 0.05);
        let cmp = Comparison {
            changed: true,
            distance: 0.0,
            threshold: 1.0,
            tiles: vec![tile(0, true), tile(10, false)],
            vegetation: trend,
            learned: trend,
            direction: Direction::None,
        };
        let out = render(&before, &after, Some(&mask), &cmp);
        assert_eq!(out.dimensions(), (48, 10));
        assert_eq!(out.get_pixel(0, 0), &RED);
        assert_eq!(out.get_pixel(28, 5), &RED, "outlined on the after side too");
        assert_eq!(out.get_pixel(5, 5), &Rgb([90, 90, 90]));
        assert_eq!(out.get_pixel(15, 5), &Rgb([30, 30, 30]), "masked half dimmed");
        assert_eq!(out.get_pixel(21, 5), &Rgb([255, 255, 255]), "gap");
    }
}
