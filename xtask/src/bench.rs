//! `cargo xtask bench [--backend B] [--steps N]`: tokens/s and peak RSS of a DPO training step
//! and of anchor generation on SmolLM2-135M, ours (`bapo bench`, configs/bench.toml) next to
//! PyTorch/transformers/TRL doing the same work on the same machine
//! (xtask/bench_reference.py), each phase in its own process. Results go to docs/performance.md
//! by hand, with this command.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{backends, fetch, python};

pub fn bench(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let mut backend = "cpu".to_string();
    let mut steps = "5".to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--backend" => backend = it.next().context("--backend needs a value")?.clone(),
            "--steps" => steps = it.next().context("--steps needs a value")?.clone(),
            other => bail!(
                "unknown argument `{other}`\nusage: cargo xtask bench [--backend B] [--steps N]"
            ),
        }
    }
    fetch::fetch(root)?;
    let features: Vec<&str> = backends::feature(&backend)?.into_iter().collect();
    let (bapo, env) = backends::build_bapo(root, cargo, &features, false)?;
    let venv = python::venv()?;

    let config = root.join("configs/bench.toml");
    let table: toml::Table = std::fs::read_to_string(&config)?.parse()?;
    let get = |section: &str, key: &str| -> Result<String> {
        let value = table
            .get(section)
            .and_then(|s| s.get(key))
            .with_context(|| format!("{}: no {section}.{key}", config.display()))?;
        Ok(match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let model_dir = root.join(".cache/bench/SmolLM2-135M-Instruct-hf");
    if !model_dir.join("model.safetensors").exists() {
        let status = Command::new(&bapo)
            .arg("export")
            .arg("--model")
            .arg(root.join(get("model", "path")?))
            .arg("--out")
            .arg(&model_dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .status()?;
        if !status.success() {
            bail!("bapo export failed ({status})");
        }
    }

    let mut rows = Vec::new();
    for phase in ["train", "generate"] {
        let ours = json_line(
            Command::new(&bapo)
                .args(["bench", "--phase", phase, "--steps", &steps, "--config"])
                .arg(&config)
                .args(["--set", &format!("training.backend={backend}")])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir(root),
            &format!("bapo bench --phase {phase}"),
        )?;
        let batch = if phase == "train" {
            get("training", "batch_size")?
        } else {
            get("anchors", "chunk_size")?
        };
        let theirs = json_line(
            Command::new(venv.join("bin/python"))
                .arg(root.join("xtask/bench_reference.py"))
                .arg(phase)
                .arg(&model_dir)
                .arg(root.join(get("data", "path")?))
                .arg(get("data", "user")?)
                .arg(&steps)
                .arg(batch)
                .arg(get("data", "max_length")?)
                .arg(get("anchors", "max_new_tokens")?)
                .current_dir(root),
            &format!("bench_reference.py {phase}"),
        )?;
        rows.push((phase, ours, theirs));
    }

    println!();
    println!("| phase | side | tokens/s | tokens | seconds | peak RSS (MiB) |");
    println!("|---|---|---:|---:|---:|---:|");
    for (phase, ours, theirs) in &rows {
        for (side, v) in [("bapo", ours), ("PyTorch", theirs)] {
            println!(
                "| {phase} | {side} `{}` | {:.1} | {} | {:.2} | {:.0} |",
                v["backend"].as_str().unwrap_or("?"),
                v["tokens_per_second"].as_f64().unwrap_or(f64::NAN),
                v["tokens"],
                v["seconds"].as_f64().unwrap_or(f64::NAN),
                v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    println!();
    for (phase, ours, theirs) in &rows {
        let ratio = ours["tokens_per_second"].as_f64().unwrap_or(f64::NAN)
            / theirs["tokens_per_second"].as_f64().unwrap_or(f64::NAN);
        println!("{phase}: bapo / PyTorch throughput = {ratio:.2}");
    }
    Ok(())
}

/// Runs `command` and parses the last line of its stdout as JSON.
fn json_line(command: &mut Command, what: &str) -> Result<Value> {
    eprintln!("$ {what}");
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}, not JSON"))
}
