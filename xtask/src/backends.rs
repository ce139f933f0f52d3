//! Building and running `bapo` for a backend: the cargo features it needs and the environment
//! it runs in (docs/backends.md).
//!
//! - `cargo xtask train --objective X --backend Y [--config C] [--set k=v]… [--resume]`;
//! - `cargo xtask backends` (part of `ci`): the tiny run (BAPO with its default anchor) on
//!   `cpu`, `tch-cpu` and `wgpu-cpu`, whose losses must agree within 1e-4 at every step; and
//!   `cuda` and `wgpu`, which on a machine without a GPU must refuse clearly (or run, where one
//!   is).
//!
//! libtorch comes from PyPI's `torch==2.9.0` in the project's venv (created when missing):
//! torch-sys builds against it with `LIBTORCH_USE_PYTORCH` set (to the venv's torch folder)
//! and the venv's python first on `PATH`, and the binary finds `libtorch*.so` through
//! `LD_LIBRARY_PATH`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use bapo_rundir::files::{EVAL_FILE, METRICS_FILE};
use bapo_rundir::{Backend, read_rows};

use crate::python;

/// The cargo feature of a backend name (None: the default build).
pub fn feature(backend: &str) -> Result<Option<&'static str>> {
    let backend: Backend = backend
        .parse()
        .map_err(|e| anyhow::anyhow!("{e} (docs/backends.md)"))?;
    Ok(backend.feature())
}

/// Environment for building and running with libtorch from the venv's torch 2.9.0.
pub fn libtorch_env() -> Result<Vec<(String, OsString)>> {
    let venv = python::venv()?;
    let torch = python::torch_dir(&venv)?;
    let join = |first: OsString, var: &str| {
        let mut value = first;
        if let Some(old) = std::env::var_os(var) {
            value.push(":");
            value.push(old);
        }
        value
    };
    Ok(vec![
        // torch-sys only asks whether the variable is set, and reruns its build script when
        // its value changes: the venv's torch folder as the value makes another venv (BAPO_VENV)
        // rebuild it, where "1" kept linking against the first venv's libraries, even deleted.
        ("LIBTORCH_USE_PYTORCH".into(), torch.clone().into()),
        ("PATH".into(), join(venv.join("bin").into(), "PATH")),
        (
            "LD_LIBRARY_PATH".into(),
            join(torch.join("lib").into(), "LD_LIBRARY_PATH"),
        ),
    ])
}

/// Builds `bapo` (release, unless `dev`) with `features`; returns the binary and the
/// environment to run it in.
pub fn build_bapo(
    root: &Path,
    cargo: &str,
    features: &[&str],
    dev: bool,
) -> Result<(PathBuf, Vec<(String, OsString)>)> {
    build_binary(root, cargo, ("bapo-cli", "bapo"), features, dev)
}

/// Builds binary `bin` of `package` (with the backends' `features`, in the dev or release
/// profile) and returns its path and the environment it runs in.
pub fn build_binary(
    root: &Path,
    cargo: &str,
    (package, bin): (&str, &str),
    features: &[&str],
    dev: bool,
) -> Result<(PathBuf, Vec<(String, OsString)>)> {
    let env = if features.contains(&"tch") {
        libtorch_env()?
    } else {
        Vec::new()
    };
    let mut args = vec!["build", "-p", package, "--bin", bin];
    if !dev {
        args.push("--release");
    }
    let joined = features.join(",");
    if !features.is_empty() {
        args.extend(["--features", &joined]);
    }
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(&args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    let binary = target_dir(root)
        .join(if dev { "debug" } else { "release" })
        .join(bin);
    Ok((binary, env))
}

/// Where cargo puts what it builds: `$CARGO_TARGET_DIR`, else the workspace's target/.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The package and binary that train `objective`: a workspace package with a binary named
/// `bapo-<objective>` (an objective crate's own `bapo`, as examples/ipo has), else bapo-cli's
/// `bapo` with the built-in objectives.
pub fn objective_binary(root: &Path, cargo: &str, objective: &str) -> Result<(String, String)> {
    let wanted = format!("bapo-{objective}");
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading cargo metadata")?;
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let has_bin = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["name"].as_str() == Some(wanted.as_str())
                    && t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
            });
        if has_bin && let Some(name) = package["name"].as_str() {
            return Ok((name.to_string(), wanted));
        }
    }
    Ok(("bapo-cli".into(), "bapo".into()))
}

