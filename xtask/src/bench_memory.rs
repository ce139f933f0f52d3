//! `cargo xtask bench --memory`: the peak memory of one DPO training step at the sizes
//! researchers train, ours with each memory lever off and on, next to TRL in its default
//! (bf16 autocast and gradient checkpointing) and in f32, on `tch-cpu` and PyTorch's CPU.
//!
//! Models: random weights of Qwen2.5's shapes (configs/shapes/, written by `bapo model init`
//! with SmolLM2's tokenizer: speed and memory do not depend on the values or on which ids the
//! text becomes). LoRA at the 1.5B shape; full fine-tuning at the 0.5B shape, because a 1.5B
//! full fine-tuning step needs ~25 GB for weights, gradients and AdamW's moments in f32 alone
//! (more than this 24 GB machine has, on either side). Data: 4 examples whose prompt + response
//! is cut at 512 tokens (made from the personalised data's answers, long enough to be cut).
//! The peak is that of the timed step alone (the kernel's high-water mark reset as it begins),
//! so that loading and the reference log-probs, which both sides precompute, do not count.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::measure::json_line_within;
use crate::python;

/// One model of the memory bench.
struct Shape {
    /// configs/shapes/<name>.json
    name: &'static str,
    lora: bool,
}

const SHAPES: [Shape; 2] = [
    Shape {
        name: "qwen2.5-1.5b",
        lora: true,
    },
    Shape {
        name: "qwen2.5-0.5b",
        lora: false,
    },
];

/// Our levers: (label, overrides); those that hold most last, as they may run out of memory.
/// A bf16 base (`lora.base_dtype`) is for LoRA only: full fine-tuning skips that row.
const LEVERS: [(&str, &[&str]); 6] = [
    (
        "bf16 base + bf16 + checkpointing + chunks",
        &[
            "lora.base_dtype='bf16'",
            "training.precision='bf16'",
            "training.gradient_checkpointing=true",
            "training.lm_head_chunk_tokens=256",
        ],
    ),
    (
        "bf16 + checkpointing + chunks",
        &[
            "training.precision='bf16'",
            "training.gradient_checkpointing=true",
            "training.lm_head_chunk_tokens=256",
        ],
    ),
    (
        "checkpointing + chunks",
        &[
            "training.gradient_checkpointing=true",
            "training.lm_head_chunk_tokens=256",
        ],
    ),
    (
        "gradient checkpointing",
        &["training.gradient_checkpointing=true"],
    ),
    (
        "LM head in chunks of 256",
        &["training.lm_head_chunk_tokens=256"],
    ),
    ("f32, no lever", &[]),
];

/// The PyTorch side: (label, BAPO_BENCH_DTYPE, BAPO_BENCH_CHECKPOINTING).
const PEERS: [(&str, &str, &str); 2] = [
    (
        "TRL default: bf16 autocast + checkpointing",
        "bfloat16",
        "1",
    ),
    ("TRL f32, no checkpointing", "float32", "0"),
];

/// Examples per step, their length cap, and the user the long data is written for.
const BATCH: usize = 4;
const MAX_LENGTH: usize = 512;
const USER: &str = "long";

pub fn memory_bench(
    root: &Path,
    bapo: &Path,
    env: &[(String, std::ffi::OsString)],
    smollm2_hf: &Path,
) -> Result<()> {
    let venv = python::venv()?;
    let data = long_data(root)?;
    let mut rows: Vec<(String, String, Value)> = Vec::new();
    for shape in &SHAPES {
        let model = shape_model(root, bapo, env, smollm2_hf, shape.name)?;
        let training = if shape.lora { "LoRA" } else { "full" };
        for (label, overrides) in LEVERS {
            if !shape.lora && overrides.iter().any(|o| o.starts_with("lora.")) {
                continue;
            }
            let mut settings = vec![
                "training.backend=tch-cpu".to_string(),
                format!("lora.enabled={}", shape.lora),
            ];
            settings.extend(overrides.iter().map(|o| o.to_string()));
            let mut command = bapo_step(root, bapo, env, &model, &data, &settings);
            let what = format!("bapo bench, {} {training}, {label}", shape.name);
            rows.push((
                shape.name.into(),
                format!("bapo `tch-cpu`, {training}, {label}"),
                measure(&mut command, &what),
            ));
        }
        for (label, dtype, checkpointing) in PEERS {
            let phase = if shape.lora { "train-lora" } else { "train" };
            let mut command = reference_step(root, &venv.join("bin/python"), phase, &model, &data);
            command
                .env("BAPO_BENCH_DTYPE", dtype)
                .env("BAPO_BENCH_CHECKPOINTING", checkpointing);
            let what = format!("bench_reference.py {phase}, {}, {label}", shape.name);
            rows.push((
                shape.name.into(),
                format!("{label}, {training}"),
                measure(&mut command, &what),
            ));
        }
    }
    print_table(&rows);
    Ok(())
}

