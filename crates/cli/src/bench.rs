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
    /// `train` (DPO optimizer steps) or `generate` (greedy anchor generation).
    #[arg(long)]
    phase: String,
    /// Timed steps (train) or batches (generate), after one untimed warm-up.
    #[arg(long, default_value_t = 5)]
    steps: usize,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let config = RunConfig::load(&args.config, &args.overrides)?;
    let result = match args.phase.as_str() {
        "train" => bapo_train::bench::bench_train(&config, 1, args.steps)?,
        "generate" => bapo_train::bench::bench_generate(&config, args.steps)?,
        other => bail!("unknown phase `{other}`: train or generate"),
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
