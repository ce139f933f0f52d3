//! `cargo xtask bench [--backend B[,B…]] [--steps N]`: tokens/s and peak RSS on SmolLM2-135M of a
//! DPO training step (full fine-tuning, with and without prefix sharing, and LoRA; in f32, and in
//! TRL's default — bf16 autocast with gradient checkpointing — on both sides), forward-only
//! evaluation, greedy generation and the quickstart's anchor pass, ours (`bapo bench`,
//! configs/bench.toml) next to PyTorch/transformers/TRL/PEFT doing the same work on the same
//! machine (xtask/bench_reference.py) where they have a peer, each phase in its own process,
//! with the ratios. `--memory`: the peak memory of a step at Qwen2.5's 0.5B and 1.5B shapes
//! with each memory lever, next to TRL's default (bench_memory.rs). `--quantized-base`: the
//! same on the real Qwen2.5-Coder files with the base held quantized, next to TRL + PEFT with
//! f32, bf16 and 4-bit bases (bench_quantized.rs), each row stopped after `--row-limit-minutes`
//! if given. Ours runs on `cpu` and `tch-cpu` (one build with both) unless `--backend`
//! names others. Results go to docs/performance.md by hand, with this command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::measure::json_line;
use crate::{build, fetch, python};

const USAGE: &str = "usage: cargo xtask bench [--backend B[,B…]] [--steps N] | --memory | --quantized-base [--model NAME] [--row-limit-minutes M]";

pub fn bench(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let args = BenchArgs::parse(args)?;
    fetch::fetch(root)?;
    let backends: Vec<&str> = args.backends.split(',').map(str::trim).collect();
    let mut features: Vec<&str> = Vec::new();
    for b in &backends {
        if let Some(f) = build::feature(b)?
            && !features.contains(&f)
        {
            features.push(f);
        }
    }
    let (bapo, env) = build::build_bapo(root, cargo, &features, false)?;
    if args.quantized_base {
        return crate::bench_quantized::quantized_base_bench(
            root,
            &bapo,
            &env,
            args.model.as_deref(),
            args.row_limit,
        );
    }
    let config = BenchConfig::read(root)?;
    let model_dir = exported_model(root, &bapo, &env, &config)?;
    if args.memory {
        return crate::bench_memory::memory_bench(root, &bapo, &env, &model_dir);
    }
    let venv = python::venv()?;
    let sides = Sides {
        root,
        bapo: &bapo,
        env: &env,
        python: &venv.join("bin/python"),
        model_dir: &model_dir,
        config: &config,
        steps: &args.steps,
    };
    let mut rows = Vec::new();
    for phase in phases() {
        rows.push(sides.run(&phase, &backends)?);
    }
    print_table(&rows);
    print_ratios(&rows, &backends);
    Ok(())
}

/// The command line of `cargo xtask bench`.
struct BenchArgs {
    /// Our backends, comma-separated.
    backends: String,
    /// Timed steps of each phase.
    steps: String,
    memory: bool,
    quantized_base: bool,
    model: Option<String>,
    row_limit: Option<Duration>,
}

impl BenchArgs {
    fn parse(args: &[String]) -> Result<BenchArgs> {
        let mut parsed = BenchArgs {
            // Both CPU backends by default: the pure-Rust one and libtorch, built once together.
            backends: "cpu,tch-cpu".into(),
            steps: "5".into(),
            memory: false,
            quantized_base: false,
            model: None,
            row_limit: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--backend" => parsed.backends = value("--backend")?.clone(),
                "--steps" => parsed.steps = value("--steps")?.clone(),
                "--memory" => parsed.memory = true,
                "--quantized-base" => parsed.quantized_base = true,
                "--model" => parsed.model = Some(value("--model")?.clone()),
                "--row-limit-minutes" => {
                    let minutes = value("--row-limit-minutes")?;
                    parsed.row_limit = Some(row_limit(minutes)?);
                }
                other => bail!("unknown argument `{other}`\n{USAGE}"),
            }
        }
        parsed.check(args)?;
        if parsed.memory {
            // The memory bench runs on libtorch only (its step at 1.5B takes minutes there).
            parsed.backends = "tch-cpu".into();
        }
        if parsed.quantized_base {
            // Quantized tensors exist on the pure-Rust backend only (burn-tch has none).
            parsed.backends = "cpu".into();
        }
        Ok(parsed)
    }

    /// Refuses options that do not go together.
    fn check(&self, args: &[String]) -> Result<()> {
        if (self.model.is_some() || self.row_limit.is_some()) && !self.quantized_base {
            bail!("--model and --row-limit-minutes are for --quantized-base");
        }
        if self.quantized_base
            && (self.memory || args.iter().any(|a| a == "--backend" || a == "--steps"))
        {
            bail!(
                "--quantized-base runs one step on `cpu`: it takes no --memory, --backend or --steps"
            );
        }
        if let Some(name) = &self.model
            && !fetch::SPLIT_MODELS.iter().any(|m| m.name == name)
        {
            let names: Vec<&str> = fetch::SPLIT_MODELS.iter().map(|m| m.name).collect();
            bail!("--model {name}: one of {}", names.join(", "));
        }
        Ok(())
    }
}

