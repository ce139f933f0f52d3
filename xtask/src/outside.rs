//! `cargo xtask outside-objective`: the plugin promise kept outside this workspace.
//! examples/simpo is an objective crate with a workspace and a Cargo.lock of its own and bapo's
//! crates as path dependencies, as a crate in another repository has them: its tests run every
//! cross-objective invariant (the testkit's one line), its loss against TRL's formula, and one
//! tiny training run through its own `bapo-simpo`. CI runs it after the workspace's tests.
//!
//! It is built with the features of CI's workspace build (tch and wgpu) into the same target
//! folder, so that Burn and everything else already built there is reused, and `--locked`, so
//! that its Cargo.lock keeps the versions bapo's own lock pins: when bapo's dependencies change,
//! the error says how to bring the copy up to date.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The objective crate outside the workspace.
pub const CRATE: &str = "examples/simpo";

/// rustfmt's check, then `cargo test --locked`, on the outside crate, with `env` (libtorch's,
/// for the tch feature).
pub fn check(root: &Path, cargo: &str, env: &[(String, OsString)]) -> Result<()> {
    let manifest = root.join(CRATE).join("Cargo.toml");
    let manifest_arg = manifest.display().to_string();
    let fmt = ["fmt", "--manifest-path", &manifest_arg, "--all", "--check"];
    eprintln!("$ cargo {}", fmt.join(" "));
    let status = Command::new(cargo)
        .args(fmt)
        .current_dir(root.join(CRATE))
        .status()
        .with_context(|| format!("could not run `{cargo}`"))?;
    if !status.success() {
        bail!(
            "{CRATE} is not formatted ({status}): run `cargo fmt --manifest-path {CRATE}/Cargo.toml`"
        );
    }
    let args = [
        "test",
        "--manifest-path",
        &manifest_arg,
        "--locked",
        "--features",
        "tch,wgpu",
    ];
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root.join(CRATE))
        .status()
        .with_context(|| format!("could not run `{cargo}`"))?;
    if !status.success() {
        bail!(
            "the objective crate outside the workspace ({CRATE}) failed ({status}). If cargo said \
             its Cargo.lock needs updating, bapo's dependencies changed: copy bapo's Cargo.lock \
             over {CRATE}/Cargo.lock and run `cargo metadata --manifest-path {CRATE}/Cargo.toml \
             --format-version 1 > /dev/null`, which keeps bapo's versions and adds the crate's own"
        );
    }
    Ok(())
}

/// The task: the check on its own, in libtorch's environment.
pub fn outside_objective(root: &Path, cargo: &str) -> Result<()> {
    let env = crate::build::libtorch_env()?;
    check(root, cargo, &env)
}
