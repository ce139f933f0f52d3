//! `cargo xtask long-run [--steps N] [--backend B]`: the tiny run (configs/tiny.toml) for N
//! steps (default 2,000), with a checkpoint every 4 steps as the config has it, to show that
//! memory does not grow with the length of a run. Every step's metrics row records the
//! process's resident memory (`rss_mib`, VmRSS) and its peak (`peak_rss_mib`, VmHWM); the
//! task prints them every 100 steps and fails when either grew by more than 1 MiB per 2,000
//! steps from step 200 (allocator and caches warmed up) to the last step. Part of `ci` (under a minute);
//! docs/reliability.md records its result.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::{backends, build, run_logs};

/// The largest growth allowed from step `FROM` to the last step, in MiB per 2,000 steps run
/// (at least 1 MiB). Absolute, not relative: CI's binary has libtorch and wgpu mapped (about
/// 390 MiB resident against 19 MiB for the default build), and a share of that would hide a
/// leak of the run's own. 1 MiB is about 5% of the default build's memory at step 200, the
/// limit this check began with; the measured growth is 0.3 MiB over 2,000 steps and 0.6 to
/// 0.8 MiB over 8,000 (docs/reliability.md).
const MAX_GROWTH_MIB_PER_2000_STEPS: f64 = 1.0;
const FROM: u64 = 200;
pub const DEFAULT_STEPS: u64 = 2000;

pub fn long_run(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let mut steps: u64 = DEFAULT_STEPS;
    let mut backend = "cpu".to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--steps" => {
                steps = it
                    .next()
                    .context("--steps needs a value")?
                    .parse()
                    .context("--steps: a whole number")?
            }
            "--backend" => backend = it.next().context("--backend needs a value")?.clone(),
            other => bail!(
                "unknown argument `{other}`\nusage: cargo xtask long-run [--steps N] [--backend B]"
            ),
        }
    }
    if steps < 2 * FROM {
        bail!(
            "--steps {steps}: at least {} (growth is measured from step {FROM})",
            2 * FROM
        );
    }
    let features: Vec<&str> = build::feature(&backend)?.into_iter().collect();
    // The dev profile (optimised, see Cargo.toml), as in CI, which runs the tests' binary.
    let (binary, env) = build::build_bapo(root, cargo, &features, true)?;
    run_steps(root, &binary, &env, &backend, steps)
}

/// The long run with `binary`, a built bapo (`ci` passes the one its test build made), run in
/// `env`.
pub fn run_steps(
    root: &Path,
    binary: &Path,
    env: &[(String, OsString)],
    backend: &str,
    steps: u64,
) -> Result<()> {
    let out = std::env::temp_dir().join(format!("bapo-long-run-{}", std::process::id()));
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let mut command = backends::tiny_run(root, binary, env, backend, &out, &out.join("anchors"));
    command.args(["--set", &format!("training.max_steps={steps}")]);
    eprintln!("$ bapo train --config configs/tiny.toml --set training.max_steps={steps} …");
    let started = std::time::Instant::now();
    let status = command.status().context("running bapo")?;
    if !status.success() {
        bail!("the long run failed ({status})");
    }
    let seconds = started.elapsed().as_secs_f64();
    let rows = memory_rows(&out.join(bapo_rundir::files::METRICS_FILE))?;
    println!("| step | rss_mib | peak_rss_mib |\n|---:|---:|---:|");
    for (step, rss, peak) in rows.iter().filter(|r| r.0 % 100 == 0 || r.0 == steps) {
        println!("| {step} | {rss:.1} | {peak:.1} |");
    }
    let at = |step: u64| rows.iter().find(|r| r.0 == step).copied();
    let (Some(first), Some(last)) = (at(FROM), at(steps)) else {
        bail!("metrics.jsonl lacks step {FROM} or {steps}");
    };
    let (rss_growth, peak_growth) = (last.1 - first.1, last.2 - first.2);
    let limit = MAX_GROWTH_MIB_PER_2000_STEPS * (steps as f64 / 2000.0).max(1.0);
    println!(
        "{steps} steps in {seconds:.0} s; from step {FROM} to {steps}: rss {rss_growth:+.2} MiB ({:+.1}%), peak rss {peak_growth:+.2} MiB ({:+.1}%) (limit {limit:+.1} MiB)",
        100.0 * rss_growth / first.1,
        100.0 * peak_growth / first.2,
    );
    std::fs::remove_dir_all(&out).ok();
    if rss_growth > limit || peak_growth > limit {
        bail!("memory grew by more than {limit} MiB");
    }
    Ok(())
}

/// `(step, rss_mib, peak_rss_mib)` of every row of a run's metrics.jsonl.
fn memory_rows(path: &Path) -> Result<Vec<(u64, f64, f64)>> {
    Ok(
        run_logs::log_numbers(path, &["step", "rss_mib", "peak_rss_mib"])?
            .into_iter()
            .map(|row| (row[0] as u64, row[1], row[2]))
            .collect(),
    )
}
