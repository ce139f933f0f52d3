//! SmolLM2-135M-Instruct from its GGUF (the real model, fetched by `cargo xtask fetch`)
//! reproduces the reference values of the spec (`shared/spec/assets.md`): architecture,
//! parameter count, token ids of the tokenizer built from the GGUF metadata (exactly), and
//! next-token log-probs after "The capital of France is" within 1e-2.

mod common;

use std::path::PathBuf;

use bapo_model::{
    BatchError, CausalModel, ChatMessage, ChatTemplate, GenerationConfig, GgufFile, Llama,
    LlamaConfig, Sampling, TokenBatch, generate, sequence_logprobs, tokenizer_from_gguf,
};
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

fn smollm2() -> Option<PathBuf> {
    bapo_testkit::smollm2_gguf()
}

#[test]
fn config_and_parameter_count_match_the_spec() {
    let Some(path) = smollm2() else { return };
    let file = GgufFile::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    assert_eq!(
        config,
        LlamaConfig {
            vocab_size: 49_152,
            hidden_size: 576,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            intermediate_size: 1536,
            rope_theta: 100_000.0,
            // Stored as f32 in the file.
            rms_norm_eps: f64::from(1e-5f32),
            tied_embeddings: true,
            max_positions: Some(8192),
        }
    );
    let (model, _) = Llama::from_gguf(&file, &Device::flex()).unwrap();
    assert_eq!(model.num_params(), 134_515_008);
}

#[test]
fn next_token_log_probs_match_the_reference() {
    let Some(path) = smollm2() else { return };
    let file = GgufFile::open(&path).unwrap();
    let device = Device::flex();
    let (model, _) = Llama::from_gguf(&file, &device).unwrap();

    // "The capital of France is"
    let ids: Vec<i64> = vec![504, 3575, 282, 4649, 314];
    let tokens = ids.len();
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, tokens]), &device);
    let logits = model.forward(input);
    let last = logits.narrow(1, tokens - 1, 1).reshape([49_152]);
    let logp: Vec<f32> = log_softmax(last, 0)
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap();

    let top = logp
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap();
    assert_eq!(top, 7042, "top-1 is \" Paris\"");
    for (id, expected, word) in [
        (7042, -0.258, " Paris"),
        (4528, -4.384, " London"),
        (11452, -6.921, " Berlin"),
    ] {
        let got = logp[id];
        assert!(
            (got - expected).abs() <= 1e-2,
            "{word}: log-prob {got}, reference {expected}"
        );
    }
}

/// Full-vocabulary log-softmax of one unpadded sequence: the naive computation the efficient
/// scorer must equal.
fn naive_log_probs(model: &Llama, ids: &[u32], device: &Device) -> Vec<f32> {
    let tokens = ids.len();
    let data: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(data, [1, tokens]), device);
    let logp = log_softmax(model.forward(input), 2).reshape([tokens, 49_152]);
    let rows: Vec<f32> = logp.into_data().convert::<f32>().try_to_vec().unwrap();
    // Log-prob of token t given the tokens before it (0 for the first token).
    (0..tokens)
        .map(|t| {
            if t == 0 {
                0.0
            } else {
                rows[(t - 1) * 49_152 + ids[t] as usize]
            }
        })
        .collect()
}

#[test]
fn batched_sequence_log_probs_equal_the_naive_computation() {
    let Some(path) = smollm2() else { return };
    let file = GgufFile::open(&path).unwrap();
    let device = Device::flex();
    let (model, _) = Llama::from_gguf(&file, &device).unwrap();

    // "The capital of France is" + " Paris", and the same + "." (different lengths: the first
    // is right-padded), completions scored.
    let short = vec![504, 3575, 282, 4649, 314, 7042];
    let long = vec![504, 3575, 282, 4649, 314, 7042, 30];
    let batch = TokenBatch {
        ids: vec![short.clone(), long.clone()],
        scored: vec![
            vec![false, false, false, false, false, true],
            vec![false, false, false, false, false, true, true],
        ],
        pad_id: 2,
    };
    let scored = sequence_logprobs(&model, &batch, &device).unwrap();
    let per_token: Vec<f32> = scored
        .per_token
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap();
    let total: Vec<f32> = scored
        .total
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap();

    for (b, ids) in [short, long].iter().enumerate() {
        let naive = naive_log_probs(&model, ids, &device);
        let mut expected_total = 0.0;
        for t in 0..7 {
            let expected = if t < ids.len() && batch.scored[b][t] {
                naive[t]
            } else {
                0.0
            };
            expected_total += expected;
            let got = per_token[b * 7 + t];
            assert!(
                (got - expected).abs() <= 1e-4,
                "sequence {b} token {t}: {got} vs {expected}"
            );
        }
        assert!(
            (total[b] - expected_total).abs() <= 1e-4,
            "sequence {b}: {} vs {expected_total}",
            total[b]
        );
    }
    // The spec's reference: " Paris" after the prompt.
    assert!((total[0] - -0.258).abs() <= 1e-2, "{}", total[0]);
}

