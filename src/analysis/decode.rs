//! Decoding captures and masks: PNG, JPEG, TIFF, BMP and WebP bytes into RGB8, strictly.
//!
//! The `image` crate's decoders are lenient (a half-written JPEG decodes to a grey lower half), so
//! each format's container is checked for completeness before decoding, and the pixel limit is
//! checked from the header before any pixel buffer is allocated.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// Why a capture or mask could not be turned into pixels. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{name}: cannot read: {source}")]
    Read { name: String, source: std::io::Error },
    #[error("{name}: empty file")]
    Empty { name: String },
    #[error("{name}: not a PNG, JPEG, TIFF, BMP or WebP image")]
    UnknownFormat { name: String },
    #[error("{name}: truncated {format} file ({detail})")]
    Truncated { name: String, format: &'static str, detail: &'static str },
    #[error("{name}: {width}x{height} is over the pixel limit of {max} (analysis.max_pixels)")]
    TooLarge { name: String, width: u32, height: u32, max: u64 },
    #[error("{name}: cannot decode {format}: {source}")]
    Image { name: String, format: &'static str, source: image::ImageError },
}

/// Reads and decodes an image file; `max_pixels` guards against decompression bombs.
pub fn decode_file(path: &Path, max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let name = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|source| DecodeError::Read { name: name.clone(), source })?;
    decode_bytes(&name, &bytes, max_pixels)
}

/// Decodes an in-memory capture; `name` is only used in error messages.
pub fn decode_bytes(name: &str, bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let name = name.to_owned();
    if bytes.is_empty() {
        return Err(DecodeError::Empty { name });
    }
    let format = match image::guess_format(bytes) {
        Ok(
            f @ (ImageFormat::Png
            | ImageFormat::Jpeg
            | ImageFormat::Tiff
            | ImageFormat::Bmp
            | ImageFormat::WebP),
        ) => f,
        _ => return Err(DecodeError::UnknownFormat { name }),
    };
    let label = format_label(format);
    if let Some(detail) = incomplete(format, bytes) {
        return Err(DecodeError::Truncated { name, format: label, detail });
    }
    let image_err = |source| DecodeError::Image { name: name.clone(), format: label, source };

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // Room for the widest pixel type any of these formats decodes to (16-bit RGBA), plus slack.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(image_err)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(DecodeError::TooLarge { name, width, height, max: max_pixels });
    }
    let orientation = decoder.orientation().map_err(image_err)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(image_err)?;
    image.apply_orientation(orientation);
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

fn format_label(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Bmp => "BMP",
        _ => "WebP",
    }
}

/// Container-level completeness check; `Some(reason)` when the file ends early.
/// TIFF needs none: its decoder reads strips at absolute offsets and fails past the end.
fn incomplete(format: ImageFormat, bytes: &[u8]) -> Option<&'static str> {
    match format {
        ImageFormat::Png => png_incomplete(bytes),
        ImageFormat::Jpeg => jpeg_incomplete(bytes),
        ImageFormat::WebP => riff_incomplete(bytes),
        ImageFormat::Bmp => bmp_incomplete(bytes),
        _ => None,
    }
}

/// Walks the chunk list up to IEND: every chunk's declared length and CRC must be present.
fn png_incomplete(bytes: &[u8]) -> Option<&'static str> {
    let mut at = 8; // signature
    loop {
        let Some(header) = bytes.get(at..at + 8) else {
            return Some("no IEND chunk");
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let end = at.saturating_add(12).saturating_add(len);
        if end > bytes.len() {
            return Some("a chunk runs past the end of the file");
        }
        if &header[4..8] == b"IEND" {
            return None;
        }
        at = end;
    }
}

/// Walks the marker segments and entropy-coded scans up to the EOI marker (0xFFD9). Bytes after
/// EOI (camera trailers, motion-photo videos) are allowed, so this is not just a look at the tail.
fn jpeg_incomplete(bytes: &[u8]) -> Option<&'static str> {
    const MISSING_EOI: &str = "no end-of-image marker";
    let mut at = 2; // SOI
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        if bytes.get(at) != Some(&0xFF) {
            return Some(MISSING_EOI);
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else {
            return Some(MISSING_EOI);
        };
        at += 1;
        match marker {
            0xD9 => return None,
            0x01 | 0xD0..=0xD7 => continue, // standalone markers carry no length
            _ => {}
        }
        let Some(len) = bytes.get(at..at + 2) else {
            return Some(MISSING_EOI);
        };
        at += usize::from(u16::from_be_bytes([len[0], len[1]]));
        if at > bytes.len() {
            return Some("a segment runs past the end of the file");
        }
        if marker == 0xDA {
            // Entropy-coded data: 0xFF is followed by 0x00 (stuffing) or a restart marker inside it.
            loop {
                match bytes.get(at..at + 2) {
                    None => return Some(MISSING_EOI),
                    Some([0xFF, next]) if *next != 0x00 && !(0xD0..=0xD7).contains(next) => break,
                    Some(_) => at += 1,
                }
            }
        }
    }
}

/// WebP is a RIFF container whose header states the payload size.
fn riff_incomplete(bytes: &[u8]) -> Option<&'static str> {
    let size = bytes.get(4..8).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)?;
    (bytes.len() < size.saturating_add(8)).then_some("shorter than its RIFF header says")
}

