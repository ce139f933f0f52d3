//! Timing the two hot paths the same way the PyTorch side of `cargo xtask bench` does:
//!
//! - **train**: optimizer steps of the run's objective (DPO in `configs/bench.toml`) through
//!   the loop's own step code, reference log-probs precomputed (as TRL's
//!   `precompute_ref_log_probs=True`), the first `warmup` steps untimed;
//! - **generate**: greedy batched KV-cache generation of exactly `max_new_tokens` tokens
//!   per prompt (no early stop, as `min_new_tokens = max_new_tokens` in transformers).
//!
//! Tokens are real (unpadded) tokens; peak memory is the process's peak RSS, so each phase
//! runs in its own process. For training it can be the peak of the timed steps alone
//! (`bench_train`'s `step_peak`: the kernel's high-water mark is reset before them), so that
//! loading the model and scoring the reference do not count (`cargo xtask bench --memory`).

use std::time::Instant;

use bapo_model::{GenerationConfig, LoadedModel, Sampling, generate};
use burn::module::Module;
use serde::Serialize;

use crate::TrainError;
use crate::backend::BackendDevice;
use crate::config::RunConfig;
use crate::example::AnchoredExample;
use crate::metrics::{peak_rss_mib, reset_peak_rss};
use crate::optimizer::AdamW;
use crate::optimizer_step::{StepError, optimizer_step};
use crate::prepare::prepare;
use crate::progress::Progress;
use crate::step::StepSetup;

/// One phase's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub phase: String,
    pub backend: String,
    pub timed_steps: usize,
    /// Totals over the timed repetitions.
    pub seconds: f64,
    pub tokens: usize,
    /// The mean tokens of a timed repetition over the median time of one (robust to a slow
    /// outlier; the PyTorch side computes the same).
    pub tokens_per_second: f64,
    pub peak_rss_mib: Option<f64>,
}

impl BenchResult {
    /// The phase's timed repetitions, `(seconds, tokens)` each, with the process's peak RSS
    /// so far.
    fn new(phase: impl Into<String>, backend: impl Into<String>, timed: &[(f64, usize)]) -> Self {
        let mut seconds: Vec<f64> = timed.iter().map(|t| t.0).collect();
        seconds.sort_by(f64::total_cmp);
        let median = match seconds.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => seconds[n / 2],
            n => (seconds[n / 2 - 1] + seconds[n / 2]) / 2.0,
        };
        let tokens: usize = timed.iter().map(|t| t.1).sum();
        BenchResult {
            phase: phase.into(),
            backend: backend.into(),
            timed_steps: timed.len(),
            seconds: seconds.iter().sum(),
            tokens,
            tokens_per_second: tokens as f64 / timed.len().max(1) as f64 / median.max(1e-9),
            peak_rss_mib: peak_rss_mib(),
        }
    }
}

/// `steps` timed optimizer steps after `warmup` untimed ones. With `step_peak` the peak RSS
/// is that of the timed steps alone; an error when this system cannot reset it.
pub fn bench_train(
    config: &RunConfig,
    warmup: usize,
    steps: usize,
    step_peak: bool,
) -> Result<BenchResult, TrainError> {
    let prepared = prepare(config, false, &Progress { quiet: true })?;
    // Full fine-tuning, or LoRA as `lora.enabled` says (the PyTorch side: TRL, TRL + PEFT).
    let mut policy =
        crate::run::build_policy(config, &prepared.model.model, &prepared.train_device)?;
    let mut optimizer = AdamW::new(config.optimizer.clone());
    let t = &config.training;
    let mut timed = Vec::new();
    let per_step = t.batch_size * t.gradient_accumulation_steps;
    let n = prepared.train.len();
    let setup = StepSetup {
        objective: prepared.objective.as_ref(),
        needs: &prepared.needs,
        live_reference: None,
        packing: t.packing(),
        pad_token: prepared.model.pad_token,
        device: &prepared.train_device,
        max_grad_norm: t.max_grad_norm,
        memory: t.memory_saving(),
    };
    for step in 0..warmup + steps {
        if step == warmup && step_peak {
            reset_peak_rss()?;
        }
        let started = Instant::now();
        let micro_batches: Vec<Vec<&AnchoredExample>> = (0..t.gradient_accumulation_steps)
            .map(|micro| {
                let first = step * per_step + micro * t.batch_size;
                (first..first + t.batch_size)
                    .map(|p| &prepared.train[p % n])
                    .collect()
            })
            .collect();
        let lr = config.optimizer.learning_rate;
        let (next, report) =
            match optimizer_step(policy, &mut optimizer, &setup, &micro_batches, lr) {
                Ok(done) => done,
                Err(StepError::Failed(e)) => return Err(e),
                Err(StepError::NonFinite { what, .. }) => {
                    return Err(TrainError::BenchNonFinite {
                        step: step + 1,
                        what,
                    });
                }
            };
        policy = next;
        let step_tokens = report.tokens;
        // Wait for the device so the time is the step's, not its launch's.
        let _ = policy.valid();
        prepared.device.sync().ok();
        if step >= warmup {
            timed.push((started.elapsed().as_secs_f64(), step_tokens));
        }
    }
    Ok(BenchResult::new(
        if config.lora.enabled {
            "train-lora"
        } else {
            "train"
        },
        t.backend.to_string(),
        &timed,
    ))
}

