//! The encoder: its model card (models/<name>.json), loading and checking the .onnx against it,
//! and one tract pass per prepared tile.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use super::tiles::PreparedTile;

/// What models/CONTRACT.md promises about a model; unknown fields are for people and ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub encoding: String,
    pub input: CardInput,
    pub output: CardOutput,
    /// Calibrated L2 distance: a tile changed when its distance is above it.
    pub threshold: f64,
    pub vegetation: CardVegetation,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CardInput {
    pub image: String,
    pub mask: String,
    pub size: u32,
    pub channel_order: String,
    pub layout: String,
    pub resize_filter: String,
    pub normalization: Normalization,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Normalization {
    pub mean: f32,
    pub std: f32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CardOutput {
    pub name: String,
    pub size: usize,
}

/// Embedding norm → vegetation fraction: linear between these norms, clamped to [0, 1].
#[derive(Debug, Clone, Deserialize)]
pub struct CardVegetation {
    pub norm_at_0: f64,
    pub norm_at_1: f64,
}

impl CardVegetation {
    pub fn fraction(&self, norm: f64) -> f64 {
        ((norm - self.norm_at_0) / (self.norm_at_1 - self.norm_at_0)).clamp(0.0, 1.0)
    }
}

/// Why a model cannot be used; fatal for `check` and for the daemon's start-up.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: invalid model card: {reason}")]
    Card { path: String, reason: String },
    #[error("{path}: sha256 {actual} disagrees with its card {card} ({expected})")]
    Sha256 { path: String, card: String, expected: String, actual: String },
    #[error("{path}: input `{input}` has shape {actual}, its card says {expected}")]
    Shape { path: String, input: String, expected: String, actual: String },
    #[error("{path}: cannot load the model: {reason}")]
    Load { path: String, reason: String },
    #[error("{path}: inference failed: {reason}")]
    Inference { path: String, reason: String },
}

/// A loaded, checked and optimised encoder. `Send + Sync`: share one behind an `Arc` or a
/// reference between threads; every `embed` call runs in its own tract state.
#[derive(Debug)]
pub struct Encoder {
    path: PathBuf,
    card: ModelCard,
    plan: Arc<TypedRunnableModel>,
    /// Position of the image and mask inputs in the graph's input list.
    image_slot: usize,
    mask_slot: usize,
}

impl Encoder {
    /// Loads `<dir>/<name>.onnx` and its card `<dir>/<name>.json`, refusing any disagreement.
    pub fn load(onnx: &Path) -> Result<Encoder, ModelError> {
        let path_str = onnx.display().to_string();
        let card_path = onnx.with_extension("json");
        let card = read_card(&card_path)?;

        let bytes = std::fs::read(onnx)
            .map_err(|source| ModelError::Read { path: path_str.clone(), source })?;
        // The hash (tens of ms on a board without SHA instructions, a Pi 4) runs beside the
        // parse; a disagreement is reported before anything the parse found.
        let (actual, parsed) = std::thread::scope(|scope| {
            let hashing = scope.spawn(|| hex(&Sha256::digest(&bytes)));
            let parsed = tract_onnx::onnx()
                .model_for_read(&mut bytes.as_slice())
                .and_then(|model| model.into_typed());
            (super::join(hashing), parsed)
        });
        if !actual.eq_ignore_ascii_case(card.sha256.trim()) {
            return Err(ModelError::Sha256 {
                path: path_str,
                card: card_path.display().to_string(),
                expected: card.sha256.clone(),
                actual,
            });
        }

        let load_err =
            |e: TractError| ModelError::Load { path: path_str.clone(), reason: format!("{e:#}") };
        let typed = parsed.map_err(load_err)?;

        let inputs = typed.input_outlets().map_err(load_err)?;
        if inputs.len() != 2 {
            return Err(ModelError::Load {
                path: path_str,
                reason: format!("{} inputs, the contract has two (image, mask)", inputs.len()),
            });
        }
        let slot = |name: &str| -> Result<usize, ModelError> {
            inputs.iter().position(|o| typed.node(o.node).name == name).ok_or_else(|| {
                ModelError::Load {
                    path: path_str.clone(),
                    reason: format!("no input named `{name}` (from its card)"),
                }
            })
        };
        let (image_slot, mask_slot) = (slot(&card.input.image)?, slot(&card.input.mask)?);
        let s = card.input.size as usize;
        for (slot, name, expected) in [
            (image_slot, &card.input.image, [1, 3, s, s]),
            (mask_slot, &card.input.mask, [1, 1, s, s]),
        ] {
            let fact = typed.input_fact(slot).map_err(load_err)?;
            if fact.shape.as_concrete() != Some(&expected[..])
                || fact.datum_type != f32::datum_type()
            {
                return Err(ModelError::Shape {
                    path: path_str,
                    input: name.clone(),
                    expected: format!("{expected:?} f32"),
                    actual: format!("{:?} {:?}", fact.shape, fact.datum_type),
                });
            }
        }
        let plan = optimise(typed).map_err(load_err)?;
        Ok(Encoder { path: onnx.to_owned(), card, plan, image_slot, mask_slot })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model input side in pixels (tiles are resized to it).
    pub fn input_size(&self) -> u32 {
        self.card.input.size
    }

    /// One encoder pass: normalised RGB (masked pixels zeroed) and the mask → the raw embedding.
    pub fn embed(&self, tile: &PreparedTile) -> Result<Vec<f32>, ModelError> {
        let s = self.card.input.size as usize;
        let Normalization { mean, std } = self.card.input.normalization;
        let mut image = vec![0f32; 3 * s * s];
        let mut mask = vec![0f32; s * s];
        for (i, (px, valid)) in tile.rgb.pixels().zip(&tile.valid).enumerate() {
            if *valid {
                mask[i] = 1.0;
                for c in 0..3 {
                    image[c * s * s + i] = (f32::from(px[c]) - mean) / std;
                }
            }
        }
        let infer_err = |e: TractError| ModelError::Inference {
            path: self.path.display().to_string(),
            reason: format!("{e:#}"),
        };
        let image: TValue = Tensor::from_shape(&[1, 3, s, s], &image).map_err(infer_err)?.into();
        let mask: TValue = Tensor::from_shape(&[1, 1, s, s], &mask).map_err(infer_err)?.into();
        let inputs =
            if self.image_slot < self.mask_slot { tvec![image, mask] } else { tvec![mask, image] };
        let outputs = self.plan.run(inputs).map_err(infer_err)?;
        let view = outputs[0].to_plain_array_view::<f32>().map_err(infer_err)?;
        let embedding: Vec<f32> = view.iter().copied().collect();
        if embedding.len() != self.card.output.size {
            return Err(ModelError::Inference {
                path: self.path.display().to_string(),
                reason: format!(
                    "embedding has {} values, its card says {}",
                    embedding.len(),
                    self.card.output.size
                ),
            });
        }
        Ok(embedding)
    }
}

/// Declutter, run every convolution channel-last, then optimise for this CPU.
///
/// ONNX convolutions are NCHW. tract runs an NCHW depthwise convolution as a walk over each
/// channel's plane, which on the small planes of a 128-pixel tile spends much of its time at
/// plane borders. tract's `conv_nhwc` transform makes every convolution channel-last (the layout
/// moves between consecutive convolutions cancel, one remains at the input), so a depthwise tap
/// is one contiguous run over the channels. Measured per node on the fp32 encoder (x86-64, idle):
/// DepthWiseConv 4.9 → 3.1 ms, a whole pass 8.5 → 7.2 ms. Quantised convolutions are left as
/// they are. The arithmetic is the same up to summation order (the golden tests hold).
fn optimise(typed: TypedModel) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = typed.into_decluttered()?;
    let nhwc = tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
        .ok_or_else(|| TractError::msg("tract has no conv_nhwc transform"))?;
    model.transform(&*nhwc)?;
    model.into_optimized()?.into_runnable()
}

/// Reads and checks a model card: only what this code can honour is accepted.
pub fn read_card(path: &Path) -> Result<ModelCard, ModelError> {
    let path_str = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| ModelError::Read { path: path_str.clone(), source })?;
    let card: ModelCard = serde_json::from_str(&text)
        .map_err(|e| ModelError::Card { path: path_str.clone(), reason: e.to_string() })?;
    let problem = |reason: String| Err(ModelError::Card { path: path_str.clone(), reason });
    let i = &card.input;
    if i.channel_order != "RGB"
        || i.layout != "NCHW"
        || !i.resize_filter.eq_ignore_ascii_case("triangle")
    {
        return problem(format!(
            "unsupported input {}/{}/{} (this build reads RGB/NCHW/triangle)",
            i.channel_order, i.layout, i.resize_filter
        ));
    }
    if i.size == 0 || i.normalization.std == 0.0 || card.output.size == 0 {
        return problem("input size, normalization.std and output size must be non-zero".into());
    }
    if !(card.threshold.is_finite() && card.threshold > 0.0) {
        return problem(format!("threshold {} must be a positive number", card.threshold));
    }
    if card.vegetation.norm_at_1 == card.vegetation.norm_at_0 {
        return problem("vegetation.norm_at_0 and norm_at_1 must differ".into());
    }
    Ok(card)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn encoder_is_shareable_between_threads() {
        assert_send_sync::<Encoder>();
    }

    #[test]
    fn vegetation_mapping_is_linear_and_clamped() {
        let v = CardVegetation { norm_at_0: 1.0, norm_at_1: 3.0 };
        assert_eq!(v.fraction(2.0), 0.5);
        assert_eq!(v.fraction(0.2), 0.0);
        assert_eq!(v.fraction(9.0), 1.0);
    }

    #[test]
    fn sha256_hex_is_lower_case() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