/// BMP's file header states the file size (some writers leave it 0: then the decoder decides).
fn bmp_incomplete(bytes: &[u8]) -> Option<&'static str> {
    let size = bytes.get(2..6).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)?;
    (size != 0 && bytes.len() < size).then_some("shorter than its header says")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb};

    const MAX: u64 = 40_000_000;

    fn sample(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8]))
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode test image");
        out.into_inner()
    }

    #[test]
    fn decodes_every_format_to_rgb() {
        let img = DynamicImage::ImageRgb8(sample(40, 30));
        for format in [ImageFormat::Png, ImageFormat::Tiff, ImageFormat::Bmp, ImageFormat::WebP] {
            let decoded = decode_bytes("t", &encode(&img, format), MAX).expect("decodes");
            assert_eq!(decoded, sample(40, 30), "{format:?} is lossless");
        }
        let jpeg = decode_bytes("t", &encode(&img, ImageFormat::Jpeg), MAX).expect("jpeg");
        assert_eq!(jpeg.dimensions(), (40, 30));
    }

    #[test]
    fn decodes_grey_rgba_and_16_bit_tiff() {
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([90])));
        let out = decode_bytes("g", &encode(&grey, ImageFormat::Tiff), MAX).expect("grey");
        assert_eq!(out.get_pixel(0, 0), &Rgb([90, 90, 90]));

        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            4,
            4,
            image::Rgba([10, 20, 30, 0]),
        ));
        let out = decode_bytes("a", &encode(&rgba, ImageFormat::Tiff), MAX).expect("rgba");
        assert_eq!(out.get_pixel(1, 1), &Rgb([10, 20, 30]));

        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            4,
            4,
            Rgb([65535u16, 0, 257 * 100]),
        ));
        let out = decode_bytes("d", &encode(&deep, ImageFormat::Tiff), MAX).expect("16-bit");
        assert_eq!(out.get_pixel(3, 3), &Rgb([255, 0, 100]));
    }

    #[test]
    fn refuses_truncated_files_of_every_format() {
        // A large, noisy image so that cutting it keeps the headers but loses pixel data.
        let noisy = RgbImage::from_fn(64, 64, |x, y| {
            let v =
                x.wrapping_mul(2_654_435_761).wrapping_add(y.wrapping_mul(40_503)).rotate_left(7);
            Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        });
        let img = DynamicImage::ImageRgb8(noisy);
        for format in [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Tiff,
            ImageFormat::Bmp,
            ImageFormat::WebP,
        ] {
            let bytes = encode(&img, format);
            for keep in [bytes.len() / 2, bytes.len() - 2] {
                let err = decode_bytes("cut", &bytes[..keep], MAX)
                    .expect_err(&format!("{format:?} cut to {keep} bytes must fail"));
                assert!(err.to_string().starts_with("cut: "), "{err}");
            }
        }
    }

    #[test]
    fn jpeg_with_trailer_after_eoi_is_complete() {
        let mut bytes = encode(&DynamicImage::ImageRgb8(sample(16, 16)), ImageFormat::Jpeg);
        bytes.extend_from_slice(b"trailing camera data");
        assert!(decode_bytes("t", &bytes, MAX).is_ok());
    }

    #[test]
    fn refuses_empty_text_and_oversized_input() {
        assert!(matches!(decode_bytes("e", b"", MAX), Err(DecodeError::Empty { .. })));
        assert!(matches!(
            decode_bytes("t.png", b"hello, not a picture\n", MAX),
            Err(DecodeError::UnknownFormat { .. })
        ));
        let png = encode(&DynamicImage::ImageRgb8(sample(100, 100)), ImageFormat::Png);
        let err = decode_bytes("big", &png, 9_999).expect_err("over the limit");
        assert!(matches!(err, DecodeError::TooLarge { width: 100, height: 100, .. }), "{err}");
        assert!(decode_bytes("ok", &png, 10_000).is_ok());
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = decode_file(Path::new("/nonexistent/x.png"), MAX).expect_err("missing");
        assert!(err.to_string().starts_with("/nonexistent/x.png: cannot read"), "{err}");
    }

    #[test]
    fn applies_exif_orientation() {
        // A 2x1 JPEG (left red-ish, right blue-ish) tagged "rotate 90 clockwise" decodes as 1x2.
        let img = RgbImage::from_fn(
            16,
            8,
            |x, _| {
                if x < 8 {
                    Rgb([250, 0, 0])
                } else {
                    Rgb([0, 0, 250])
                }
            },
        );
        let mut jpeg = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
        encoder.set_exif_metadata(exif_orientation(6)).expect("exif");
        encoder.write_image(img.as_raw(), 16, 8, image::ExtendedColorType::Rgb8).expect("encode");
        let out = decode_bytes("o", &jpeg, MAX).expect("decodes");
        assert_eq!(out.dimensions(), (8, 16));
        // After a clockwise quarter turn the left (red) half is on top.
        assert!(out.get_pixel(4, 2)[0] > 200 && out.get_pixel(4, 13)[2] > 200);
    }

    /// A minimal little-endian TIFF/EXIF block holding only the Orientation tag.
    fn exif_orientation(value: u16) -> Vec<u8> {
        let mut e = b"II*\0".to_vec();
        e.extend_from_slice(&8u32.to_le_bytes()); // IFD offset
        e.extend_from_slice(&1u16.to_le_bytes()); // one entry
        e.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        e.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        e.extend_from_slice(&1u32.to_le_bytes()); // count
        e.extend_from_slice(&value.to_le_bytes());
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        e
    }
}
