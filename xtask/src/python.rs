//! `cargo xtask check-exports` (also part of `ci`): bapo's exported checkpoints and adapters,
//! loaded by `transformers` and `peft` themselves, must give bapo's logits.
//!
//! Prepares a virtual environment with PyPI's `torch==2.9.0` (the version libtorch builds use
//! too), `transformers` and `peft` when none is there (`$BAPO_VENV`, default
//! `~/.cache/bapo/venv`), runs the export tests keeping their files, then
//! `crates/model/tests/fixtures/hf/check_export.py` on them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const PACKAGES: [&str; 6] = [
    "torch==2.9.0",
    "transformers==5.24.0",
    "peft==0.21.2",
    "trl==1.16.0",
    // Writes the Parquet copy of the personalised data (`cargo xtask parquet-check`); TRL
    // depends on it too.
    "datasets==5.2.0",
    // Its event reader checks bapo's TensorBoard files (`cargo xtask backends`).
    "tensorboard==2.20.0",
];

/// The virtual environment with the reference Python packages, created if needed. Made sure
/// of once per process: `ci` asks for it in four places, and each pip run that finds
/// everything installed still takes seconds.
pub fn venv() -> Result<PathBuf> {
    static ENSURED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(dir) = ENSURED.get() {
        return Ok(dir.clone());
    }
    let dir = match std::env::var_os("BAPO_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; set BAPO_VENV")?;
            PathBuf::from(home).join(".cache/bapo/venv")
        }
    };
    ensure_venv(&dir, &PACKAGES)?;
    Ok(ENSURED.get_or_init(|| dir).clone())
}

/// The folder of the `torch` package the venv in `venv` imports (its `lib/` holds libtorch).
pub fn torch_dir(venv: &Path) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    let output = Command::new(&python)
        .args([
            "-c",
            "import os, torch; print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} cannot import torch: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// A virtual environment in `dir` (created with `python3 -m venv` where missing) with
/// `packages` installed (pip skips those already there).
pub fn ensure_venv(dir: &Path, packages: &[&str]) -> Result<()> {
    let python = dir.join("bin/python");
    if !python.exists() {
        eprintln!("creating {}", dir.display());
        run(
            Command::new("python3").args(["-m", "venv"]).arg(dir),
            "python3 -m venv",
        )?;
    }
    eprintln!("installing {} (skipped when present)", packages.join(" "));
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages),
        "pip install",
    )
}

pub fn check_exports(root: &Path, cargo: &str) -> Result<()> {
    venv()?;
    let out = std::env::temp_dir().join(format!("bapo-export-check-{}", std::process::id()));
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    eprintln!(
        "$ BAPO_KEEP_EXPORT={} cargo test -p bapo-model --test export",
        out.display()
    );
    run(
        Command::new(cargo)
            .args(["test", "--quiet", "-p", "bapo-model", "--test", "export"])
            .env("BAPO_KEEP_EXPORT", &out)
            .current_dir(root),
        "cargo test -p bapo-model --test export",
    )?;
    check_export_files(root, &out)?;
    std::fs::remove_dir_all(&out).ok();
    Ok(())
}

/// check_export.py on the files the export tests kept in `out` (`BAPO_KEEP_EXPORT`).
pub fn check_export_files(root: &Path, out: &Path) -> Result<()> {
    let venv = venv()?;
    let script = root.join("crates/model/tests/fixtures/hf/check_export.py");
    run(
        Command::new(venv.join("bin/python"))
            .arg(&script)
            .arg(out)
            .current_dir(root),
        "check_export.py (exports read by transformers and peft)",
    )
}

/// Runs `command`; fails, naming `what`, when it cannot start or does not succeed.
pub fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
