//! bapo's loading of a real GGUF file against transformers loading the same file
//! (`gguf_file=`): the tokenizer's ids, the chat template's text, per-token log-probs within
//! 1e-3 and greedy answers. The files are hundreds of MB, so this runs by hand, when the GGUF
//! loader or the tokenizer changes (fixtures/gguf/transformers_oracle.py says how):
//! `BAPO_GGUF_FILE` is the file, `BAPO_GGUF_ORACLE` the script's output. It also prints how
//! far a base held quantized (`lora.base_quantization`) moves the same log-probs.

use bapo_model::{
    BaseQuantization, CausalLm, ChatMessage, GenerationConfig, LoadedModel, Sampling, TokenBatch,
    generate, sequence_logprobs,
};
use burn::tensor::Device;
use serde::Deserialize;

#[derive(Deserialize)]
struct Oracle {
    transformers: String,
    eos_token_id: u32,
    greedy_new_tokens: usize,
    scores: Vec<Score>,
    chats: Vec<Chat>,
}

#[derive(Deserialize)]
struct Score {
    prompt: String,
    completion: String,
    prompt_ids: Vec<u32>,
    completion_ids: Vec<u32>,
    logprobs: Vec<f64>,
}

#[derive(Deserialize)]
struct Chat {
    messages: Vec<Message>,
    rendered: String,
    ids: Vec<u32>,
    greedy: Vec<u32>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

/// The log-probs of per-token scores may differ by float rounding of two f32 forwards with
/// different kernels (transformers' PyTorch, bapo's Burn), as the bound says.
const LOGPROB_TOLERANCE: f64 = 1e-3;

fn per_token_logprobs(model: &CausalLm, score: &Score, device: &Device) -> Vec<f64> {
    let batch = TokenBatch::from_pairs(
        [(score.prompt_ids.as_slice(), score.completion_ids.as_slice())],
        0,
    );
    let scored = sequence_logprobs(model, &batch, device).expect("scores");
    let row = scored
        .per_token
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .expect("f64");
    // The one row holds a slot per prompt and completion token; the completion's are last.
    row[row.len() - score.completion_ids.len()..].to_vec()
}

/// Tokens up to and including the first end-of-sequence token.
fn until_eos(ids: &[u32], eos: u32) -> &[u32] {
    match ids.iter().position(|&t| t == eos) {
        Some(end) => &ids[..=end],
        None => ids,
    }
}

#[test]
#[ignore = "needs a real GGUF file and transformers' output on it (BAPO_GGUF_FILE, BAPO_GGUF_ORACLE)"]
fn a_real_file_loads_scores_and_answers_as_transformers_does() {
    let (Some(file), Some(oracle)) = (
        std::env::var_os("BAPO_GGUF_FILE"),
        std::env::var_os("BAPO_GGUF_ORACLE"),
    ) else {
        panic!("set BAPO_GGUF_FILE and BAPO_GGUF_ORACLE (fixtures/gguf/transformers_oracle.py)");
    };
    let oracle: Oracle =
        serde_json::from_str(&std::fs::read_to_string(oracle).unwrap()).expect("oracle parses");
    let device = Device::flex();
    let loaded = LoadedModel::from_gguf(std::path::Path::new(&file), &device).expect("loads");
    println!("against transformers {}", oracle.transformers);

    let mut worst: f64 = 0.0;
    for score in &oracle.scores {
        assert_eq!(
            loaded.encode(&score.prompt).unwrap(),
            score.prompt_ids,
            "ids of {:?}",
            score.prompt
        );
        assert_eq!(
            loaded.encode(&score.completion).unwrap(),
            score.completion_ids,
            "ids of {:?}",
            score.completion
        );
        let ours = per_token_logprobs(&loaded.model, score, &device);
        for (k, (&a, &b)) in ours.iter().zip(&score.logprobs).enumerate() {
            let gap = (a - b).abs();
            worst = worst.max(gap);
            assert!(
                gap <= LOGPROB_TOLERANCE,
                "{:?} + {:?}, token {k}: {a} against transformers' {b}",
                score.prompt,
                score.completion
            );
        }
    }
    println!(
        "{} completions: per-token log-probs within {worst:.2e} of transformers'",
        oracle.scores.len()
    );

    // A base held quantized: how far it moves the per-token log-probs (reported, not bounded:
    // it is a different base).
    for quantization in [BaseQuantization::Q8, BaseQuantization::Q4] {
        let quantized = loaded
            .model
            .clone()
            .with_quantized_matrices(quantization)
            .expect("quantizes");
        let gaps: Vec<f64> = oracle
            .scores
            .iter()
            .flat_map(|score| {
                let float = per_token_logprobs(&loaded.model, score, &device);
                let held = per_token_logprobs(&quantized, score, &device);
                float
                    .into_iter()
                    .zip(held)
                    .map(|(a, b)| (a - b).abs())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let worst = gaps.iter().copied().fold(0.0, f64::max);
        println!(
            "base held {quantization:?}: per-token log-probs move by {mean:.4} on average, \
             {worst:.4} at most ({} tokens)",
            gaps.len()
        );
    }

    assert_eq!(
        loaded.eos_token, oracle.eos_token_id,
        "end-of-sequence token"
    );
    let template = loaded.chat_template.as_ref().expect("a chat template");
    for chat in &oracle.chats {
        let messages: Vec<ChatMessage> = chat
            .messages
            .iter()
            .map(|m| ChatMessage::new(&m.role, &m.content))
            .collect();
        let rendered = template.render(&messages, true).expect("renders");
        assert_eq!(rendered, chat.rendered, "chat template");
        let ids = loaded.encode(&rendered).unwrap();
        assert_eq!(ids, chat.ids, "ids of the rendered chat");
        let config = GenerationConfig {
            max_new_tokens: oracle.greedy_new_tokens,
            sampling: Sampling::default(),
            stop_tokens: vec![loaded.eos_token],
            pad_token: loaded.pad_token,
            max_batch: 1,
        };
        let answer = generate(&loaded.model, &[ids], &config, &device, |_, _| {})
            .expect("generates")
            .remove(0);
        assert_eq!(
            until_eos(&answer, loaded.eos_token),
            until_eos(&chat.greedy, loaded.eos_token),
            "greedy answer to {:?}: {:?} against transformers' {:?}",
            chat.messages.last().map(|m| &m.content),
            loaded.decode(&answer),
            loaded.decode(&chat.greedy)
        );
        println!(
            "{:?} → {:?}",
            chat.messages.last().map(|m| &m.content),
            loaded.decode(until_eos(&answer, loaded.eos_token)).unwrap()
        );
    }
}