/// The NEEDED entries of an ELF binary's dynamic section, as `readelf -d` lists them.
pub fn needed_libraries(binary: &Path) -> Result<Vec<String>> {
    let output = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .context("running readelf (binutils) to list the libraries the binary needs")?;
    if !output.status.success() {
        bail!(
            "readelf -d {}: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| Some(line.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect())
}

/// Fails unless `binary` links `libtorch_cuda.so`: without it libtorch sees no GPU (a
/// CPU-only libtorch, or a linker that dropped the library as unused). Returns what it links.
pub fn check_links_libtorch_cuda(binary: &Path) -> Result<Vec<String>> {
    let needed = needed_libraries(binary)?;
    if !needed.iter().any(|l| l == "libtorch_cuda.so") {
        bail!(
            "{} does not link libtorch_cuda.so (it links {}): backend `cuda` would see no GPU. \
             Was torch-sys built against a CPU-only libtorch (LIBTORCH)? docs/backends.md",
            binary.display(),
            needed.join(", ")
        );
    }
    Ok(needed)
}

/// `cargo xtask train …`.
pub fn train(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let mut objective = None;
    let mut backend = "cpu".to_string();
    let mut config = root.join("configs/quickstart.toml");
    let mut passthrough: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--objective" => objective = Some(value("--objective")?),
            "--backend" => backend = value("--backend")?,
            "--config" => config = PathBuf::from(value("--config")?),
            "--set" => {
                passthrough.push("--set".into());
                passthrough.push(value("--set")?);
            }
            "--resume" | "--force-anchors" | "--quiet" => passthrough.push(arg.clone()),
            other => bail!(
                "unknown argument `{other}`\nusage: cargo xtask train [--objective NAME] [--backend cpu|tch-cpu|cuda|wgpu|wgpu-cpu] [--config FILE] [--set key=value]… [--resume] [--force-anchors] [--quiet]"
            ),
        }
    }
    let features: Vec<&str> = feature(&backend)?.into_iter().collect();
    crate::fetch::fetch(root)?;
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", config.display()))?;
    let setting = |section: &str, key: &str| {
        table
            .get(section)
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let config_objective = setting("objective", "name");
    let objective = objective.unwrap_or_else(|| config_objective.clone().unwrap_or_default());
    let (package, bin) = objective_binary(root, cargo, &objective)?;
    let (binary, env) = build_binary(root, cargo, (&package, &bin), &features, false)?;
    if backend == "cuda" {
        check_links_libtorch_cuda(&binary)?;
    }

    let mut command = Command::new(&binary);
    command.arg("train").arg("--config").arg(&config);
    command.args(["--set", &format!("training.backend={backend}")]);
    let config_backend = setting("training", "backend").unwrap_or_else(|| "cpu".into());
    // Another objective than the config's starts from that objective's defaults (the config's
    // settings belong to its own objective): `bapo train --objective` does that.
    if !objective.is_empty() {
        command.args(["--objective", &objective]);
    }
    // A run that differs from the config's objective or backend gets its own directory, so
    // that it never meets the config's own run (set `output.dir` to choose another).
    let differs =
        config_objective.as_deref() != Some(objective.as_str()) || config_backend != backend;
    if differs && !passthrough.iter().any(|a| a.starts_with("output.dir=")) {
        let out = setting("output", "dir").unwrap_or_else(|| "runs/run".into());
        command.args([
            "--set",
            &format!("output.dir={:?}", format!("{out}-{objective}-{backend}")),
        ]);
    }
    command.args(&passthrough);
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root);
    eprintln!("$ {}", describe(&command));
    let status = command.status().context("running bapo")?;
    if !status.success() {
        bail!("bapo train failed ({status})");
    }
    Ok(())
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cargo xtask backends`: the tiny run, a few steps, on `cpu`, `tch-cpu` and `wgpu-cpu`, built
/// once with both features; the losses of every step must agree within 1e-4, and so must the
/// final evaluation (forward passes without autodiff under an explicit attention mask: prompts
/// shared by several responses), within 1e-4 relative.
pub fn check(root: &Path, cargo: &str) -> Result<()> {
    let (binary, env) = build_bapo(root, cargo, &["tch", "wgpu"], true)?;
    check_binary(root, &binary, &env)
}

/// The cross-backend check with `binary`, a bapo built with both features (`ci` passes the one
/// its test build made), run in `env`.
pub fn check_binary(root: &Path, binary: &Path, env: &[(String, OsString)]) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("bapo-backends-{}", std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    let backends = ["cpu", "tch-cpu", "wgpu-cpu"];
    let mut curves = Vec::new();
    let mut evaluations = Vec::new();
    for backend in backends {
        let out = scratch.join(backend);
        // BAPO with its default anchor (the smooth Huber-ised hinge), as configs/tiny.toml
        // sets it: the project's headline objective on every backend. One anchor cache for
        // all: the check is about the training step.
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
        curves.push(losses(&out.join(METRICS_FILE))?);
        evaluations.push(last_evaluation(&out.join(EVAL_FILE))?);
    }
    // The cpu run's TensorBoard files, read by TensorBoard itself, against its JSON logs.
    let venv = crate::python::venv()?;
    crate::python::run(
        Command::new(venv.join("bin/python"))
            .arg(root.join("xtask/python/check_tensorboard.py"))
            .arg(scratch.join("cpu")),
        "check_tensorboard.py (event files read by the tensorboard package)",
    )?;
    println!("step  {}", backends.map(|b| format!("{b:>12}")).join(" "));
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
    // The final evaluation, metric by metric, relative to the value's size above 1.
    let mut worst_eval: (f64, String) = (0.0, String::new());
    for (name, reference) in &evaluations[0] {
        for (backend, evaluation) in backends.iter().zip(&evaluations).skip(1) {
            let Some(value) = evaluation.get(name) else {
                bail!("{backend}'s evaluation has no `{name}`");
            };
            let difference = (value - reference).abs() / reference.abs().max(1.0);
            if difference > worst_eval.0 || !difference.is_finite() {
                worst_eval = (
                    difference,
                    format!("{name} on {backend}: {value} vs {reference}"),
                );
            }
        }
    }
    println!(
        "final evaluation ({} metrics): largest relative difference from cpu {:.2e}{}",
        evaluations[0].len(),
        worst_eval.0,
        if worst_eval.1.is_empty() {
            String::new()
        } else {
            format!(" ({})", worst_eval.1)
        }
    );
    check_score_across_backends(root, binary, env, &backends)?;
    check_gpu_backends_refuse_or_run(root, binary, env, &scratch)?;
    std::fs::remove_dir_all(&scratch).ok();
    if curves.iter().any(|c| c.len() != curves[0].len()) || worst > 1e-4 {
        bail!("the backends disagree: largest loss difference {worst:.2e} > 1e-4");
    }
    if evaluations[0].is_empty() || !worst_eval.0.is_finite() || worst_eval.0 > 1e-4 {
        bail!(
            "the backends' evaluations disagree: {} (relative difference {:.2e} > 1e-4)",
            worst_eval.1,
            worst_eval.0
        );
    }
    Ok(())
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

/// The values of `keys`, in that order, of every line of a run log (metrics.jsonl); a line
/// without one of them is an error naming it. `step` is a key too.
pub fn log_numbers(path: &Path, keys: &[&str]) -> Result<Vec<Vec<f64>>> {
    read_rows(path)?
        .iter()
        .map(|row| {
            keys.iter()
                .map(|&key| match key {
                    "step" => Ok(row.step() as f64),
                    _ => row.number(key).with_context(|| {
                        format!("{}: step {} has no `{key}`", path.display(), row.step())
                    }),
                })
                .collect()
        })
        .collect()
}

/// System packages a check needs: `(file that shows it is installed, Debian package)`.
/// Missing ones are installed with apt-get (through sudo when not root); where that is not
/// possible the error names the packages.
pub fn ensure_system_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(marker, _)| !Path::new(marker).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let hint = format!(
        "install the Debian/Ubuntu packages {} (or your system's equivalents)",
        missing.join(" ")
    );
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!("apt-get is not available: {hint}");
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let apt = |args: &[&str]| -> Result<bool> {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        eprintln!("$ apt-get {}", args.join(" "));
        Ok(command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false))
    };
    let install: Vec<&str> = ["install", "-y", "-qq", "--no-install-recommends"]
        .into_iter()
        .chain(missing.iter().copied())
        .collect();
    let installed = apt(&install)? || (apt(&["update", "-qq"])? && apt(&install)?);
    if !installed {
        bail!("could not install them with apt-get: {hint}");
    }
    Ok(())
}

/// Mesa's lavapipe (the Vulkan CPU driver) for `wgpu-cpu`, and a font for the run plots.
pub const CHECK_PACKAGES: [(&str, &str); 3] = [
    (
        "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json",
        "mesa-vulkan-drivers",
    ),
    ("/usr/lib/x86_64-linux-gnu/libvulkan.so.1", "libvulkan1"),
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "fonts-dejavu-core",
    ),
];