/// `bapo bench` timing one training step of `model` on `data` (the bench's 4 examples cut at
/// 512 tokens) and reporting that step's own peak RSS, with the run settings `settings`.
pub(crate) fn bapo_step(
    root: &Path,
    bapo: &Path,
    env: &[(String, std::ffi::OsString)],
    model: &Path,
    data: &Path,
    settings: &[String],
) -> Command {
    let mut command = oom_first(bapo);
    command
        .args(["bench", "--phase", "train", "--steps", "1", "--warmup", "0"])
        .arg("--step-peak")
        .arg("--config")
        .arg(root.join("configs/bench.toml"))
        .args(sets(&[
            &format!("model.path={}", model.display()),
            &format!("data.path={}", data.display()),
            &format!("data.user={USER}"),
            &format!("data.max_length={MAX_LENGTH}"),
            "data.max_prompt_length=256",
            &format!("data.max_train_examples={BATCH}"),
            &format!("training.batch_size={BATCH}"),
        ]))
        .args(settings.iter().flat_map(|s| ["--set", s.as_str()]))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root);
    command
}

/// bench_reference.py doing the same step (`phase`: train or train-lora) with TRL; the caller
/// sets its precision and base through the environment.
pub(crate) fn reference_step(
    root: &Path,
    python: &Path,
    phase: &str,
    model: &Path,
    data: &Path,
) -> Command {
    let mut command = oom_first(python);
    command
        .arg(root.join("xtask/bench_reference.py"))
        .arg(phase)
        .arg(model)
        .arg(data)
        .arg(USER)
        .args(["1", &BATCH.to_string(), &MAX_LENGTH.to_string(), "0"])
        .env("BAPO_BENCH_WARMUP", "0")
        .env("BAPO_BENCH_STEP_PEAK", "1")
        .current_dir(root);
    command
}

/// `program` run so that, when memory runs out, the kernel kills it and not this process
/// (its OOM score raised to the maximum before it starts).
fn oom_first(program: &Path) -> Command {
    let mut command = Command::new("bash");
    command
        .args([
            "-c",
            "echo 1000 > /proc/self/oom_score_adj && exec \"$0\" \"$@\"",
        ])
        .arg(program);
    command
}

/// One measurement's JSON line, or, when the step did not finish (the kernel kills the
/// process that runs out of memory), `{"error": …}`: the other settings still run. Each is
/// printed as it comes, so that a stopped bench leaves what it measured.
pub(crate) fn measure(command: &mut Command, what: &str) -> Value {
    measure_within(command, what, None)
}

/// [`measure`], the command stopped after `limit` (the row then says so, with its high-water
/// mark).
pub(crate) fn measure_within(command: &mut Command, what: &str, limit: Option<Duration>) -> Value {
    let value = json_line_within(command, what, limit).unwrap_or_else(|e| {
        let message = format!("{e:#}");
        // What failed and how (its exit status or signal); when it exited with an error of
        // its own (not killed), also the last line it wrote, which names that error.
        let mut lines = message.lines().filter(|l| !l.trim().is_empty());
        let first = lines.next().unwrap_or_default();
        let error = match lines.next_back() {
            Some(last) if !first.contains("signal") => format!("{first} … {}", last.trim()),
            _ => first.to_string(),
        };
        serde_json::json!({ "error": table_cell(&error) })
    });
    eprintln!("  {value}");
    value
}

/// `text` made safe for one cell of a markdown table: the last of its carriage-return
/// overwrites (a progress bar's), no `|`, at most 200 characters.
pub(crate) fn table_cell(text: &str) -> String {
    let text = text.rsplit('\r').next().unwrap_or_default().trim();
    text.replace('|', "/").chars().take(200).collect()
}

fn sets(keys: &[&str]) -> Vec<String> {
    keys.iter()
        .flat_map(|k| ["--set".to_string(), k.to_string()])
        .collect()
}

/// The measurements as a markdown table whose first two columns are headed `columns`.
pub(crate) fn print_rows(columns: [&str; 2], rows: &[(String, String, Value)]) {
    println!();
    println!(
        "| {} | {} | peak RSS of the step (MiB) | seconds | tokens |",
        columns[0], columns[1]
    );
    println!("|---|---|---:|---:|---:|");
    for (first, label, v) in rows {
        match v["error"].as_str() {
            Some(error) => println!("| {first} | {label} | did not finish: {error} | | |"),
            None => println!(
                "| {first} | {label} | {:.0} | {:.1} | {} |",
                v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
                v["seconds"].as_f64().unwrap_or(f64::NAN),
                v["tokens"],
            ),
        }
    }
}

