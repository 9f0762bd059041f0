//! The library's analysis with the real model: the tile pool of a pair gives what one capture at
//! a time on one thread gives.

use edge_change::analysis::{Analyzer, Encoder, Mask, Settings};

use crate::harness::{cleared, field, model};

#[test]
fn a_pair_on_several_threads_equals_each_capture_alone() {
    let Some(model) = model() else { return };
    let settings = Settings { tile: 64, ..Settings::default() };
    let alone = Analyzer::new(Encoder::load(&model).expect("model"), settings.clone());
    let pooled =
        Analyzer::new(Encoder::load(&model).expect("model"), settings).with_tile_threads(3);
    // 200x136: a 4x3 grid with flush edge tiles; the mask removes the top-left tile wholly and
    // half of the one beside it, so skipped and partial tiles are both in the pool.
    let (before, after) = (field(200, 136), cleared(200, 136));
    let mask = Mask::from_fn(200, 136, |x, y| !(y < 64 && (x < 64 || (x < 128 && y < 32))));

    let (b, a) = pooled.embed_pair(&before, &after, Some(&mask)).expect("pair");
    let b1 = alone.embed_capture(&before, Some(&mask)).expect("before");
    let a1 = alone.embed_capture(&after, Some(&mask)).expect("after");
    assert_eq!(b.tiles.len(), 11, "the wholly masked tile is skipped");
    assert_eq!((&b, &a), (&b1, &a1));
    assert!(pooled.compare(&b, &a).expect("compare").changed, "soil over the field is a change");
}

#[test]
fn a_pair_whose_mask_leaves_nothing_is_an_error_naming_the_mask() {
    let Some(model) = model() else { return };
    let analyzer = Analyzer::new(Encoder::load(&model).expect("model"), Settings::default())
        .with_tile_threads(2);
    let mask = Mask::from_fn(64, 64, |_, _| false);
    let err = analyzer.embed_pair(&field(64, 64), &field(64, 64), Some(&mask)).unwrap_err();
    assert!(err.to_string().contains("leaves no pixel"), "{err}");
}
