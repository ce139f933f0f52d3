//! `cargo xtask parquet-check` (also part of `ci`): the committed personalised preferences,
//! written to Parquet by the Hugging Face `datasets` library (the project's venv), train to
//! the same losses as the JSONL itself: a short DPO run on SmolLM2 with each, compared step by
//! step, value for value.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use bapo_rundir::files::METRICS_FILE;

use crate::{build, python, run_logs};

/// Writes `src` (JSONL) to `dst` with `datasets`, as a user's `Dataset.to_parquet` would.
const TO_PARQUET: &str = "\
import json, sys
from datasets import Dataset
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
Dataset.from_list(rows).to_parquet(sys.argv[2])
";

/// The run: DPO (no anchors to generate) for a few steps on one user's rows, evaluated on a
/// few held-out pairs; everything else as the quickstart.
const RUN: [&str; 11] = [
    "objective = { name = \"dpo\" }",
    "training.max_steps=4",
    "training.batch_size=2",
    "eval.at_start=false",
    "eval.examples_per_user=2",
    "eval.bigbench_dir=\"\"",
    "eval.knowledge_probe=\"\"",
    "eval.country_facts=0",
    "checkpoint.export=false",
    "data.max_train_examples=16",
    "checkpoint.interval=0",
];

pub fn parquet_check(root: &Path, cargo: &str) -> Result<()> {
    crate::fetch::fetch(root)?;
    let (binary, env) = build::build_bapo(root, cargo, &[], true)?;
    check(root, &binary, &env)
}

/// Trains `binary` on the JSONL and on its Parquet copy and compares the losses.
pub fn check(root: &Path, binary: &Path, env: &[(String, OsString)]) -> Result<()> {
    let venv = python::venv()?;
    let out = std::env::temp_dir().join(format!("bapo-parquet-check-{}", std::process::id()));
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let jsonl = root.join("data/personalised/preferences.jsonl");
    let parquet = out.join("preferences.parquet");
    python::run(
        Command::new(venv.join("bin/python"))
            .args(["-c", TO_PARQUET])
            .arg(&jsonl)
            .arg(&parquet),
        "datasets: the personalised JSONL to Parquet",
    )?;
    let mut curves = Vec::new();
    for (name, data) in [("jsonl", &jsonl), ("parquet", &parquet)] {
        let run = out.join(name);
        let mut command = Command::new(binary);
        command
            .arg("train")
            .arg("--quiet")
            .arg("--config")
            .arg(root.join("configs/quickstart.toml"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(root);
        let sets = [
            format!("data.path={:?}", data.display().to_string()),
            format!("output.dir={:?}", run.display().to_string()),
            format!(
                "anchors.cache_dir={:?}",
                out.join("anchors").display().to_string()
            ),
        ];
        for set in RUN.iter().map(|s| s.to_string()).chain(sets) {
            command.arg("--set").arg(set);
        }
        eprintln!("$ bapo train --config configs/quickstart.toml (DPO, 4 steps) on {name}");
        python::run(&mut command, &format!("training on the {name} file"))?;
        curves.push(losses(&run.join(METRICS_FILE))?);
    }
    println!("| step | loss (JSONL) | loss (Parquet) |\n|---:|---:|---:|");
    for ((step, a), (_, b)) in curves[0].iter().zip(&curves[1]) {
        println!("| {step} | {a} | {b} |");
    }
    if curves[0].is_empty() || curves[0] != curves[1] {
        bail!("the Parquet copy trained to other losses than the JSONL");
    }
    println!("the Parquet copy written by `datasets` trains to the JSONL's losses exactly");
    std::fs::remove_dir_all(&out).ok();
    Ok(())
}

/// (step, loss) of every row of a metrics.jsonl.
fn losses(path: &Path) -> Result<Vec<(u64, f64)>> {
    Ok(run_logs::log_numbers(path, &["step", "loss"])?
        .into_iter()
        .map(|row| (row[0] as u64, row[1]))
        .collect())
}