fn print_table(rows: &[(String, String, Value)]) {
    print_rows(["shape", "side, training, setting"], rows);
    let peak = |shape: &str, starts: &str| {
        rows.iter()
            .find(|(s, l, _)| s == shape && l.starts_with(starts))
            .and_then(|(_, _, v)| v["peak_rss_mib"].as_f64())
    };
    for shape in &SHAPES {
        let training = if shape.lora { "LoRA" } else { "full" };
        let Some(trl) = peak(shape.name, "TRL default") else {
            continue;
        };
        for levers in [
            "bf16 base + bf16 + checkpointing + chunks",
            "bf16 + checkpointing + chunks",
            "checkpointing + chunks",
        ] {
            if let Some(ours) = peak(shape.name, &format!("bapo `tch-cpu`, {training}, {levers}")) {
                println!(
                    "{}: bapo ({levers}) / TRL default peak RSS = {:.2}",
                    shape.name,
                    ours / trl
                );
            }
        }
    }
}

/// The folder `bapo model init --like` reads a shape from: `configs/shapes/<name>.json` as its
/// config.json, and the tokenizer of `smollm2_hf` (an exported SmolLM2) beside it.
pub(crate) fn shape_folder(
    root: &Path,
    smollm2_hf: &Path,
    name: &str,
    folder: &Path,
) -> Result<()> {
    std::fs::create_dir_all(folder)?;
    std::fs::copy(
        root.join(format!("configs/shapes/{name}.json")),
        folder.join("config.json"),
    )?;
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ] {
        let from = smollm2_hf.join(file);
        if from.exists() {
            std::fs::copy(&from, folder.join(file))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    Ok(())
}

/// The random model of `configs/shapes/<name>.json`, written once under .cache/bench.
fn shape_model(
    root: &Path,
    bapo: &Path,
    env: &[(String, std::ffi::OsString)],
    smollm2_hf: &Path,
    name: &str,
) -> Result<PathBuf> {
    let out = root.join(format!(".cache/bench/{name}-random"));
    if out.join("model.safetensors").exists() || out.join("model.safetensors.index.json").exists() {
        return Ok(out);
    }
    let like = root.join(format!(".cache/bench/{name}-shape"));
    shape_folder(root, smollm2_hf, name, &like)?;
    let status = Command::new(bapo)
        .args(["model", "init", "--like"])
        .arg(&like)
        .arg("--out")
        .arg(&out)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()?;
    if !status.success() {
        bail!(
            "bapo model init --like {} failed ({status})",
            like.display()
        );
    }
    Ok(out)
}

/// Preference rows whose responses are long enough that every `prompt + response` is cut at
/// `MAX_LENGTH` on both sides: made by joining the personalised
/// data's answers, in file order (deterministic).
pub(crate) fn long_data(root: &Path) -> Result<PathBuf> {
    let path = root.join(".cache/bench/long-preferences.jsonl");
    let source = root.join("data/personalised/preferences.jsonl");
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let mut answers = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line)?;
        for key in ["chosen", "rejected"] {
            if let Some(content) = row[key][0]["content"].as_str() {
                answers.push(content.to_string());
            }
        }
    }
    // ~4 characters per token: prompts of ~900 characters (249–269 tokens with SmolLM2's
    // tokenizer and chat template: bapo cuts the longer ones to data.max_prompt_length, 256,
    // where TRL, which cuts prompt + response only, keeps them; the step's tokens are the
    // same 4 × 2 × 512 on both sides), responses of 3,000 go past 512.
    let mut pieces = answers.iter().cycle();
    let mut text_of = |characters: usize| {
        let mut text = String::new();
        while text.len() < characters {
            text.push_str(pieces.next().map(String::as_str).unwrap_or("text"));
            text.push(' ');
        }
        text
    };
    let message =
        |role: &str, content: String| serde_json::json!([{ "role": role, "content": content }]);
    let mut out = String::new();
    for _ in 0..BATCH {
        let row = serde_json::json!({
            "prompt": message("user", text_of(900)),
            "chosen": message("assistant", text_of(3_000)),
            "rejected": message("assistant", text_of(3_000)),
            "user": USER,
        });
        out.push_str(&row.to_string());
        out.push('\n');
    }
    std::fs::create_dir_all(path.parent().context("a parent folder")?)?;
    std::fs::write(&path, out)?;
    Ok(path)
}
