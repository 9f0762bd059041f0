//! The stored form of a capture's analysis (`Baseline.analysis` in the state store): a small JSON
//! header (size, model, tiles, greenery) followed by every tile's embedding as little-endian f32s,
//! so the next capture of the site is compared without a second encoder pass and the bytes mean the
//! same on every board.

use serde::{Deserialize, Serialize};

use crate::analysis::{CaptureAnalysis, TileBox, TileEmbedding};
use crate::state::{f32s_from_le_bytes, f32s_to_le_bytes};

/// First bytes of the format; a later layout gets a new magic and old baselines are re-made.
const MAGIC: &[u8; 4] = b"ECA1";

#[derive(Serialize, Deserialize)]
struct Header {
    width: u32,
    height: u32,
    model_sha256: String,
    greenery: f64,
    learned_veg: f64,
    /// Floats per embedding.
    dim: usize,
    tiles: Vec<StoredTile>,
}

#[derive(Serialize, Deserialize)]
struct StoredTile {
    #[serde(flatten)]
    tile: TileBox,
    valid_px: u64,
}

/// Why stored bytes are not an analysis this version can read.
#[derive(Debug, thiserror::Error)]
#[error("stored analysis is unreadable: {0}")]
pub struct Unreadable(&'static str);

/// `MAGIC | header length (u32 LE) | header JSON | embeddings (f32 LE, tile after tile)`.
pub fn encode(analysis: &CaptureAnalysis) -> Vec<u8> {
    let dim = analysis.tiles.first().map_or(0, |t| t.embedding.len());
    let header = Header {
        width: analysis.width,
        height: analysis.height,
        model_sha256: analysis.model_sha256.clone(),
        greenery: analysis.greenery,
        learned_veg: analysis.learned_veg,
        dim,
        tiles: analysis
            .tiles
            .iter()
            .map(|t| StoredTile { tile: t.tile, valid_px: t.valid_px })
            .collect(),
    };
    // Serialising plain numbers and strings cannot fail.
    let json = serde_json::to_vec(&header).unwrap_or_default();
    let mut bytes = Vec::with_capacity(8 + json.len() + analysis.tiles.len() * dim * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    for tile in &analysis.tiles {
        bytes.extend_from_slice(&f32s_to_le_bytes(&tile.embedding));
    }
    bytes
}

/// The inverse of [`encode`].
pub fn decode(bytes: &[u8]) -> Result<CaptureAnalysis, Unreadable> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(Unreadable("unknown format"))?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or(Unreadable("truncated header"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(Unreadable("truncated header"));
    }
    let (json, floats) = rest.split_at(len);
    let header: Header = serde_json::from_slice(json).map_err(|_| Unreadable("bad header"))?;
    let floats = f32s_from_le_bytes(floats).ok_or(Unreadable("truncated embeddings"))?;
    let dim = header.dim;
    if floats.len() != dim * header.tiles.len() {
        return Err(Unreadable("embedding count disagrees with the tiles"));
    }
    let tiles = header
        .tiles
        .into_iter()
        .enumerate()
        .map(|(i, t)| TileEmbedding {
            tile: t.tile,
            embedding: floats[i * dim..(i + 1) * dim].to_vec(),
            valid_px: t.valid_px,
        })
        .collect();
    Ok(CaptureAnalysis {
        width: header.width,
        height: header.height,
        model_sha256: header.model_sha256,
        tiles,
        greenery: header.greenery,
        learned_veg: header.learned_veg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis() -> CaptureAnalysis {
        let tile = |x, e: Vec<f32>| TileEmbedding {
            tile: TileBox { x, y: 0, w: 128, h: 128 },
            embedding: e,
            valid_px: 100 + u64::from(x),
        };
        CaptureAnalysis {
            width: 256,
            height: 128,
            model_sha256: "abc".into(),
            tiles: vec![
                tile(0, vec![1.5, -0.25, f32::MIN_POSITIVE]),
                tile(128, vec![0.1, 2.0, 3.0]),
            ],
            greenery: 0.123456789,
            learned_veg: 0.5,
        }
    }

    #[test]
    fn round_trips_exactly() {
        let a = analysis();
        assert_eq!(decode(&encode(&a)).expect("decodes"), a);
    }

    #[test]
    fn damaged_bytes_are_refused() {
        let bytes = encode(&analysis());
        assert!(decode(&bytes[..bytes.len() - 4]).is_err());
        assert!(decode(&bytes[..10]).is_err());
        assert!(decode(b"JSON{}").is_err());
    }
}
