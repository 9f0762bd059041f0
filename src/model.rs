//! Finding the encoder on disk: an explicit path, or the default encoding for this architecture
//! in the repo's `models/` (from the working directory or the executable's location) or the
//! installed `/usr/share/edge-change/models`.

use std::path::{Path, PathBuf};

/// Where packages install the models.
pub const INSTALLED_MODELS: &str = "/usr/share/edge-change/models";

/// Both encodings of the encoder, in the order `bench` reports them.
pub const MODEL_NAMES: [&str; 2] = ["encoder-fp32", "encoder-int8"];

/// The encoding used when none is configured: the one measured faster (`edge-change bench`; see
/// the README's performance section). That is fp32 on every architecture for now: tract has no
/// int8 depthwise kernel and lowers the quantized depthwise convolutions to im2col plus a matmul
/// per group, which is ~35x slower than fp32 on x86-64, and that lowering does not depend on the
/// CPU's dot-product instructions. Run `edge-change bench` on a board before choosing int8.
pub fn default_model_name() -> &'static str {
    "encoder-fp32"
}

/// Folders searched for models, in order: ./models, a `models/` beside the executable or in any
/// folder above it (target/release/edge-change in a checkout), then the installed folder.
pub fn model_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd.join("models"));
    }
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).map(|d| d.join("models")));
    }
    dirs.push(PathBuf::from(INSTALLED_MODELS));
    dirs.dedup();
    dirs
}

#[derive(Debug, thiserror::Error)]
#[error("no model found: looked for {name}.onnx in {searched} (use --model FILE or model.path)")]
pub struct NotFound {
    name: String,
    searched: String,
}

/// The model to load: `explicit` (from --model or the config) if given, else the default encoding.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, NotFound> {
    match explicit {
        Some(path) if !path.as_os_str().is_empty() => Ok(path.to_owned()),
        _ => find(default_model_name()),
    }
}

/// `<name>.onnx` in the first model folder that has it.
pub fn find(name: &str) -> Result<PathBuf, NotFound> {
    let dirs = model_dirs();
    let file = format!("{name}.onnx");
    dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()).ok_or_else(|| NotFound {
        name: name.to_owned(),
        searched: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_one_of_the_shipped_encodings() {
        assert!(MODEL_NAMES.contains(&default_model_name()));
    }

    #[test]
    fn installed_folder_is_searched_last() {
        assert_eq!(model_dirs().last().map(PathBuf::as_path), Some(Path::new(INSTALLED_MODELS)));
    }

    #[test]
    fn explicit_path_wins() {
        let p = Path::new("/tmp/x.onnx");
        assert_eq!(locate(Some(p)).expect("explicit"), p);
    }
}
