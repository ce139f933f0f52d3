//! Building `bapo` (or an objective crate's own `bapo-<name>`) for a backend: the cargo
//! features it needs and the environment it builds and runs in (docs/backends.md).
//!
//! libtorch comes from PyPI's `torch==2.9.0` in the project's venv (created when missing):
//! torch-sys builds against it with `LIBTORCH_USE_PYTORCH` set (to the venv's torch folder)
//! and the venv's python first on `PATH`, and the binary finds `libtorch*.so` through
//! `LD_LIBRARY_PATH`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use bapo_rundir::Backend;

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
