//! `cargo xtask anchor-forms [--seeds N]`: the comparison behind BAPO's default anchor form
//! (docs/objectives.md). The quickstart (SmolLM2-135M-Instruct, LoRA, user "concise", 32
//! steps) is trained with each one-sided anchor form (`huber`, `hinge`, `squared_hinge`) and
//! with plain DPO, for seeds 0..N, evaluated at the end on 32 held-out pairs per user (no
//! BIG-bench). It prints, per arm, the mean over seeds of what the choice is about: the
//! trained user's held-out margin (personalisation), `anchor/drift` and `kl/heldout` on the
//! held-out base responses (what the anchor protects), and the first step's gradient norm
//! and anchor violations (where float noise decides the plain hinge), and the largest
//! gradient norm of the run (before clipping). Runs go to `runs/anchor-forms/`; about 4
//! minutes per run on 2 cores. `--report` prints the table from the runs already there;
//! `--arms huber,dpo` reruns only those arms and reports the others from their runs.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use bapo_rundir::files::{EVAL_FILE, METRICS_FILE};
use bapo_rundir::{Row, read_rows};

/// (arm, `--set` overrides of the objective).
const ARMS: [(&str, &str); 4] = [
    ("huber", r#"objective.form="huber""#),
    ("hinge", r#"objective.form="hinge""#),
    ("squared_hinge", r#"objective.form="squared_hinge""#),
    ("dpo", r#"objective={name="dpo"}"#),
];

/// Which line of a log a column reads.
#[derive(Clone, Copy)]
enum Pick {
    /// The last line (the end of the run).
    Last,
    /// The line of this step.
    Step(usize),
    /// The largest value over all lines.
    Max,
}

/// The columns: (heading, file, key, line).
const COLUMNS: [(&str, &str, &str, Pick); 8] = [
    (
        "held-out margin (concise)",
        EVAL_FILE,
        "pref/concise/margin",
        Pick::Last,
    ),
    (
        "held-out accuracy (concise)",
        EVAL_FILE,
        "pref/concise/accuracy",
        Pick::Last,
    ),
    ("anchor/drift", EVAL_FILE, "anchor/drift", Pick::Last),
    ("kl/heldout", EVAL_FILE, "kl/heldout", Pick::Last),
    (
        "margin, opposite user (detailed)",
        EVAL_FILE,
        "pref/detailed/margin",
        Pick::Last,
    ),
    ("step-1 grad norm", METRICS_FILE, "grad_norm", Pick::Step(1)),
    (
        "step-1 anchor violations",
        METRICS_FILE,
        "anchor/violation",
        Pick::Step(1),
    ),
    ("largest grad norm", METRICS_FILE, "grad_norm", Pick::Max),
];

pub fn anchor_forms(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let args = FormsArgs::parse(args)?;
    let out = root.join("runs/anchor-forms");
    let binary = if args.train {
        crate::fetch::fetch(root)?;
        Some(crate::build::build_bapo(root, cargo, &[], false)?.0)
    } else {
        None
    };
    let mut table = Vec::new();
    for (arm, objective) in ARMS {
        let mut values = vec![Vec::new(); COLUMNS.len()];
        for seed in 0..args.seeds {
            let dir = out.join(format!("{arm}-seed{seed}"));
            // Arms not selected are reported from their existing runs.
            let selected = args.arms.iter().any(|a| a == arm);
            if let (Some(binary), true) = (&binary, selected) {
                eprintln!("{arm}, seed {seed}");
                train_arm(root, binary, (arm, objective), seed, &dir)?;
            }
            collect(&dir, &mut values)?;
        }
        table.push((arm, values));
    }
    print_table(&table);
    println!(
        "(mean over seeds, each seed's value in parentheses; runs in {})",
        out.display()
    );
    Ok(())
}

/// The command line of `cargo xtask anchor-forms`.
struct FormsArgs {
    seeds: u64,
    /// Train the selected arms (`--report`: only report the runs there are).
    train: bool,
    arms: Vec<String>,
}

impl FormsArgs {
    fn parse(args: &[String]) -> Result<FormsArgs> {
        let mut parsed = FormsArgs {
            seeds: 2,
            train: true,
            arms: ARMS.iter().map(|(arm, _)| arm.to_string()).collect(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--seeds" => {
                    parsed.seeds = it
                        .next()
                        .and_then(|n| n.parse().ok())
                        .context("--seeds needs a number")?
                }
                "--report" => parsed.train = false,
                "--arms" => {
                    parsed.arms = it
                        .next()
                        .context("--arms needs a comma-separated list")?
                        .split(',')
                        .map(str::to_string)
                        .collect();
                    if let Some(unknown) = parsed
                        .arms
                        .iter()
                        .find(|a| !ARMS.iter().any(|(n, _)| n == a))
                    {
                        bail!("unknown arm `{unknown}`: one of huber, hinge, squared_hinge, dpo");
                    }
                }
                _ => bail!("usage: cargo xtask anchor-forms [--seeds N] [--arms A,B] [--report]"),
            }
        }
        Ok(parsed)
    }
}

/// Trains one arm with one seed afresh into `dir`: the quickstart with the arm's objective,
/// evaluated at the end only, without BIG-bench or an export.
fn train_arm(
    root: &Path,
    binary: &Path,
    (arm, objective): (&str, &str),
    seed: u64,
    dir: &Path,
) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let status = Command::new(binary)
        .args(["train", "--config"])
        .arg(root.join("configs/quickstart.toml"))
        .args(["--set", objective])
        .args(["--set", &format!("training.seed={seed}")])
        .args(["--set", "eval.examples_per_user=32"])
        .args(["--set", r#"eval.bigbench_dir="""#])
        .args(["--set", "eval.at_start=false"])
        .args(["--set", "checkpoint.export=false"])
        .args([
            "--set",
            &format!("output.dir={:?}", dir.display().to_string()),
        ])
        .arg("--quiet")
        .current_dir(root)
        .status()
        .context("running bapo")?;
    if !status.success() {
        bail!("the {arm} run with seed {seed} failed ({status})");
    }
    Ok(())
}

/// Each arm's columns: the mean over seeds, with each seed's value.
fn print_table(table: &[(&str, Vec<Vec<f64>>)]) {
    println!("| arm | {} |", COLUMNS.map(|c| c.0).join(" | "));
    println!("|---|{}", "---:|".repeat(COLUMNS.len()));
    for (arm, values) in table {
        let cells: Vec<String> = values
            .iter()
            .map(|v| {
                if v.is_empty() {
                    "—".to_string()
                } else {
                    let per_seed: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    format!("{mean:.3} ({})", per_seed.join(", "))
                }
            })
            .collect();
        println!("| {arm} | {} |", cells.join(" | "));
    }
}

/// Appends one run's value of each column.
fn collect(dir: &Path, values: &mut [Vec<f64>]) -> Result<()> {
    let eval = read_rows(&dir.join(EVAL_FILE))?;
    let metrics = read_rows(&dir.join(METRICS_FILE))?;
    for (column, (_, file, key, pick)) in COLUMNS.iter().enumerate() {
        let log = if *file == EVAL_FILE { &eval } else { &metrics };
        if let Some(v) = pick_value(log, key, *pick) {
            values[column].push(v);
        }
    }
    Ok(())
}

/// `key` from the line(s) of `log` that `pick` names; None when the key is absent there (e.g.
/// anchor metrics of DPO).
fn pick_value(log: &[Row], key: &str, pick: Pick) -> Option<f64> {
    let mut found: Option<f64> = None;
    for row in log {
        let value = row.number(key);
        found = match pick {
            Pick::Last => value,
            Pick::Step(step) if row.step() == step => value,
            Pick::Step(_) => found,
            Pick::Max => match (found, value) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        };
    }
    found
}
