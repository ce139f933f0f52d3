//! `cargo xtask changes RUN_DIR [--from STEP]`: every metric's change between two evaluations
//! of a run (step 0 — the model before training — by default, and the last), with a 95% paired
//! bootstrap interval over the metric's items, from the run's `eval_items.jsonl`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

pub fn changes(args: &[String]) -> Result<()> {
    let mut run = None;
    let mut from = 0;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--from" => {
                let value = it.next().context("--from needs a step")?;
                from = value
                    .parse()
                    .with_context(|| format!("--from {value}: not a step number"))?;
            }
            other if run.is_none() && !other.starts_with('-') => run = Some(PathBuf::from(other)),
            other => bail!(
                "unknown argument `{other}`\nusage: cargo xtask changes RUN_DIR [--from STEP]"
            ),
        }
    }
    let run = run.context("usage: cargo xtask changes RUN_DIR [--from STEP]")?;
    let changes =
        bapo_study::run_changes(&run.join(bapo_rundir::files::EVAL_ITEMS_FILE), from, 10_000)?;
    println!("| metric | items | before | after | change | 95% interval |");
    println!("|---|---:|---:|---:|---:|---|");
    for c in changes {
        println!(
            "| {} | {} | {:.4} | {:.4} | {:+.4} | [{:+.4}, {:+.4}]{} |",
            c.metric,
            c.items,
            c.before,
            c.after,
            c.change.estimate,
            c.change.low,
            c.change.high,
            if c.change.excludes_zero() { " *" } else { "" }
        );
    }
    println!(
        "\n(* the interval excludes 0; paired bootstrap over items, 10,000 resamples, seed 0)"
    );
    Ok(())
}
