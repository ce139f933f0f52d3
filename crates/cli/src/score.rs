//! `bapo score`: the log-probability a model gives a completion after a prompt, per token and
//! summed, and its most likely next tokens after the prompt.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bapo_model::{CausalModel, LoadedModel, TokenBatch, sequence_logprobs};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use serde::Serialize;

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// The model: a GGUF file or a Hugging Face checkpoint folder.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    device: crate::device_args::DeviceArgs,
    /// The prompt (tokenised on its own, as TRL does).
    #[arg(long)]
    prompt: String,
    /// The completion to score.
    #[arg(long)]
    completion: String,
    /// How many most likely next tokens after the prompt to list.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct TokenScore {
    id: u32,
    text: String,
    logprob: f32,
}

#[derive(Serialize)]
struct Report {
    prompt_tokens: usize,
    completion: Vec<TokenScore>,
    total_logprob: f32,
    top_next_tokens: Vec<TokenScore>,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let device = args.device.device()?;
    let loaded = LoadedModel::open(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let prompt = loaded.encode(&args.prompt)?;
    let completion = loaded.encode(&args.completion)?;
    anyhow::ensure!(
        !prompt.is_empty(),
        "--prompt is empty: a completion needs context to be scored"
    );
    anyhow::ensure!(!completion.is_empty(), "--completion is empty");
    loaded.check_length(prompt.len() + completion.len(), "--prompt + --completion")?;

    let ids: Vec<u32> = prompt.iter().chain(&completion).copied().collect();
    let scored: Vec<bool> = (0..ids.len()).map(|i| i >= prompt.len()).collect();
    let batch = TokenBatch {
        ids: vec![ids.clone()],
        scored: vec![scored],
        pad_id: loaded.pad_token,
    };
    let logprobs = sequence_logprobs(&loaded.model, &batch, &device)?;
    let per_token: Vec<f32> = logprobs
        .per_token
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default();
    let text = |id: u32| loaded.decode(&[id]).unwrap_or_default();
    let completion_scores: Vec<TokenScore> = (prompt.len()..ids.len())
        .map(|i| TokenScore {
            id: ids[i],
            text: text(ids[i]),
            logprob: per_token[i],
        })
        .collect();

    // The next-token distribution after the prompt alone.
    let prompt_ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
    let n = prompt_ids.len();
    let logits = loaded.model.forward(Tensor::<2, Int>::from_data(
        TensorData::new(prompt_ids, [1, n]),
        &device,
    ));
    let next = log_softmax(logits.narrow(1, n - 1, 1).reshape([loaded.vocab_size()]), 0);
    let next: Vec<f32> = next
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default();
    let mut order: Vec<usize> = (0..next.len()).collect();
    order.sort_unstable_by(|&a, &b| next[b].total_cmp(&next[a]));
    let top_next_tokens = order
        .into_iter()
        .take(args.top_k)
        .map(|i| TokenScore {
            id: i as u32,
            text: text(i as u32),
            logprob: next[i],
        })
        .collect();

    let report = Report {
        prompt_tokens: prompt.len(),
        total_logprob: completion_scores.iter().map(|t| t.logprob).sum(),
        completion: completion_scores,
        top_next_tokens,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("prompt: {} tokens", report.prompt_tokens);
    println!("completion:");
    for t in &report.completion {
        println!("  {:>7}  {:>10.4}  {:?}", t.id, t.logprob, t.text);
    }
    println!("total log-prob: {:.4}", report.total_logprob);
    println!("most likely next tokens after the prompt:");
    for t in &report.top_next_tokens {
        println!("  {:>7}  {:>10.4}  {:?}", t.id, t.logprob, t.text);
    }
    Ok(())
}
