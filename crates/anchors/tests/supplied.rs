//! A base response supplied in the data (`base`) is used as that example's anchor (and scored
//! by the reference); examples without one get the reference's own answer.

use bapo_anchors::{AnchorSettings, Decoding, FingerprintInputs, compute_anchors, examples_sha256};
use bapo_data::TokenizedExample;
use bapo_model::{LoadedModel, TokenBatch, sequence_logprobs};
use burn::tensor::Device;

#[test]
fn a_supplied_base_response_is_the_anchor() {
    let device = Device::flex();
    let dir = bapo_testkit::workspace_root().join("tests/fixtures/tiny-chat");
    let model = LoadedModel::open(&dir, &device).unwrap();
    let ids = |text: &str| model.encode(text).unwrap();
    let prompt =
        ids("<|im_start|>user\nwhat colour is the sky ?<|im_end|>\n<|im_start|>assistant\n");
    let mut supplied = ids("it is blue .<|im_end|>");
    let example = |base: Option<Vec<u32>>, line| TokenizedExample {
        prompt: prompt.clone(),
        chosen: ids("it is blue .<|im_end|>"),
        rejected: ids("it is green .<|im_end|>"),
        base,
        user: None,
        entity: None,
        line,
    };
    let examples = vec![example(Some(supplied.clone()), 1), example(None, 2)];
    let settings = AnchorSettings {
        max_new_tokens: 4,
        chunk_size: 2,
        ..AnchorSettings::default()
    };
    let inputs = FingerprintInputs {
        model: "tiny".into(),
        data: "inline".into(),
        chat_template: String::new(),
        vocab_size: model.vocab_size(),
        max_length: 64,
        max_prompt_length: None,
        user: None,
        examples: examples_sha256(&examples),
        settings,
        precision: bapo_model::Precision::F32,
        base_dtype: bapo_model::Precision::F32,
        base_quantization: bapo_model::BaseQuantization::None,
    };
    let cache = std::env::temp_dir().join(format!("bapo-anchors-supplied-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let compute = || {
        compute_anchors(
            &model.model,
            &examples,
            &inputs,
            Decoding::new(model.eos_token, model.pad_token),
            &cache,
            &device,
        )
    };
    let (anchors, report) = compute().unwrap();
    assert_eq!(
        anchors[0].base,
        vec![supplied.clone()],
        "the supplied answer is the anchor"
    );
    assert_eq!(
        anchors[1].base[0].len(),
        4,
        "the other example's anchor is generated"
    );
    assert_eq!(
        report.generated_tokens, 4,
        "only the example without a base generated"
    );
    let expected = sequence_logprobs(
        &model.model,
        &TokenBatch::from_pairs([(&prompt[..], &supplied[..])], model.pad_token),
        &device,
    )
    .unwrap()
    .total
    .into_scalar::<f32>();
    assert!((anchors[0].base_logps[0] - expected).abs() < 1e-4);

    // A cache chunk edited by hand is refused by name before the model sees it: a token id
    // outside the vocabulary, base log-probs missing, a log-prob that is not a number.
    let chunk = cache.join(inputs.fingerprint()).join("chunk-000000.json");
    let good = std::fs::read_to_string(&chunk).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&good).unwrap();
    edited[1]["base"][0][0] = 999_999.into();
    let mut short = serde_json::from_str::<serde_json::Value>(&good).unwrap();
    short[0]["base_logps"] = serde_json::json!([]);
    let mut text = serde_json::from_str::<serde_json::Value>(&good).unwrap();
    text[0]["chosen_logp"] = "NaN".into();
    // A generated base response longer than max_new_tokens (issue #26: 500 tokens for 6 were
    // trained on), a supplied one replaced, a log-prob above 0.
    let mut long = serde_json::from_str::<serde_json::Value>(&good).unwrap();
    long[1]["base"][0].as_array_mut().unwrap().push(5.into());
    let mut swapped = serde_json::from_str::<serde_json::Value>(&good).unwrap();
    swapped[0]["base"][0][0] = 5.into();
    let mut positive = serde_json::from_str::<serde_json::Value>(&good).unwrap();
    positive[1]["base_logps"][0] = 0.5.into();
    for (bad, expected) in [
        (
            edited,
            "line 2 holds token id 999999, outside the vocabulary",
        ),
        (short, "line 1 has 0 base log-probs for 1 base responses"),
        (text, "chunk-000000.json: corrupt cache chunk"),
        (
            long,
            "line 2 has 5 tokens, more than anchors.max_new_tokens = 4",
        ),
        (
            swapped,
            "the base response of line 1 is not the one its data supplies",
        ),
        (positive, "line 2 has a log-prob of 0.5, above 0"),
    ] {
        std::fs::write(&chunk, bad.to_string()).unwrap();
        let err = compute().unwrap_err().to_string();
        assert!(
            err.contains(expected) && err.contains("--force-anchors"),
            "{err}"
        );
    }
    std::fs::write(&chunk, good).unwrap();

    // A cache folder whose inputs.json records other inputs (copied from another run's
    // cache under this name) is refused by name.
    let inputs_file = cache.join(inputs.fingerprint()).join("inputs.json");
    let recorded = std::fs::read_to_string(&inputs_file).unwrap();
    std::fs::write(&inputs_file, recorded.replace("\"tiny\"", "\"other\"")).unwrap();
    let err = compute().unwrap_err().to_string();
    assert!(
        err.contains("inputs.json") && err.contains("made for other inputs"),
        "{err}"
    );
    std::fs::write(&inputs_file, recorded).unwrap();
    compute().unwrap();

    // Another supplied base is another cache entry.
    supplied.insert(0, supplied[0]);
    let changed = vec![example(Some(supplied), 1), example(None, 2)];
    assert_ne!(examples_sha256(&changed), examples_sha256(&examples));
}
