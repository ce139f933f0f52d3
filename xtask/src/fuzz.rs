//! `cargo xtask fuzz [--executions N] [--minutes M] [--target T]… [--seed S]`: every fuzz
//! target of crates/fuzz (docs/reliability.md) with mutated real inputs, one process per
//! target and two at a time (the machine's two cores), until each has run N executions
//! (default 1,000,000) or the time budget M (spread over the targets) is spent. Prints a table
//! and writes target/fuzz/report.json; fails if any input found a fault or any target ran
//! fewer than N executions without a time budget set. Inputs that found faults are saved in
//! target/fuzz/findings/<target>/; copied to crates/fuzz/regressions/ they become tests.
//! `ci` runs a slice: `--minutes 1.5`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Processes at once: the machine has two cores.
const WORKERS: usize = 2;

struct Options {
    executions: u64,
    /// Total minutes over all targets, if limited.
    minutes: Option<f64>,
    /// Empty: every target.
    targets: Vec<String>,
    seed: u64,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        executions: 1_000_000,
        minutes: None,
        targets: Vec::new(),
        seed: 0,
    };
    let mut it = args.iter();
    let usage = "usage: cargo xtask fuzz [--executions N] [--minutes M] [--target T]… [--seed S]";
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value\n{usage}"))
        };
        match arg.as_str() {
            "--executions" => {
                options.executions = value("--executions")?
                    .parse()
                    .context("--executions: a whole number")?
            }
            "--minutes" => {
                options.minutes = Some(value("--minutes")?.parse().context("--minutes: a number")?)
            }
            "--seed" => {
                options.seed = value("--seed")?.parse().context("--seed: a whole number")?
            }
            "--target" => options.targets.push(value("--target")?.clone()),
            other => bail!("unknown argument `{other}`\n{usage}"),
        }
    }
    Ok(options)
}

pub fn fuzz(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    parse(args)?;
    // The dev profile (dependencies optimised, our crates at -O1 with overflow checks, which
    // turn silent wrap-arounds into findings).
    let (binary, env) =
        crate::build::build_binary(root, cargo, ("bapo-fuzz", "bapo-fuzz"), &[], true)?;
    run_targets(root, &binary, &env, args)
}

/// Fuzzes with `binary`, a built bapo-fuzz (`ci` passes the one its test build made), run in
/// `env`.
pub fn run_targets(
    root: &Path,
    binary: &Path,
    env: &[(String, OsString)],
    args: &[String],
) -> Result<()> {
    let mut options = parse(args)?;
    options.targets = targets(binary, env, std::mem::take(&mut options.targets))?;
    let findings = root.join("target/fuzz/findings");
    let started = Instant::now();
    let reports = run_in_parallel(root, binary, env, &options, &findings)?;
    let report_path = root.join("target/fuzz/report.json");
    std::fs::create_dir_all(report_path.parent().unwrap_or(root))?;
    std::fs::write(&report_path, serde_json::to_string_pretty(&reports)?)?;
    print_table(&reports);
    println!(
        "{:.1} minutes in all; report: {}",
        started.elapsed().as_secs_f64() / 60.0,
        report_path.display()
    );
    let problems = problems(&reports, &options);
    if !problems.is_empty() {
        bail!(
            "fuzzing found faults (inputs saved under {}):\n{}",
            findings.display(),
            problems.join("\n")
        );
    }
    Ok(())
}

/// The targets to fuzz: those `asked` (every one when none is), checked against the ones the
/// binary names (`--list`).
fn targets(binary: &Path, env: &[(String, OsString)], asked: Vec<String>) -> Result<Vec<String>> {
    let output = Command::new(binary)
        .arg("--list")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let known: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if let Some(unknown) = asked.iter().find(|t| !known.contains(t)) {
        bail!(
            "no fuzz target `{unknown}`; the targets are {}",
            known.join(", ")
        );
    }
    Ok(if asked.is_empty() { known } else { asked })
}