/// `--row-limit-minutes`' value.
fn row_limit(minutes: &str) -> Result<Duration> {
    let value: f64 = minutes
        .parse()
        .ok()
        .filter(|m: &f64| m.is_finite() && *m > 0.0)
        .with_context(|| format!("--row-limit-minutes {minutes}: expected minutes > 0"))?;
    Ok(Duration::from_secs_f64(value * 60.0))
}

/// configs/bench.toml, whose settings the PyTorch side is given as arguments.
struct BenchConfig {
    path: PathBuf,
    table: toml::Table,
}

impl BenchConfig {
    fn read(root: &Path) -> Result<BenchConfig> {
        let path = root.join("configs/bench.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let table = text
            .parse()
            .with_context(|| format!("parsing {}", path.display()))?;
        Ok(BenchConfig { path, table })
    }

    /// `section.key`, as text.
    fn get(&self, section: &str, key: &str) -> Result<String> {
        let value = self
            .table
            .get(section)
            .and_then(|s| s.get(key))
            .with_context(|| format!("{}: no {section}.{key}", self.path.display()))?;
        Ok(match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The bench model in Hugging Face's layout, for the PyTorch side: exported by `bapo export`
/// once, then reused.
fn exported_model(
    root: &Path,
    bapo: &Path,
    env: &[(String, std::ffi::OsString)],
    config: &BenchConfig,
) -> Result<PathBuf> {
    let model_dir = root.join(".cache/bench/SmolLM2-135M-Instruct-hf");
    if !model_dir.join("model.safetensors").exists() {
        let status = Command::new(bapo)
            .arg("export")
            .arg("--model")
            .arg(root.join(config.get("model", "path")?))
            .arg("--out")
            .arg(&model_dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .status()?;
        if !status.success() {
            bail!("bapo export failed ({status})");
        }
    }
    Ok(model_dir)
}

/// One phase of the bench: ours with `overrides`, and the PyTorch side's phase and
/// environment where it has a peer.
struct Phase {
    label: &'static str,
    ours: &'static str,
    overrides: Vec<&'static str>,
    peer: Option<(&'static str, &'static [(&'static str, &'static str)])>,
}

/// The phases, in order. The "TRL default" rows are bf16 autocast with gradient checkpointing
/// on both sides (DPOConfig's defaults); the others are f32 without it.
fn phases() -> Vec<Phase> {
    const LORA: [&str; 2] = ["--set", "lora.enabled=true"];
    const UNSHARED: [&str; 2] = ["--set", "training.share_prompts=false"];
    const TRL_DEFAULT: [&str; 4] = [
        "--set",
        "training.precision='bf16'",
        "--set",
        "training.gradient_checkpointing=true",
    ];
    const TRL_DEFAULT_ENV: &[(&str, &str)] = &[
        ("BAPO_BENCH_DTYPE", "bfloat16"),
        ("BAPO_BENCH_CHECKPOINTING", "1"),
    ];
    let phase = |label, ours, overrides: &[&'static str], peer| Phase {
        label,
        ours,
        overrides: overrides.to_vec(),
        peer,
    };
    vec![
        phase("train", "train", &[], Some(("train", &[]))),
        phase("train, unshared prompts", "train", &UNSHARED, None),
        phase(
            "train, TRL default (bf16 + checkpointing)",
            "train",
            &TRL_DEFAULT,
            Some(("train", TRL_DEFAULT_ENV)),
        ),
        phase("train-lora", "train", &LORA, Some(("train-lora", &[]))),
        phase(
            "train-lora, TRL default (bf16 + checkpointing)",
            "train",
            &[&LORA[..], &TRL_DEFAULT[..]].concat(),
            Some(("train-lora", TRL_DEFAULT_ENV)),
        ),
        phase("eval", "eval", &[], None),
        phase("generate", "generate", &[], Some(("generate", &[]))),
        phase("anchors (quickstart)", "anchors", &[], None),
    ]
}

/// A phase's results: ours on each backend, and the PyTorch side's where it has a peer.
struct Row {
    label: &'static str,
    ours: Vec<Value>,
    theirs: Option<Value>,
}

/// What both sides of every phase run with.
struct Sides<'a> {
    root: &'a Path,
    bapo: &'a Path,
    env: &'a [(String, std::ffi::OsString)],
    python: &'a Path,
    model_dir: &'a Path,
    config: &'a BenchConfig,
    steps: &'a str,
}

impl Sides<'_> {
    /// `phase` on each of our `backends`, then on the PyTorch side where it has a peer.
    fn run(&self, phase: &Phase, backends: &[&str]) -> Result<Row> {
        // The anchor pass is the quickstart's own (96 prompts); the rest use bench.toml.
        let phase_config = if phase.ours == "anchors" {
            self.root.join("configs/quickstart.toml")
        } else {
            self.config.path.clone()
        };
        let mut ours = Vec::new();
        for b in backends {
            ours.push(json_line(
                Command::new(self.bapo)
                    .args(["bench", "--phase", phase.ours, "--steps", self.steps])
                    .arg("--config")
                    .arg(&phase_config)
                    .args(["--set", &format!("training.backend={b}")])
                    .args(&phase.overrides)
                    .envs(self.env.iter().map(|(k, v)| (k, v)))
                    .current_dir(self.root),
                &format!(
                    "bapo bench --phase {} ({b}) {}",
                    phase.ours,
                    phase.overrides.join(" ")
                ),
            )?);
        }
        let theirs = match phase.peer {
            None => None,
            Some((peer, peer_env)) => Some(self.peer(peer, peer_env)?),
        };
        Ok(Row {
            label: phase.label,
            ours,
            theirs,
        })
    }

    /// xtask/bench_reference.py's `phase`, with bench.toml's settings.
    fn peer(&self, phase: &str, env: &[(&str, &str)]) -> Result<Value> {
        let config = self.config;
        let batch = if phase == "generate" {
            config.get("anchors", "chunk_size")?
        } else {
            config.get("training", "batch_size")?
        };
        json_line(
            Command::new(self.python)
                .arg(self.root.join("xtask/bench_reference.py"))
                .arg(phase)
                .arg(self.model_dir)
                .arg(self.root.join(config.get("data", "path")?))
                .arg(config.get("data", "user")?)
                .arg(self.steps)
                .arg(batch)
                .arg(config.get("data", "max_length")?)
                .arg(config.get("anchors", "max_new_tokens")?)
                .envs(env.iter().copied())
                .current_dir(self.root),
            &format!("bench_reference.py {phase}"),
        )
    }
}

fn rate(v: &Value) -> f64 {
    v["tokens_per_second"].as_f64().unwrap_or(f64::NAN)
}

fn rss(v: &Value) -> f64 {
    v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
}

/// Every row of every side, as a Markdown table.
fn print_table(rows: &[Row]) {
    println!();
    println!("| phase | side | tokens/s (median step) | tokens | seconds | peak RSS (MiB) |");
    println!("|---|---|---:|---:|---:|---:|");
    for row in rows {
        let sides = row
            .ours
            .iter()
            .map(|v| ("bapo", v))
            .chain(row.theirs.iter().map(|v| ("PyTorch", v)));
        for (side, v) in sides {
            println!(
                "| {} | {side} `{}` | {:.1} | {} | {:.2} | {:.0} |",
                row.label,
                v["backend"].as_str().unwrap_or("?"),
                rate(v),
                v["tokens"],
                v["seconds"].as_f64().unwrap_or(f64::NAN),
                rss(v),
            );
        }
    }
}

/// Per backend of ours, each phase's ratios to its peer and the derived figures (prefix
/// sharing's gain, evaluation against training, the anchor pass).
fn print_ratios(rows: &[Row], backends: &[&str]) {
    let find = |label: &str| rows.iter().find(|r| r.label == label);
    if let Some(Row {
        theirs: Some(trl), ..
    }) = find("train")
    {
        let honoured = trl["padding_free_available"].as_bool().unwrap_or(false);
        println!(
            "\nTRL's padding_free: {}",
            if honoured {
                "available (not timed here)"
            } else {
                "forced off by this TRL version: its default is its fastest CPU setting"
            }
        );
    }
    for (i, b) in backends.iter().enumerate() {
        println!("\n{b}:");
        for row in rows {
            if let Some(theirs) = &row.theirs {
                println!(
                    "  {}: bapo / PyTorch throughput = {:.2}, peak RSS = {:.2}",
                    row.label,
                    rate(&row.ours[i]) / rate(theirs),
                    rss(&row.ours[i]) / rss(theirs)
                );
            }
        }
        let ours = |label: &str| find(label).map(|r| &r.ours[i]);
        let trl = find("train").and_then(|r| r.theirs.as_ref());
        if let (Some(train), Some(unshared), Some(trl)) =
            (ours("train"), ours("train, unshared prompts"), trl)
        {
            println!(
                "  train, unshared prompts: bapo / PyTorch throughput = {:.2} (prefix sharing: {:.2}x)",
                rate(unshared) / rate(trl),
                rate(train) / rate(unshared)
            );
        }
        if let (Some(eval), Some(train), Some(lora)) =
            (ours("eval"), ours("train"), ours("train-lora"))
        {
            println!(
                "  eval / our training throughput = {:.2} (full fine-tuning), {:.2} (LoRA)",
                rate(eval) / rate(train),
                rate(eval) / rate(lora)
            );
        }
        if let Some(anchors) = ours("anchors (quickstart)") {
            println!(
                "  anchor pass of the quickstart: {:.1} new tokens/s ({} tokens in {:.1} s, generation and reference scoring)",
                rate(anchors),
                anchors["tokens"],
                anchors["seconds"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
}