#[test]
fn sequence_log_probs_carry_gradient_on_an_autodiff_device() {
    let Some(path) = smollm2() else { return };
    let file = GgufFile::open(&path).unwrap();
    let device = Device::flex().autodiff();
    let (model, _) = Llama::from_gguf(&file, &device).unwrap();
    let batch = TokenBatch {
        ids: vec![vec![504, 3575, 282, 4649, 314, 7042]],
        scored: vec![vec![false, false, false, false, false, true]],
        pad_id: 2,
    };
    let scored = sequence_logprobs(&model, &batch, &device).unwrap();
    let grads = scored.total.sum().backward();
    let norm_grad = model
        .norm
        .gamma
        .val()
        .grad(&grads)
        .expect("the final norm gets a gradient");
    let magnitude: f32 = norm_grad.abs().sum().into_scalar();
    assert!(magnitude > 0.0 && magnitude.is_finite(), "{magnitude}");
}

#[test]
fn malformed_batches_are_errors() {
    let Some(path) = smollm2() else { return };
    let file = GgufFile::open(&path).unwrap();
    let device = Device::flex();
    let (model, _) = Llama::from_gguf(&file, &device).unwrap();
    let bad_mask = TokenBatch {
        ids: vec![vec![1, 2, 3]],
        scored: vec![vec![false, true]],
        pad_id: 2,
    };
    assert!(matches!(
        sequence_logprobs(&model, &bad_mask, &device),
        Err(BatchError::MaskLength { .. })
    ));
    let first = TokenBatch {
        ids: vec![vec![1, 2]],
        scored: vec![vec![true, true]],
        pad_id: 2,
    };
    assert!(matches!(
        sequence_logprobs(&model, &first, &device),
        Err(BatchError::FirstTokenScored { .. })
    ));
}

/// The tokenizer built from the GGUF metadata gives the spec's ids exactly and decodes back.
#[test]
fn token_ids_match_the_reference_exactly() {
    let Some(path) = smollm2() else { return };
    let tokenizer = tokenizer_from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let cases: [(&str, &[u32]); 4] = [
        ("The capital of France is", &[504, 3575, 282, 4649, 314]),
        (
            "The capital of France is Paris.",
            &[504, 3575, 282, 4649, 314, 7042, 30],
        ),
        (
            "In 1998, 12345 people said: hello world!",
            &[
                788, 216, 33, 41, 41, 40, 28, 216, 33, 34, 35, 36, 37, 701, 1137, 42, 33662, 905,
                17,
            ],
        ),
        ("<|im_start|>user\nHi<|im_end|>", &[1, 4093, 198, 26843, 2]),
    ];
    for (text, expected) in cases {
        let encoding = tokenizer.encode(text, false).unwrap();
        assert_eq!(encoding.get_ids(), expected, "{text:?}");
        let decoded = tokenizer.decode(expected, false).unwrap();
        assert_eq!(decoded, text);
    }
}

fn load(path: &std::path::Path) -> (GgufFile, Llama, Device) {
    let file = GgufFile::open(path).unwrap();
    let device = Device::flex();
    let (model, _) = Llama::from_gguf(&file, &device).unwrap();
    (file, model, device)
}

fn greedy(max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens,
        stop_tokens: vec![2],
        pad_token: 2,
        ..GenerationConfig::default()
    }
}

