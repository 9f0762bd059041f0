//! The shipped models: every card in models/ names the sha256 of its .onnx, and the file matches it
//! (issue 2: a cheap check that the card and the weights travel together). No inference here.

use sha2::{Digest, Sha256};

use crate::harness::repo;

#[test]
fn shipped_models_match_their_cards() {
    let dir = repo().join("models");
    let mut checked = 0;
    for name in ["encoder-fp32", "encoder-int8"] {
        let card_path = dir.join(format!("{name}.json"));
        let onnx_path = dir.join(format!("{name}.onnx"));
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&card_path).expect("card is shipped"))
                .expect("card is JSON");
        let bytes = std::fs::read(&onnx_path).expect("model is shipped");
        let digest = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(card["sha256"].as_str(), Some(digest.as_str()), "{}", card_path.display());
        assert_eq!(card["name"].as_str(), Some(name));
        assert_eq!(card["file_bytes"].as_u64(), Some(bytes.len() as u64));
        let threshold = card["threshold"].as_f64().expect("threshold is a number");
        assert!(threshold > 0.0, "{name}: threshold {threshold}");
        let veg = &card["vegetation"];
        assert!(veg["norm_at_1"].as_f64() > veg["norm_at_0"].as_f64(), "{name}: norm mapping");
        checked += 1;
    }
    assert_eq!(checked, 2);
}
