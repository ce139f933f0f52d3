//! `cargo xtask backends` (part of `ci`): the tiny run (BAPO with its default anchor) on
//! `cpu`, `tch-cpu` and `wgpu-cpu`, whose losses must agree within 1e-4 at every step and whose
//! final evaluations within 1e-4 relative; `bapo score` on each; and `cuda` and `wgpu`, which
//! on a machine without a GPU must refuse clearly (or run, where one is) (docs/backends.md).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use bapo_rundir::files::{EVAL_FILE, METRICS_FILE};
use bapo_rundir::read_rows;

use crate::build::build_bapo;
use crate::run_logs::log_numbers;
use crate::train::describe;

/// `cargo xtask backends`: the tiny run, a few steps, on `cpu`, `tch-cpu` and `wgpu-cpu`, built
/// once with both features; the losses of every step must agree within 1e-4, and so must the
/// final evaluation (forward passes without autodiff under an explicit attention mask: prompts
/// shared by several responses), within 1e-4 relative.
pub fn check(root: &Path, cargo: &str) -> Result<()> {
    let (binary, env) = build_bapo(root, cargo, &["tch", "wgpu"], true)?;
    check_binary(root, &binary, &env)
}

/// The backends the cross-backend check compares (`cpu` first: the reference).
const COMPARED: [&str; 3] = ["cpu", "tch-cpu", "wgpu-cpu"];

/// The largest difference from `cpu` the check accepts: of a step's loss, and of a final
/// evaluation metric relative to its size above 1.
const TOLERANCE: f64 = 1e-4;

/// The cross-backend check with `binary`, a bapo built with both features (`ci` passes the one
/// its test build made), run in `env`.
pub fn check_binary(root: &Path, binary: &Path, env: &[(String, OsString)]) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("bapo-backends-{}", std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    let mut curves = Vec::new();
    let mut evaluations = Vec::new();
    for backend in COMPARED {
        let (curve, evaluation) = tiny_check_run(root, binary, env, backend, &scratch)?;
        curves.push(curve);
        evaluations.push(evaluation);
    }
    // The cpu run's TensorBoard files, read by TensorBoard itself, against its JSON logs.
    let venv = crate::python::venv()?;
    crate::python::run(
        Command::new(venv.join("bin/python"))
            .arg(root.join("xtask/python/check_tensorboard.py"))
            .arg(scratch.join("cpu")),
        "check_tensorboard.py (event files read by the tensorboard package)",
    )?;
    let worst_loss = loss_difference(&curves);
    let (worst_eval, where_) = evaluation_difference(&evaluations)?;
    check_score_across_backends(root, binary, env, &COMPARED)?;
    check_gpu_backends_refuse_or_run(root, binary, env, &scratch)?;
    std::fs::remove_dir_all(&scratch).ok();
    if curves.iter().any(|c| c.len() != curves[0].len()) || worst_loss > TOLERANCE {
        bail!("the backends disagree: largest loss difference {worst_loss:.2e} > {TOLERANCE:e}");
    }
    if evaluations[0].is_empty() || !worst_eval.is_finite() || worst_eval > TOLERANCE {
        bail!(
            "the backends' evaluations disagree: {where_} (relative difference {worst_eval:.2e} > {TOLERANCE:e})"
        );
    }
    Ok(())
}

/// The tiny run on `backend` (4 steps, no evaluation before training), into `scratch`: its
/// losses and its final evaluation. BAPO with its default anchor (the smooth Huber-ised
/// hinge), as configs/tiny.toml sets it: the project's headline objective on every backend.
/// One anchor cache for all: the check is about the training step.
fn tiny_check_run(
    root: &Path,
    binary: &Path,
    env: &[(String, OsString)],
    backend: &str,
    scratch: &Path,
) -> Result<(Vec<f64>, BTreeMap<String, f64>)> {
    let out = scratch.join(backend);
    let mut command = tiny_run(root, binary, env, backend, &out, &scratch.join("anchors"));
    command.args([
        "--set",
        "training.max_steps=4",
        "--set",
        "eval.at_start=false",
    ]);
    eprintln!("$ {}", describe(&command));
    let status = command.status().context("running bapo")?;
    if !status.success() {
        bail!("the tiny run failed on backend `{backend}` ({status})");
    }
    Ok((
        losses(&out.join(METRICS_FILE))?,
        last_evaluation(&out.join(EVAL_FILE))?,
    ))
}