/// The spec's chat reference: ChatML user turn + assistant header, greedy.
#[test]
fn greedy_chat_answer_is_tokyo() {
    let Some(path) = smollm2() else { return };
    let (file, model, device) = load(&path);
    let tokenizer = tokenizer_from_gguf(&file).unwrap();
    let template = ChatTemplate::from_gguf(&file).unwrap();
    let prompt = template
        .render(
            &[ChatMessage::new("user", "What is the capital of Japan?")],
            true,
        )
        .unwrap();
    assert!(
        prompt.ends_with(
            "<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n"
        ),
        "{prompt:?}"
    );
    let ids = tokenizer
        .encode(prompt.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    let mut streamed = Vec::new();
    let out = generate(&model, &[ids], &greedy(20), &device, |row, t| {
        streamed.push((row, t))
    })
    .unwrap();
    let text = tokenizer.decode(&out[0], false).unwrap();
    assert_eq!(text, "The capital of Japan is Tokyo.<|im_end|>");
    assert_eq!(
        streamed,
        out[0].iter().map(|&t| (0, t)).collect::<Vec<_>>(),
        "streamed as produced"
    );
}

/// Decoding with the KV cache equals recomputing the whole sequence at every step.
#[test]
fn kv_cache_generation_equals_full_recomputation() {
    let Some(path) = smollm2() else { return };
    let (_, model, device) = load(&path);
    let prompt: Vec<u32> = vec![504, 3575, 282, 4649, 314];
    let cached = generate(
        &model,
        std::slice::from_ref(&prompt),
        &greedy(8),
        &device,
        |_, _| {},
    )
    .unwrap();

    let recomputed = common::greedy_by_recomputation(&model, &prompt, 8, Some(2), &device);
    assert_eq!(cached[0], recomputed);
}

/// A batch of prompts of different lengths gives, row by row, what each gives alone.
#[test]
fn batched_greedy_equals_one_at_a_time() {
    let Some(path) = smollm2() else { return };
    let (file, model, device) = load(&path);
    let tokenizer = tokenizer_from_gguf(&file).unwrap();
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "In 1998, the",
        "Water boils at a temperature of",
    ]
    .iter()
    .map(|p| tokenizer.encode(*p, false).unwrap().get_ids().to_vec())
    .collect();
    let batched = generate(&model, &prompts, &greedy(10), &device, |_, _| {}).unwrap();
    for (prompt, together) in prompts.iter().zip(&batched) {
        let alone = generate(
            &model,
            std::slice::from_ref(prompt),
            &greedy(10),
            &device,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(&alone[0], together);
    }
}

/// Sampling is reproducible from the seed, and top-k = 1 is greedy.
#[test]
fn seeded_sampling_is_reproducible() {
    let Some(path) = smollm2() else { return };
    let (_, model, device) = load(&path);
    let prompt = vec![vec![504u32, 3575, 282, 4649, 314]];
    let sampled = |seed: u64, top_k: usize| {
        let config = GenerationConfig {
            sampling: Sampling {
                temperature: 1.0,
                top_k,
                top_p: 0.9,
                seed,
            },
            ..greedy(8)
        };
        generate(&model, &prompt, &config, &device, |_, _| {}).unwrap()
    };
    assert_eq!(sampled(7, 0), sampled(7, 0));
    assert_eq!(
        sampled(7, 1),
        generate(&model, &prompt, &greedy(8), &device, |_, _| {}).unwrap()
    );
    assert!(
        (0..5u64)
            .map(|seed| sampled(seed, 0))
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1,
        "different seeds give different samples"
    );
    let bad = GenerationConfig {
        sampling: Sampling {
            top_p: 0.0,
            ..Sampling::default()
        },
        ..greedy(1)
    };
    assert!(generate(&model, &prompt, &bad, &device, |_, _| {}).is_err());
}

/// The base held in the file's own blocks (`lora.base_quantization = "gguf"`): its Q4_1 and
/// Q8_0 blocks, llama.cpp's permuted q/k rows put back in rotate-half order block row by
/// block row, and the tied embedding applied in slices of the vocabulary, give the f32 model's
/// log-probs.
#[test]
fn the_base_held_in_the_files_blocks_scores_as_the_f32_model() {
    let Some(path) = smollm2() else { return };
    let file = GgufFile::open(&path).unwrap();
    let device = Device::flex();
    let (model, _) = Llama::from_gguf(&file, &device).unwrap();
    let (in_blocks, _) =
        Llama::from_gguf_quantized(&file, &device, bapo_model::BaseQuantization::Gguf).unwrap();
    assert!(in_blocks.tables.is_some() && in_blocks.layers[0].attention.file_weights.is_some());
    let ids = [504, 3575, 282, 4649, 314, 7042, 30];
    let expected = naive_log_probs(&model, &ids, &device);
    let found = naive_log_probs(&in_blocks, &ids, &device);
    for (t, (a, b)) in found.iter().zip(&expected).enumerate() {
        assert!((a - b).abs() <= 1e-4, "token {t}: {a} against {b}");
    }
}
