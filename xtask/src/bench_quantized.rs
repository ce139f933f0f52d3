//! `cargo xtask bench --quantized-base [--model NAME]`: the peak memory of one LoRA DPO step
//! on the real Qwen2.5-Coder GGUF files (`cargo xtask fetch --model …`) with the frozen base
//! held quantized (`lora.base_quantization`: q8 and the file's own blocks, on `cpu`; not q4,
//! which holds no less than q8 on burn-flex 0.22.1, docs/performance.md),
//! next to TRL + PEFT on the same weights in its default (f32 weights under bf16 autocast,
//! gradient checkpointing), with the base in bf16, and with bitsandbytes' 4-bit NF4 base (the
//! QLoRA recipe) where bitsandbytes installs and runs on this CPU. Issue #24 part 2.
//!
//! The work is the memory bench's (bench_memory.rs): 4 examples cut at 512 tokens, one timed
//! step whose own peak RSS is reported, bapo with gradient checkpointing (all rows at once,
//! and a row at a time: `training.recompute_chunk_rows`) and the LM head in chunks of 256. TRL
//! reads the GGUF through transformers (`gguf_file=`, dequantised to f32), saved once as a
//! checkpoint folder under .cache/bench. `--row-limit-minutes M` stops a row still running
//! after M minutes (TRL's bf16 base runs for hours on a CPU without bf16 instructions); the
//! row then gives its high-water mark at that moment, a lower bound.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bench_memory::{
    bapo_step, long_data, measure_within, print_rows, reference_step, table_cell,
};
use crate::fetch::{SPLIT_MODELS, SplitModel, asset_dir, fetch_split_model};
use crate::python;

/// bapo's rows: (label, the base's quantization, `training.recompute_chunk_rows`), LoRA on
/// `cpu` with checkpointing and the LM head in chunks.
const OURS: [(&str, &str, usize); 3] = [
    ("bapo `cpu`, q8 base + checkpointing + chunks", "q8", 0),
    (
        "bapo `cpu`, the file's own blocks (gguf) + checkpointing + chunks",
        "gguf",
        0,
    ),
    (
        "bapo `cpu`, gguf + checkpointing a row at a time + chunks",
        "gguf",
        1,
    ),
];

/// TRL + PEFT's rows: (label, BAPO_BENCH_BASE), all in TRL's default bf16 autocast with
/// gradient checkpointing.
const PEERS: [(&str, &str); 3] = [
    (
        "TRL + PEFT default (f32 weights, bf16 autocast, checkpointing)",
        "float32",
    ),
    (
        "TRL + PEFT, bf16 base (bf16 autocast, checkpointing)",
        "bfloat16",
    ),
    (
        "TRL + PEFT, bitsandbytes NF4 base (QLoRA; bf16, checkpointing)",
        "nf4",
    ),
];

/// The reference side's extra packages (installed into the reference venv when this bench
/// runs, not by CI): transformers' GGUF reader, and bitsandbytes for the NF4 row.
const GGUF_READER: &str = "gguf==0.17.1";
const BITSANDBYTES: &str = "bitsandbytes==0.50.2";

pub fn quantized_base_bench(
    root: &Path,
    bapo: &Path,
    env: &[(String, std::ffi::OsString)],
    only: Option<&str>,
    row_limit: Option<Duration>,
) -> Result<()> {
    let models: Vec<&SplitModel> = SPLIT_MODELS
        .iter()
        .filter(|m| only.is_none_or(|name| m.name == name))
        .collect();
    let venv = python::venv()?;
    let python = venv.join("bin/python");
    python::ensure_venv(&venv, &[GGUF_READER])?;
    // bitsandbytes is optional: where it does not install, its row says why.
    let bitsandbytes = python::ensure_venv(&venv, &[BITSANDBYTES]).map_err(|e| format!("{e:#}"));
    let data = long_data(root)?;
    let mut rows: Vec<(String, String, Value)> = Vec::new();
    for model in models {
        let gguf = fetch_split_model(&asset_dir(root), model)?;
        for (label, quantization, rows_per_pass) in OURS {
            let settings = [
                "training.backend='cpu'".to_string(),
                "lora.enabled=true".to_string(),
                format!("lora.base_quantization='{quantization}'"),
                "training.gradient_checkpointing=true".to_string(),
                "training.lm_head_chunk_tokens=256".to_string(),
                format!("training.recompute_chunk_rows={rows_per_pass}"),
            ];
            let mut command = bapo_step(root, bapo, env, &gguf, &data, &settings);
            let what = format!("bapo bench, {}, {label}", model.name);
            rows.push((
                model.name.into(),
                label.into(),
                measure_within(&mut command, &what, row_limit),
            ));
        }
        let folder = hf_folder(root, &python, &gguf, model)?;
        for (label, base) in PEERS {
            if let (Err(why), "nf4") = (&bitsandbytes, base) {
                let why = table_cell(why.lines().last().unwrap_or_default());
                let value = serde_json::json!({ "error": format!("did not install: {why}") });
                rows.push((model.name.into(), label.into(), value));
                continue;
            }
            let mut command = reference_step(root, &python, "train-lora", &folder, &data);
            command
                .env("BAPO_BENCH_DTYPE", "bfloat16")
                .env("BAPO_BENCH_CHECKPOINTING", "1")
                .env("BAPO_BENCH_BASE", base);
            let what = format!("bench_reference.py train-lora, {}, {label}", model.name);
            rows.push((
                model.name.into(),
                label.into(),
                measure_within(&mut command, &what, row_limit),
            ));
        }
    }
    print_rows(["model", "side, setting"], &rows);
    Ok(())
}

/// The checkpoint folder transformers makes of `gguf`, in f32 (~2 GB for the 0.5B model,
/// ~6 GB for the 1.5B), made once under .cache/bench: written beside and renamed when whole,
/// so that a stopped conversion is not taken for a finished one.
fn hf_folder(root: &Path, python: &Path, gguf: &Path, model: &SplitModel) -> Result<PathBuf> {
    let out = root.join(format!(".cache/bench/{}-hf", model.name));
    if out.is_dir() {
        return Ok(out);
    }
    let partial = root.join(format!(".cache/bench/{}-hf.partial", model.name));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    eprintln!("$ bench_reference.py from-gguf {}", gguf.display());
    let status = Command::new(python)
        .arg(root.join("xtask/bench_reference.py"))
        .arg("from-gguf")
        .arg(gguf)
        .arg(&partial)
        .status()?;
    if !status.success() {
        bail!("transformers could not read {} ({status})", gguf.display());
    }
    std::fs::rename(&partial, &out)
        .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
    Ok(out)
}