/// Forward-only scoring of the same examples a training step sees (prompt, chosen,
/// rejected; the prompt shared), `steps` batches of `training.batch_size` after one untimed
/// batch: evaluation's throughput, in the tokens training counts.
pub fn bench_eval(config: &RunConfig, steps: usize) -> Result<BenchResult, TrainError> {
    let prepared = prepare(config, false, &Progress { quiet: true })?;
    let t = &config.training;
    let model = prepared.model.model.valid();
    let n = prepared.train.len();
    let mut timed = Vec::new();
    for step in 0..=steps {
        let batch: Vec<&AnchoredExample> = (0..t.batch_size)
            .map(|i| &prepared.train[(step * t.batch_size + i) % n])
            .collect();
        let started = Instant::now();
        let batch =
            crate::step::preference_batch(&batch, 0, t.packing(), prepared.model.pad_token)?;
        let totals = batch
            .input
            .scored_logits(&model, &prepared.device)?
            .logprobs(&prepared.device)
            .total;
        let _ = totals.into_data();
        if step > 0 {
            timed.push((started.elapsed().as_secs_f64(), batch.sequence_tokens()));
        }
    }
    Ok(BenchResult::new("eval", t.backend.to_string(), &timed))
}

/// A run's whole anchor pass from a cold cache (a fresh temporary folder): generation with
/// continuous batching and the reference's scoring of every training and held-out example.
/// Tokens are the base responses' new tokens. The time is the whole of `prepare`, so it also
/// holds loading the model and tokenising the data and evaluation sets (a second or two).
pub fn bench_anchors(config: &RunConfig) -> Result<BenchResult, TrainError> {
    let mut config = config.clone();
    let cache = std::env::temp_dir().join(format!("bapo-bench-anchors-{}", std::process::id()));
    config.anchors.cache_dir = cache.clone();
    let started = Instant::now();
    let prepared = prepare(&config, false, &Progress { quiet: true });
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&cache).ok();
    let prepared = prepared?;
    let generated = |e: &AnchoredExample| e.base.iter().map(Vec::len).sum::<usize>();
    let tokens = prepared.train.iter().map(generated).sum::<usize>()
        + prepared
            .eval
            .preferences
            .values()
            .flatten()
            .map(generated)
            .sum::<usize>();
    Ok(BenchResult::new(
        "anchors",
        config.training.backend.to_string(),
        &[(seconds, tokens)],
    ))
}

/// Greedy generation of `anchors.max_new_tokens` tokens for `batches` batches of
/// `anchors.chunk_size` training prompts, after one untimed batch.
pub fn bench_generate(config: &RunConfig, batches: usize) -> Result<BenchResult, TrainError> {
    let t = &config.training;
    let device = t.backend.device(t.device_index)?;
    let model = LoadedModel::open(&config.model.path, &device)?;
    let dataset = crate::prepare::DataFiles::of(config)?.load(config)?;
    let dataset = match &config.data.user {
        Some(user) => dataset.for_user(user)?,
        None => dataset,
    };
    let (examples, _) = crate::prepare::tokenize(config, &model, &dataset)?;
    let size = config.anchors.settings.chunk_size;
    let generation = GenerationConfig {
        max_new_tokens: config.anchors.settings.max_new_tokens,
        sampling: Sampling::default(),
        stop_tokens: Vec::new(),
        pad_token: model.pad_token,
        max_batch: size,
    };
    let mut timed = Vec::new();
    for batch in 0..=batches {
        let prompts: Vec<Vec<u32>> = (0..size)
            .map(|i| examples[(batch * size + i) % examples.len()].prompt.clone())
            .collect();
        let started = Instant::now();
        let generated = generate(&model.model, &prompts, &generation, &device, |_, _| {})?;
        if batch > 0 {
            let tokens = generated.iter().map(Vec::len).sum::<usize>();
            timed.push((started.elapsed().as_secs_f64(), tokens));
        }
    }
    Ok(BenchResult::new("generate", t.backend.to_string(), &timed))
}