/// Every target fuzzed, [`WORKERS`] at a time, each for an equal share of the workers' time;
/// their reports in the order they finished.
fn run_in_parallel(
    root: &Path,
    binary: &Path,
    env: &[(String, OsString)],
    options: &Options,
    findings: &Path,
) -> Result<Vec<Value>> {
    let seconds = options.minutes.map_or(86_400.0, |m| {
        m * 60.0 * WORKERS as f64 / options.targets.len() as f64
    });
    let mut queue: Vec<&String> = options.targets.iter().rev().collect();
    let mut running: Vec<(String, Child)> = Vec::new();
    let mut reports: Vec<Value> = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < WORKERS
            && let Some(target) = queue.pop()
        {
            let child = Command::new(binary)
                .args(["--target", target])
                .args(["--executions", &options.executions.to_string()])
                .args(["--seconds", &format!("{seconds:.1}")])
                .args(["--seed", &options.seed.to_string()])
                .arg("--findings")
                .arg(findings)
                .current_dir(root)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("CARGO_MANIFEST_DIR", root.join("crates/fuzz"))
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("running {}", binary.display()))?;
            eprintln!("fuzzing {target} …");
            running.push((target.clone(), child));
        }
        // Wait for whichever finishes first (polling: two children, seconds to minutes each).
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut index = 0;
        while index < running.len() {
            if running[index].1.try_wait()?.is_some() {
                let (target, child) = running.remove(index);
                reports.push(collect(&target, child)?);
            } else {
                index += 1;
            }
        }
    }
    Ok(reports)
}

/// What the reports show wrong: findings, errors, refused seeds, and (without a time limit)
/// targets that ran fewer executions than asked.
fn problems(reports: &[Value], options: &Options) -> Vec<String> {
    let mut problems = Vec::new();
    for r in reports {
        let target = r["target"].as_str().unwrap_or("?");
        if let Some(findings) = r["findings"].as_array().filter(|f| !f.is_empty()) {
            for f in findings {
                problems.push(format!("{target}: {} ({})", f["message"], f["saved"]));
            }
        }
        if r["error"].is_string() {
            problems.push(format!("{target}: {}", r["error"]));
        }
        if let Some(seeds) = r["seeds_refused"].as_array().filter(|s| !s.is_empty()) {
            problems.push(format!("{target}: seeds refused: {seeds:?}"));
        }
        let executions = r["executions"].as_u64().unwrap_or(0);
        if options.minutes.is_none() && executions < options.executions {
            problems.push(format!("{target}: only {executions} executions"));
        }
    }
    problems
}

/// The JSON report a finished `bapo-fuzz` printed, or one saying how it ended.
fn collect(target: &str, mut child: Child) -> Result<Value> {
    let mut report = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                report = Some(value);
            }
        }
    }
    let status = child.wait()?;
    Ok(match report {
        Some(r) => r,
        // The allocation and time-limit hooks end the process after saving the input.
        None => serde_json::json!({
            "target": target,
            "error": format!("bapo-fuzz ended without a report ({status}); see its messages above"),
        }),
    })
}

fn print_table(reports: &[Value]) {
    println!(
        "| target | executions | seconds | executions/s | accepted | distinct outcomes | largest allocation / bound | faults |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let executions = r["executions"].as_u64().unwrap_or(0);
        let seconds = r["seconds"].as_f64().unwrap_or(0.0);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1}% | {} | {:.3} | {} |",
            r["target"].as_str().unwrap_or("?"),
            executions,
            seconds,
            executions as f64 / seconds.max(1e-9),
            100.0 * r["accepted"].as_u64().unwrap_or(0) as f64 / executions.max(1) as f64,
            r["distinct_outcomes"].as_u64().unwrap_or(0),
            r["largest_allocation_of_bound"].as_f64().unwrap_or(0.0),
            r["findings"].as_array().map_or(1, Vec::len),
        );
    }
}
