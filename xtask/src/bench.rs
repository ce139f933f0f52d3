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

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{backends, fetch, python};

pub fn bench(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    // Both CPU backends by default: the pure-Rust one and libtorch, built once together.
    let mut backend = "cpu,tch-cpu".to_string();
    let mut steps = "5".to_string();
    let mut memory = false;
    let mut quantized_base = false;
    let mut model: Option<String> = None;
    let mut row_limit: Option<Duration> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--backend" => backend = it.next().context("--backend needs a value")?.clone(),
            "--steps" => steps = it.next().context("--steps needs a value")?.clone(),
            "--memory" => memory = true,
            "--quantized-base" => quantized_base = true,
            "--model" => model = Some(it.next().context("--model needs a value")?.clone()),
            "--row-limit-minutes" => {
                let value = it.next().context("--row-limit-minutes needs a value")?;
                let minutes: f64 = value
                    .parse()
                    .ok()
                    .filter(|m: &f64| m.is_finite() && *m > 0.0)
                    .with_context(|| {
                        format!("--row-limit-minutes {value}: expected minutes > 0")
                    })?;
                row_limit = Some(Duration::from_secs_f64(minutes * 60.0));
            }
            other => bail!(
                "unknown argument `{other}`\nusage: cargo xtask bench [--backend B[,B…]] [--steps N] | --memory | --quantized-base [--model NAME] [--row-limit-minutes M]"
            ),
        }
    }
    if (model.is_some() || row_limit.is_some()) && !quantized_base {
        bail!("--model and --row-limit-minutes are for --quantized-base");
    }
    if quantized_base && (memory || args.iter().any(|a| a == "--backend" || a == "--steps")) {
        bail!(
            "--quantized-base runs one step on `cpu`: it takes no --memory, --backend or --steps"
        );
    }
    if let Some(name) = &model
        && !fetch::SPLIT_MODELS.iter().any(|m| m.name == name)
    {
        let names: Vec<&str> = fetch::SPLIT_MODELS.iter().map(|m| m.name).collect();
        bail!("--model {name}: one of {}", names.join(", "));
    }
    if memory {
        // The memory bench runs on libtorch only (its step at 1.5B takes minutes there).
        backend = "tch-cpu".to_string();
    }
    if quantized_base {
        // Quantized tensors exist on the pure-Rust backend only (burn-tch has none).
        backend = "cpu".to_string();
    }
    fetch::fetch(root)?;
    let ours_backends: Vec<&str> = backend.split(',').map(str::trim).collect();
    let mut features: Vec<&str> = Vec::new();
    for b in &ours_backends {
        if let Some(f) = backends::feature(b)?
            && !features.contains(&f)
        {
            features.push(f);
        }
    }
    let (bapo, env) = backends::build_bapo(root, cargo, &features, false)?;
    if quantized_base {
        return crate::bench_quantized::quantized_base_bench(
            root,
            &bapo,
            &env,
            model.as_deref(),
            row_limit,
        );
    }
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

    if memory {
        return crate::bench_memory::memory_bench(root, &bapo, &env, &model_dir);
    }

    // (label, our phase, our overrides, the PyTorch side's phase if it has one, and its
    // environment). The "TRL default" rows are bf16 autocast with gradient checkpointing on
    // both sides (DPOConfig's defaults); the others are f32 without it.
    let lora = ["--set", "lora.enabled=true"];
    let unshared = ["--set", "training.share_prompts=false"];
    let trl_default = [
        "--set",
        "training.precision='bf16'",
        "--set",
        "training.gradient_checkpointing=true",
    ];
    let lora_trl_default = [&lora[..], &trl_default[..]].concat();
    let trl_default_env: &[(&str, &str)] = &[
        ("BAPO_BENCH_DTYPE", "bfloat16"),
        ("BAPO_BENCH_CHECKPOINTING", "1"),
    ];
    type Phase<'a> = (
        &'a str,
        &'a str,
        &'a [&'a str],
        Option<(&'a str, &'a [(&'a str, &'a str)])>,
    );
    let phases: [Phase; 8] = [
        ("train", "train", &[], Some(("train", &[]))),
        ("train, unshared prompts", "train", &unshared, None),
        (
            "train, TRL default (bf16 + checkpointing)",
            "train",
            &trl_default,
            Some(("train", trl_default_env)),
        ),
        ("train-lora", "train", &lora, Some(("train-lora", &[]))),
        (
            "train-lora, TRL default (bf16 + checkpointing)",
            "train",
            &lora_trl_default,
            Some(("train-lora", trl_default_env)),
        ),
        ("eval", "eval", &[], None),
        ("generate", "generate", &[], Some(("generate", &[]))),
        ("anchors (quickstart)", "anchors", &[], None),
    ];
    // Per phase: ours on each backend, and the PyTorch side where it has a peer.
    let mut rows: Vec<(&str, Vec<Value>, Option<Value>)> = Vec::new();
    for (label, phase, overrides, reference) in phases {
        // The anchor pass is the quickstart's own (96 prompts); the rest use bench.toml.
        let phase_config = if phase == "anchors" {
            root.join("configs/quickstart.toml")
        } else {
            config.clone()
        };
        let mut ours = Vec::new();
        for b in &ours_backends {
            ours.push(json_line(
                Command::new(&bapo)
                    .args(["bench", "--phase", phase, "--steps", &steps, "--config"])
                    .arg(&phase_config)
                    .args(["--set", &format!("training.backend={b}")])
                    .args(overrides)
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .current_dir(root),
                &format!("bapo bench --phase {phase} ({b}) {}", overrides.join(" ")),
            )?);
        }
        let theirs = match reference {
            None => None,
            Some((reference, reference_env)) => {
                let batch = if reference == "generate" {
                    get("anchors", "chunk_size")?
                } else {
                    get("training", "batch_size")?
                };
                Some(json_line(
                    Command::new(venv.join("bin/python"))
                        .arg(root.join("xtask/bench_reference.py"))
                        .arg(reference)
                        .arg(&model_dir)
                        .arg(root.join(get("data", "path")?))
                        .arg(get("data", "user")?)
                        .arg(&steps)
                        .arg(batch)
                        .arg(get("data", "max_length")?)
                        .arg(get("anchors", "max_new_tokens")?)
                        .envs(reference_env.iter().copied())
                        .current_dir(root),
                    &format!("bench_reference.py {reference}"),
                )?)
            }
        };
        rows.push((label, ours, theirs));
    }

    println!();
    println!("| phase | side | tokens/s (median step) | tokens | seconds | peak RSS (MiB) |");
    println!("|---|---|---:|---:|---:|---:|");
    for (label, ours, theirs) in &rows {
        let sides = ours
            .iter()
            .map(|v| ("bapo", v))
            .chain(theirs.iter().map(|v| ("PyTorch", v)));
        for (side, v) in sides {
            println!(
                "| {label} | {side} `{}` | {:.1} | {} | {:.2} | {:.0} |",
                v["backend"].as_str().unwrap_or("?"),
                v["tokens_per_second"].as_f64().unwrap_or(f64::NAN),
                v["tokens"],
                v["seconds"].as_f64().unwrap_or(f64::NAN),
                v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    let rate = |v: &Value| v["tokens_per_second"].as_f64().unwrap_or(f64::NAN);
    let rss = |v: &Value| v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN);
    let find = |label: &str| rows.iter().find(|(l, ..)| *l == label);
    if let Some((_, _, Some(trl))) = find("train") {
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
    for (i, b) in ours_backends.iter().enumerate() {
        println!("\n{b}:");
        for (label, ours, theirs) in &rows {
            if let Some(theirs) = theirs {
                println!(
                    "  {label}: bapo / PyTorch throughput = {:.2}, peak RSS = {:.2}",
                    rate(&ours[i]) / rate(theirs),
                    rss(&ours[i]) / rss(theirs)
                );
            }
        }
        let ours = |label: &str| find(label).map(|(_, ours, _)| &ours[i]);
        if let (Some(train), Some(unshared), Some((_, _, Some(trl)))) = (
            ours("train"),
            ours("train, unshared prompts"),
            find("train"),
        ) {
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
    Ok(())
}

/// Runs `command` and parses the last line of its stdout as JSON.
pub(crate) fn json_line(command: &mut Command, what: &str) -> Result<Value> {
    json_line_within(command, what, None)
}

/// [`json_line`], but a command still running after `limit` is stopped, and the error says
/// how far its memory had reached (its VmHWM) by then: a peer whose step takes hours on
/// this machine still gives a lower bound instead of holding the bench.
pub(crate) fn json_line_within(
    command: &mut Command,
    what: &str,
    limit: Option<Duration>,
) -> Result<Value> {
    eprintln!("$ {what}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    // Read both pipes while it runs, so that a full pipe never blocks it.
    let stdout = read_to_end_in_background(child.stdout.take());
    let stderr = read_to_end_in_background(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(limit) = limit
            && started.elapsed() >= limit
        {
            let high_water = high_water_mib(child.id());
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "stopped after {:.0} min, its high-water mark then {}",
                limit.as_secs_f64() / 60.0,
                high_water.map_or("unknown".into(), |mib| format!("{mib:.0} MiB"))
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!("{what} failed ({status}):\n{stderr}");
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}, not JSON"))
}

/// All of `pipe` as text, read on a thread of its own.
fn read_to_end_in_background(
    pipe: Option<impl Read + Send + 'static>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The most resident memory process `pid` has held (Linux's VmHWM), in MiB.
fn high_water_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_limit_is_stopped_with_its_high_water_mark() {
        let started = Instant::now();
        let mut slow = Command::new("sh");
        slow.args(["-c", "sleep 30; echo '{}'"]);
        let error = json_line_within(&mut slow, "sleep", Some(Duration::from_millis(300)))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("stopped after 0 min"), "{error}");
        assert!(error.ends_with(" MiB"), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "it was not killed"
        );

        let mut quick = Command::new("sh");
        quick.args([
            "-c",
            "echo progress >&2; echo 'not json'; echo '{\"seconds\": 1.5}'",
        ]);
        let value = json_line_within(&mut quick, "echo", Some(Duration::from_secs(60))).unwrap();
        assert_eq!(value["seconds"], 1.5);

        let mut failing = Command::new("sh");
        failing.args(["-c", "echo 'the reason' >&2; exit 3"]);
        let error = format!("{:#}", json_line(&mut failing, "fail").unwrap_err());
        assert!(error.contains("the reason"), "{error}");
    }
}