/// Prints every step's loss on each backend; returns the largest difference from `cpu`'s.
fn loss_difference(curves: &[Vec<f64>]) -> f64 {
    println!("step  {}", COMPARED.map(|b| format!("{b:>12}")).join(" "));
    let mut worst: f64 = 0.0;
    for step in 0..curves[0].len() {
        let row: Vec<f64> = curves.iter().map(|c| c[step]).collect();
        for v in &row[1..] {
            worst = worst.max((v - row[0]).abs());
        }
        println!(
            "{:>4}  {}",
            step + 1,
            row.iter()
                .map(|v| format!("{v:>12.7}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!("largest difference from cpu: {worst:.2e}");
    worst
}

/// The final evaluations, metric by metric, relative to the value's size above 1: the largest
/// difference from `cpu`'s and where it is (printed too). A metric missing on a backend is an
/// error.
fn evaluation_difference(evaluations: &[BTreeMap<String, f64>]) -> Result<(f64, String)> {
    let mut worst: (f64, String) = (0.0, String::new());
    for (name, reference) in &evaluations[0] {
        for (backend, evaluation) in COMPARED.iter().zip(evaluations).skip(1) {
            let Some(value) = evaluation.get(name) else {
                bail!("{backend}'s evaluation has no `{name}`");
            };
            let difference = (value - reference).abs() / reference.abs().max(1.0);
            if difference > worst.0 || !difference.is_finite() {
                worst = (
                    difference,
                    format!("{name} on {backend}: {value} vs {reference}"),
                );
            }
        }
    }
    println!(
        "final evaluation ({} metrics): largest relative difference from cpu {:.2e}{}",
        evaluations[0].len(),
        worst.0,
        if worst.1.is_empty() {
            String::new()
        } else {
            format!(" ({})", worst.1)
        }
    );
    Ok(worst)
}

/// `bapo train` on configs/tiny.toml with `backend`, into `out`, with its anchor cache in
/// `anchors`, quiet, in the environment the build needs; callers add their own `--set`s.
pub fn tiny_run(
    root: &Path,
    binary: &Path,
    env: &[(String, OsString)],
    backend: &str,
    out: &Path,
    anchors: &Path,
) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("train")
        .arg("--config")
        .arg(root.join("configs/tiny.toml"))
        .args(["--set", &format!("training.backend={backend:?}")])
        .args([
            "--set",
            &format!("output.dir={:?}", out.display().to_string()),
        ])
        .args([
            "--set",
            &format!("anchors.cache_dir={:?}", anchors.display().to_string()),
        ])
        .arg("--quiet")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root);
    command
}

/// `bapo score --backend B` on the tiny model: the total log-prob of a completion must agree
/// with `cpu`'s within 1e-4 on every backend (the model commands take `--backend` too).
fn check_score_across_backends(
    root: &Path,
    binary: &Path,
    env: &[(String, OsString)],
    backends: &[&str],
) -> Result<()> {
    let mut totals = Vec::new();
    for backend in backends {
        let output = Command::new(binary)
            .arg("score")
            .arg("--model")
            .arg(root.join("tests/fixtures/tiny-chat"))
            .args([
                "--prompt",
                "what colour is the sky ?",
                "--completion",
                " blue .",
            ])
            .args(["--backend", backend, "--json"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .context("running bapo score")?;
        if !output.status.success() {
            bail!(
                "bapo score --backend {backend} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("bapo score --backend {backend}: not JSON"))?;
        let total = report["total_logprob"]
            .as_f64()
            .with_context(|| format!("bapo score --backend {backend}: no total_logprob"))?;
        totals.push(total);
    }
    println!(
        "bapo score, total log-prob: {}",
        backends
            .iter()
            .zip(&totals)
            .map(|(b, t)| format!("{b} {t:.6}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if totals
        .iter()
        .any(|t| (t - totals[0]).abs() > 1e-4 || !t.is_finite())
    {
        bail!("bapo score disagrees across backends: {totals:?}");
    }
    Ok(())
}

/// `cuda` and `wgpu`, one tiny step each: on a machine without that GPU (as CI's), the run must
/// stop at once with the clear refusal of `Backend::device`, not a panic inside libtorch or
/// wgpu; on a machine with one, it must train.
fn check_gpu_backends_refuse_or_run(
    root: &Path,
    binary: &Path,
    env: &[(String, OsString)],
    scratch: &Path,
) -> Result<()> {
    for (backend, refusal) in [
        (
            "cuda",
            "backend `cuda` needs CUDA device 0, and libtorch sees 0",
        ),
        (
            "wgpu",
            "backend `wgpu` needs discrete GPU 0, and wgpu found none",
        ),
    ] {
        let output = tiny_run(
            root,
            binary,
            env,
            backend,
            &scratch.join(backend),
            &scratch.join("anchors"),
        )
        .args([
            "--set",
            "training.max_steps=1",
            "--set",
            "eval.at_start=false",
        ])
        .output()
        .context("running bapo")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let refused = output.status.code() == Some(1) && stderr.contains(refusal);
        if !(output.status.success() || refused) || stderr.contains("panicked") {
            bail!(
                "backend `{backend}` neither ran nor refused clearly ({}):\n{stderr}",
                output.status
            );
        }
        // The refusal's own line (wgpu prints warnings about the environment before it).
        let said = stderr
            .lines()
            .find(|l| l.contains(refusal))
            .unwrap_or_default();
        println!(
            "{backend}: {}",
            if refused {
                said.trim_start_matches("error: ")
            } else {
                "ran (a GPU is there)"
            }
        );
    }
    Ok(())
}

/// The numeric metrics of the last line of a run's `eval.jsonl`.
fn last_evaluation(path: &Path) -> Result<BTreeMap<String, f64>> {
    let rows = read_rows(path)?;
    let last = rows
        .last()
        .with_context(|| format!("{}: no evaluation", path.display()))?;
    Ok(last.numbers())
}

fn losses(path: &Path) -> Result<Vec<f64>> {
    Ok(log_numbers(path, &["loss"])?
        .into_iter()
        .map(|row| row[0])
        .collect())
}
