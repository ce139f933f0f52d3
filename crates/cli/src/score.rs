//! `bapo score`: the log-probability a model gives a completion after a prompt, per token and
//! summed, and its most likely next tokens after the prompt.

use anyhow::Result;
use bapo_model::{CausalModel, LoadedModel, TokenBatch, sequence_logprobs};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

#[derive(clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: crate::device_args::ModelArgs,
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
    let (loaded, device) = args.model.open()?;
    let (prompt, completion) = encode_inputs(&loaded, &args)?;
    let completion_scores = score_completion(&loaded, &prompt, &completion, &device)?;
    let top_next_tokens = top_next_tokens(&loaded, &prompt, args.top_k, &device);
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
    print_report(&report);
    Ok(())
}

/// Tokenises `--prompt` and `--completion`, refusing an empty one or a pair the model cannot
/// take.
fn encode_inputs(loaded: &LoadedModel, args: &ScoreArgs) -> Result<(Vec<u32>, Vec<u32>)> {
    let prompt = loaded.encode(&args.prompt)?;
    let completion = loaded.encode(&args.completion)?;
    anyhow::ensure!(
        !prompt.is_empty(),
        "--prompt is empty: a completion needs context to be scored"
    );
    anyhow::ensure!(!completion.is_empty(), "--completion is empty");
    loaded.check_length(prompt.len() + completion.len(), "--prompt + --completion")?;
    Ok((prompt, completion))
}

/// A token's text, empty if it does not decode.
fn token_text(loaded: &LoadedModel, id: u32) -> String {
    loaded.decode(&[id]).unwrap_or_default()
}

/// The log-prob of each completion token after the prompt and the tokens before it.
fn score_completion(
    loaded: &LoadedModel,
    prompt: &[u32],
    completion: &[u32],
    device: &Device,
) -> Result<Vec<TokenScore>> {
    let ids: Vec<u32> = prompt.iter().chain(completion).copied().collect();
    let scored: Vec<bool> = (0..ids.len()).map(|i| i >= prompt.len()).collect();
    let batch = TokenBatch {
        ids: vec![ids.clone()],
        scored: vec![scored],
        pad_id: loaded.pad_token,
    };
    let logprobs = sequence_logprobs(&loaded.model, &batch, device)?;
    let per_token: Vec<f32> = logprobs
        .per_token
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default();
    Ok((prompt.len()..ids.len())
        .map(|i| TokenScore {
            id: ids[i],
            text: token_text(loaded, ids[i]),
            logprob: per_token[i],
        })
        .collect())
}

/// The `top_k` most likely next tokens after the prompt alone, most likely first.
fn top_next_tokens(
    loaded: &LoadedModel,
    prompt: &[u32],
    top_k: usize,
    device: &Device,
) -> Vec<TokenScore> {
    let prompt_ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
    let n = prompt_ids.len();
    let logits = loaded.model.forward(Tensor::<2, Int>::from_data(
        TensorData::new(prompt_ids, [1, n]),
        device,
    ));
    let next = log_softmax(logits.narrow(1, n - 1, 1).reshape([loaded.vocab_size()]), 0);
    let next: Vec<f32> = next
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default();
    let mut order: Vec<usize> = (0..next.len()).collect();
    order.sort_unstable_by(|&a, &b| next[b].total_cmp(&next[a]));
    order
        .into_iter()
        .take(top_k)
        .map(|i| TokenScore {
            id: i as u32,
            text: token_text(loaded, i as u32),
            logprob: next[i],
        })
        .collect()
}

/// Prints the report as text.
fn print_report(report: &Report) {
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
}
