//! `bapo bench`: one phase of `cargo xtask bench`, printed as one JSON line.

use std::path::PathBuf;

use anyhow::{Result, bail};
use bapo_train::RunConfig;
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// Run config (configs/bench.toml).
    #[arg(long)]
    config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// `train` (optimizer steps; LoRA if the config enables it), `generate` (greedy
    /// generation), `eval` (forward-only scoring of the training examples) or `anchors` (a
    /// run's whole anchor pass from a cold cache).
    #[arg(long)]
    phase: String,
    /// Timed steps (train, eval) or batches (generate), after the untimed warm-up.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed training steps before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Report the peak RSS of the timed training steps alone (Linux), not of the process:
    /// loading the model and scoring the reference do not count.
    #[arg(long)]
    step_peak: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let config = RunConfig::load(&args.config, &args.overrides)?;
    let result = match args.phase.as_str() {
        "train" => bapo_train::bench_train(&config, args.warmup, args.steps, args.step_peak)?,
        "generate" => bapo_train::bench_generate(&config, args.steps)?,
        "eval" => bapo_train::bench_eval(&config, args.steps)?,
        "anchors" => bapo_train::bench_anchors(&config)?,
        other => bail!("unknown phase `{other}`: train, generate, eval or anchors"),
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
