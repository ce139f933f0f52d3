//! The fingerprint names every cache folder: its hashed JSON must keep the layout every cache
//! so far was keyed by (the settings flat, in their order), whatever shape the Rust types
//! take, or every user's cached anchors would silently be recomputed.

use bapo_anchors::{AnchorSettings, FingerprintInputs};
use bapo_model::{BaseQuantization, Precision, Sampling};
use sha2::{Digest, Sha256};

#[test]
fn the_fingerprint_hashes_the_layout_every_cache_was_keyed_by() {
    let inputs = FingerprintInputs {
        model: "m".into(),
        data: "d".into(),
        chat_template: "t".into(),
        vocab_size: 7,
        max_length: 64,
        max_prompt_length: Some(32),
        user: Some("u".into()),
        examples: "e".into(),
        settings: AnchorSettings {
            sampling: Sampling {
                temperature: 0.7,
                top_k: 5,
                top_p: 0.9,
                seed: 3,
            },
            num_anchors: 2,
            ..AnchorSettings::default()
        },
        precision: Precision::F32,
        base_dtype: Precision::F32,
        base_quantization: BaseQuantization::None,
    };
    // As written by the releases before `Sampling` existed (the settings had the four
    // sampling fields of their own).
    let keyed = r#"{"model":"m","data":"d","chat_template":"t","vocab_size":7,"max_length":64,"max_prompt_length":32,"user":"u","examples":"e","settings":{"max_new_tokens":128,"temperature":0.7,"top_k":5,"top_p":0.9,"seed":3,"num_anchors":2,"chunk_size":16}}"#;
    assert_eq!(
        inputs.fingerprint(),
        format!("{:x}", Sha256::digest(keyed.as_bytes()))
    );

    // bf16 (compute, and a base held in bf16) is recorded after everything else.
    let bf16 = FingerprintInputs {
        precision: Precision::Bf16,
        base_dtype: Precision::Bf16,
        ..inputs
    };
    let keyed = keyed.replace(
        r#""chunk_size":16}}"#,
        r#""chunk_size":16},"precision":"bf16","base_dtype":"bf16"}"#,
    );
    assert_eq!(
        bf16.fingerprint(),
        format!("{:x}", Sha256::digest(keyed.as_bytes()))
    );

    // So is a quantized base, after those.
    let quantized = FingerprintInputs {
        base_quantization: BaseQuantization::Q4,
        ..bf16
    };
    let keyed = keyed.replace(
        r#""base_dtype":"bf16"}"#,
        r#""base_dtype":"bf16","base_quantization":"q4"}"#,
    );
    assert_eq!(
        quantized.fingerprint(),
        format!("{:x}", Sha256::digest(keyed.as_bytes()))
    );
}
