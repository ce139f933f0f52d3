//! Anchors on SmolLM2-135M for a few prompts of the generated dataset: generated, cached,
//! reused on rerun, invalidated when the data or settings change, resumed after a kill with the
//! same files, and identical across batch sizes.

use std::path::{Path, PathBuf};

use bapo_anchors::{AnchorSettings, Decoding, FingerprintInputs, compute_anchors};
use bapo_data::{Tokenization, TokenizedExample, TruncationSettings, load_jsonl, tokenize_dataset};
use bapo_model::{LoadedModel, TokenBatch, sequence_logprobs};
use burn::tensor::Device;

const LIMITS: TruncationSettings = TruncationSettings {
    max_length: 128,
    max_prompt_length: None,
};

fn examples(loaded: &LoadedModel) -> Vec<TokenizedExample> {
    let path = bapo_testkit::workspace_root().join("data/personalised/preferences.jsonl");
    let data = load_jsonl(&path).unwrap().for_user("concise").unwrap();
    let tokenization = Tokenization {
        tokenizer: &loaded.tokenizer,
        chat_template: loaded.chat_template.as_ref(),
        eos_token: loaded.eos_token,
    };
    let (examples, _) = tokenize_dataset(&data, &tokenization, &LIMITS).unwrap();
    examples.into_iter().take(5).collect()
}

fn inputs(data: &str, settings: AnchorSettings) -> FingerprintInputs {
    FingerprintInputs {
        model: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
        data: data.into(),
        chat_template: String::new(),
        vocab_size: 49_152,
        max_length: LIMITS.max_length,
        max_prompt_length: LIMITS.max_prompt_length,
        user: Some("concise".into()),
        examples: String::new(),
        settings,
        precision: bapo_model::Precision::F32,
        base_dtype: bapo_model::Precision::F32,
        base_quantization: bapo_model::BaseQuantization::None,
    }
}

fn cache(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-anchors-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn anchors_are_generated_cached_invalidated_and_resumed() {
    let Some(gguf) = bapo_testkit::smollm2_gguf() else {
        return;
    };
    let device = Device::flex();
    let loaded = LoadedModel::open(&gguf, &device).unwrap();
    let examples = examples(&loaded);
    let settings = AnchorSettings {
        max_new_tokens: 8,
        chunk_size: 2,
        ..AnchorSettings::default()
    };
    let run = |inputs: &FingerprintInputs, dir: &Path| {
        compute_anchors(
            &loaded.model,
            &examples,
            inputs,
            Decoding::new(loaded.eos_token, loaded.pad_token),
            dir,
            &device,
        )
        .unwrap()
    };

    let dir = cache("main");
    let base_inputs = inputs("data-sha-1", settings.clone());
    let (first, report) = run(&base_inputs, &dir);
    assert_eq!((report.computed_chunks, report.reused_chunks), (3, 0));
    assert_eq!(first.len(), 5);
    assert!(report.generated_tokens > 0);

    // The reference log-probs are the scorer's, and base responses are real generations.
    let e = &examples[0];
    let direct = sequence_logprobs(
        &loaded.model,
        &TokenBatch {
            ids: vec![[e.prompt.clone(), e.chosen.clone()].concat()],
            scored: vec![
                (0..e.prompt.len() + e.chosen.len())
                    .map(|i| i >= e.prompt.len())
                    .collect(),
            ],
            pad_id: loaded.pad_token,
        },
        &device,
    )
    .unwrap();
    let direct: f32 = direct.total.into_scalar();
    assert!(
        (first[0].chosen_logp - direct).abs() < 1e-3,
        "{} vs {direct}",
        first[0].chosen_logp
    );
    assert!(
        first
            .iter()
            .all(|a| !a.base[0].is_empty() && a.base[0].len() <= 8 && a.base_logps[0] < 0.0)
    );

    // Rerun: everything reused, identical results.
    let (again, report) = run(&base_inputs, &dir);
    assert_eq!(
        (
            report.computed_chunks,
            report.reused_chunks,
            report.generated_tokens
        ),
        (0, 3, 0)
    );
    assert_eq!(again, first);

    // A change of data or settings is a new fingerprint: recomputed, never the old results.
    let other_data = inputs("data-sha-2", settings.clone());
    assert_ne!(other_data.fingerprint(), base_inputs.fingerprint());
    assert_eq!(run(&other_data, &dir).1.computed_chunks, 3);
    let shorter = inputs(
        "data-sha-1",
        AnchorSettings {
            max_new_tokens: 4,
            ..settings.clone()
        },
    );
    let (short, report) = run(&shorter, &dir);
    assert_eq!(report.computed_chunks, 3);
    assert!(short.iter().all(|a| a.base[0].len() <= 4));

    // Killed after the first chunk: the rerun computes only what is missing and ends with the
    // same files.
    let fingerprint_dir = dir.join(base_inputs.fingerprint());
    let complete = files(&fingerprint_dir);
    for name in ["chunk-000001.json", "chunk-000002.json"] {
        std::fs::remove_file(fingerprint_dir.join(name)).unwrap();
    }
    std::fs::write(
        fingerprint_dir.join("chunk-000001.partial"),
        b"half a chunk",
    )
    .unwrap();
    let (resumed, report) = run(&base_inputs, &dir);
    assert_eq!((report.computed_chunks, report.reused_chunks), (2, 1));
    assert_eq!(resumed, first);
    let after: Vec<_> = files(&fingerprint_dir)
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".partial"))
        .collect();
    assert_eq!(after, complete);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn greedy_base_responses_do_not_depend_on_the_batch_size() {
    let Some(gguf) = bapo_testkit::smollm2_gguf() else {
        return;
    };
    let device = Device::flex();
    let loaded = LoadedModel::open(&gguf, &device).unwrap();
    let examples = examples(&loaded);
    let base = |chunk_size: usize| {
        let dir = cache(&format!("batch{chunk_size}"));
        let settings = AnchorSettings {
            max_new_tokens: 8,
            chunk_size,
            ..AnchorSettings::default()
        };
        let (anchors, _) = compute_anchors(
            &loaded.model,
            &examples,
            &inputs("d", settings),
            Decoding::new(loaded.eos_token, loaded.pad_token),
            &dir,
            &device,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        anchors
    };
    let (one, five) = (base(1), base(5));
    for (a, b) in one.iter().zip(&five) {
        assert_eq!(a.base, b.base, "line {}", a.line);
        assert!((a.chosen_logp - b.chosen_logp).abs() < 1e-3);
    }
}

/// References for MRPO must share the policy's tokenizer.
#[test]
fn references_with_another_tokenizer_are_refused() {
    let Some(gguf) = bapo_testkit::smollm2_gguf() else {
        return;
    };
    let file = bapo_model::GgufFile::open(&gguf).unwrap();
    let policy = bapo_model::tokenizer_from_gguf(&file).unwrap();
    let same = bapo_model::tokenizer_from_gguf(&file).unwrap();
    bapo_anchors::check_same_tokenizer(&policy, &same, "ref-1").unwrap();

    let mut other = bapo_model::tokenizer_from_gguf(&file).unwrap();
    other.add_tokens(&[tokenizers::AddedToken::from("<|extra|>", true)]);
    let message = bapo_anchors::check_same_tokenizer(&policy, &other, "ref-1")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("ref-1") && message.contains("49153"),
        "{message}"
    );
}
