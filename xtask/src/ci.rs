//! `cargo xtask ci`: what CI runs, and the README's test command.
//!
//! Burn is compiled once. The whole suite is built in one `cargo test` with the extra backends
//! turned on (`bapo-cli/tch`, `bapo-cli/wgpu`). The checks after it (fuzzing slice, long run,
//! cross-backend check) run the binaries that build left in the target folder. Any other
//! cargo call would resolve the features its own way: a `-p` build, or a build without the
//! dev-dependencies. Each such call compiles Burn again, about 6 to 20 minutes on 2 cores.
//!
//! The order:
//! 1. The assets, and Mesa's lavapipe where missing.
//! 2. The venv (a ~3 GB download) is made while rustfmt and clippy run; clippy lints the
//!    default, Flex-only build, which so is checked to compile too. The test build needs
//!    the venv: the tch backend compiles against its torch.
//! 3. The one test build, and all tests. The export tests keep their files for
//!    transformers and peft to read back.
//! 4. The objective crate outside the workspace (examples/simpo, `outside.rs`): its own
//!    cargo call, with the same features into the same target folder, so that it builds only
//!    itself and bapo's crates it links.
//! 5. The fuzzing slice, the long run, the Parquet check and the cross-backend check, on
//!    the workspace's binaries.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{backends, build, fetch, fuzz, long_run, outside, parquet_check, python, system};

/// The features of the one build: every backend bapo has besides Flex.
const FEATURES: &str = "bapo-cli/tch,bapo-cli/wgpu";

pub fn ci(root: &Path, cargo: &str) -> Result<()> {
    fetch::fetch(root)?;
    if cfg!(target_os = "linux") && cfg!(target_arch = "x86_64") {
        system::ensure_system_packages(&system::CHECK_PACKAGES)?;
    }
    lint_while_making_the_venv(root, cargo)?;

    let env = build::libtorch_env()?;
    let exports = std::env::temp_dir().join(format!("bapo-export-check-{}", std::process::id()));
    if exports.exists() {
        std::fs::remove_dir_all(&exports)
            .with_context(|| format!("clearing {}", exports.display()))?;
    }
    let mut test_env = env.clone();
    test_env.push(("BAPO_KEEP_EXPORT".into(), exports.clone().into()));
    test_workspace(root, cargo, &test_env)?;
    python::check_export_files(root, &exports)?;
    std::fs::remove_dir_all(&exports).ok();
    outside::check(root, cargo, &env)?;

    let built = build::target_dir(root).join("debug");
    fuzz::run_targets(
        root,
        &built.join("bapo-fuzz"),
        &env,
        &["--minutes".into(), "1.5".into()],
    )?;
    long_run::run_steps(
        root,
        &built.join("bapo"),
        &env,
        "cpu",
        long_run::DEFAULT_STEPS,
    )?;
    parquet_check::check(root, &built.join("bapo"), &env)?;
    backends::check_binary(root, &built.join("bapo"), &env)
}

/// rustfmt and clippy (warnings are errors) while the venv is made: the one waits on the CPU,
/// the other mostly on the network. pip is always waited for, also when a check fails, so that
/// it is never cut off halfway through an install.
fn lint_while_making_the_venv(root: &Path, cargo: &str) -> Result<()> {
    let venv = std::thread::spawn(python::venv);
    let lints = run_cargo(root, cargo, &["fmt", "--all", "--check"], &[]).and_then(|()| {
        run_cargo(
            root,
            cargo,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )
    });
    let venv = venv
        .join()
        .map_err(|_| anyhow::anyhow!("making the venv panicked"))?;
    lints?;
    venv.map(|_| ())
}

/// `cargo test --workspace --features FEATURES --no-fail-fast` in `env`, echoing its output,
/// then one closing line with the totals over every test binary (cargo prints one
/// `test result:` line per binary, the last of which is often a crate's empty doc-test run).
fn test_workspace(root: &Path, cargo: &str, env: &[(String, OsString)]) -> Result<()> {
    let args = [
        "test",
        "--workspace",
        "--features",
        FEATURES,
        "--no-fail-fast",
    ];
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new(cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .context("could not run cargo test")?;
    let mut totals = TestTotals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("{} passed, {} failed", totals.passed, totals.failed);
    if !status.success() || totals.failed > 0 {
        bail!("tests failed ({status})");
    }
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// Sums of cargo's `test result: ok. N passed; M failed; …` lines.
#[derive(Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
}

impl TestTotals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

/// Runs `cargo ARGS` in `root` with `env` added, streaming its output; fails if it fails.
fn run_cargo(root: &Path, cargo: &str, args: &[&str], env: &[(String, OsString)]) -> Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .status()
        .with_context(|| format!("could not run `{cargo}`"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
