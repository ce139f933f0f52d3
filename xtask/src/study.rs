//! `cargo xtask study [--quick] [--config FILE] [--binary OBJECTIVE=PATH]… [--report | --collect
//! | --list]`: a study's grid (configs/study.toml by default, or another study config such as
//! configs/anchor-forms.toml; `bapo_study::plan`), run cell by cell with `bapo train`, then its
//! report (`bapo_study::report`).
//!
//! Each cell is an ordinary run directory; `bapo_study::grid` says which are skipped,
//! resumed or started over. This file only builds the binaries for the study's backend:
//! `bapo`, and for a setting whose objective is not built in, the `bapo-<objective>` of its
//! crate (a workspace crate's, built here; an outside crate's, given by `--binary`).
//!
//! A study config that names a `committed` folder (configs/study.toml: `docs/study`) keeps
//! its full grid's results in the repository: `<committed>/data.json`, `<committed>.md` and
//! the figures in `<committed>/`. The report is always computed from the study's data file,
//! read back after writing:
//! - after every run of the grid and after the grid, the finished runs are collected into
//!   `<dir>/data.json` (and, for a committed full grid, `<committed>/data.json`);
//! - a committed study runs over several sittings, on machines that need not keep runs/: the
//!   runs in its committed data file count as done and are carried into the next one, so
//!   committing that file after a sitting keeps its work;
//! - `--report` alone reads the committed data file of a committed full grid (so it needs no
//!   runs/ and regenerates `<committed>.md` byte for byte), and `<dir>/data.json` otherwise,
//!   collecting it from the run directories first when it does not exist yet;
//! - `--collect` collects the finished runs (and those of earlier sittings) without running
//!   the grid, then writes the report: for a sitting whose grid was stopped by hand.
//!
//! A committed full grid, once every run has data, writes `<committed>.md` and its figures in
//! `<committed>/`; any other study, `--quick`, and a committed one before then, writes
//! `<dir>/report.md` with its figures beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bapo_study::{Binaries, CellState, GridError, Output, Plan, StudyConfig, StudyData};

const USAGE: &str = "usage: cargo xtask study [--quick] [--config FILE] [--binary OBJECTIVE=PATH]… [--report | --collect | --list]";

/// Where a study config keeps its full grid's results in the repository (its `committed`
/// folder, relative to the workspace root).
struct Committed {
    folder: PathBuf,
}

impl Committed {
    /// The committed data file, relative to the workspace root.
    fn data(&self) -> PathBuf {
        self.folder.join("data.json")
    }

    /// Where the report and its figures go, and how the report links to the figures.
    fn output(&self, root: &Path) -> Output {
        let name = self
            .folder
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        Output {
            markdown: root.join(format!("{}.md", self.folder.display())),
            images: root.join(&self.folder),
            link_prefix: format!("{name}/"),
        }
    }
}

pub fn study(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let args = StudyArgs::parse(root, args)?;
    let config = StudyConfig::load(&args.config_path)?;
    if args.quick && !config.has_quick() {
        bail!(
            "{}: --quick needs a [quick] table, and this study config has none",
            args.config_path.display()
        );
    }
    let plan = config.plan(args.quick);
    // Only a full grid is committed (`--quick` never).
    let committed = config
        .committed
        .clone()
        .filter(|_| !args.quick)
        .map(|folder| Committed { folder });
    let docs = committed.as_ref();
    let run_data = root.join(&plan.dir).join("data.json");
    // The runs of earlier sittings: the committed data of the full grid.
    let recorded = if let Some(c) = docs.filter(|c| root.join(c.data()).exists()) {
        StudyData::read(&root.join(c.data()))?
    } else {
        StudyData::default()
    };
    if args.list {
        return list_cells(root, &plan, &recorded);
    }
    if args.collect_only {
        collect(root, &plan, &run_data, docs, &recorded)?;
    } else if !args.report_only {
        crate::fetch::fetch(root)?;
        let features: Vec<&str> = crate::build::feature(&plan.backend)?.into_iter().collect();
        let (binary, env) = crate::build::build_bapo(root, cargo, &features, false)?;
        let binaries =
            objective_binaries(root, cargo, &plan, &features, &binary, args.own_binaries)?;
        // Each finished run is written out at once, so a sitting stopped mid-grid keeps it.
        let after_run = || {
            collect(root, &plan, &run_data, docs, &recorded).map_err(|e| GridError::Io {
                path: run_data.display().to_string(),
                message: format!("{e:#}"),
            })
        };
        bapo_study::run_grid(root, &plan, &binaries, &env, &recorded, after_run)?;
        collect(root, &plan, &run_data, docs, &recorded)?;
    } else if docs.is_none() && !run_data.exists() {
        collect(root, &plan, &run_data, None, &recorded)?;
    }
    let (source, shown) = if let Some(c) = docs {
        (root.join(c.data()), c.data().display().to_string())
    } else {
        let shown = plan.dir.join("data.json").display().to_string();
        (run_data, shown)
    };
    report(root, &plan, &StudyData::read(&source)?, &shown, docs)
}

/// The command line of `cargo xtask study`.
struct StudyArgs {
    quick: bool,
    report_only: bool,
    collect_only: bool,
    list: bool,
    config_path: PathBuf,
    /// Objective → a binary with it linked, for an objective crate outside the workspace.
    own_binaries: BTreeMap<String, PathBuf>,
}

impl StudyArgs {
    fn parse(root: &Path, args: &[String]) -> Result<StudyArgs> {
        let mut parsed = StudyArgs {
            quick: false,
            report_only: false,
            collect_only: false,
            list: false,
            config_path: root.join("configs/study.toml"),
            own_binaries: BTreeMap::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => parsed.quick = true,
                "--report" => parsed.report_only = true,
                "--collect" => parsed.collect_only = true,
                "--list" => parsed.list = true,
                "--config" => parsed.config_path = PathBuf::from(it.next().context(USAGE)?),
                "--binary" => {
                    let value = it.next().context(USAGE)?;
                    let (name, path) = value.split_once('=').with_context(|| {
                        format!("--binary {value}: expected OBJECTIVE=PATH\n{USAGE}")
                    })?;
                    parsed
                        .own_binaries
                        .insert(name.to_string(), PathBuf::from(path));
                }
                other => bail!("unknown argument `{other}`\n{USAGE}"),
            }
        }
        Ok(parsed)
    }
}

/// Writes the report of `data` (read from `shown`): `<committed>.md` once a committed full
/// grid (`docs`) has data for every planned run, else the study's run folder's report.md.
fn report(
    root: &Path,
    plan: &Plan,
    data: &StudyData,
    shown: &str,
    docs: Option<&Committed>,
) -> Result<()> {
    let planned = plan
        .cells
        .iter()
        .filter(|c| c.grid != bapo_study::Grid::Reference)
        .count();
    let docs_report = docs.filter(|_| data.runs.len() == planned);
    if let (Some(c), None) = (docs, docs_report) {
        eprintln!(
            "{shown} holds {} of the plan's {planned} runs: {}.md is written when all have \
             data; the report so far goes to {}",
            data.runs.len(),
            c.folder.display(),
            plan.dir.join("report.md").display()
        );
    }
    let out = if let Some(c) = docs_report {
        c.output(root)
    } else {
        let dir = root.join(&plan.dir);
        Output {
            markdown: dir.join("report.md"),
            images: dir,
            link_prefix: String::new(),
        }
    };
    let (written, warnings) = bapo_study::write_report(plan, data, shown, &out)?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    for file in written {
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}

/// The binaries the grid runs: `bapo`; for each objective of the plan that a workspace crate
/// gives a `bapo-<objective>` of its own (as `cargo xtask train --objective` finds it), that
/// binary, built with the same features; and the binaries given by `--binary` (an objective
/// crate outside the workspace, built by its owner).
fn objective_binaries(
    root: &Path,
    cargo: &str,
    plan: &Plan,
    features: &[&str],
    bapo: &Path,
    given: BTreeMap<String, PathBuf>,
) -> Result<Binaries> {
    let mut binaries = Binaries::bapo(bapo);
    let objectives: BTreeSet<&str> = plan
        .cells
        .iter()
        .map(|c| c.objective.as_str())
        .filter(|o| !o.is_empty() && !given.contains_key(*o))
        .collect();
    for objective in objectives {
        let (package, bin) = crate::build::objective_binary(root, cargo, objective)?;
        if package != "bapo-cli" {
            let (binary, _) =
                crate::build::build_binary(root, cargo, (&package, &bin), features, false)?;
            binaries.by_objective.insert(objective.to_string(), binary);
        }
    }
    binaries.by_objective.extend(given);
    Ok(binaries)
}

/// Collects the finished runs and those of earlier sittings (`recorded`) into `path` (and,
/// for a committed full grid, the committed copy).
fn collect(
    root: &Path,
    plan: &Plan,
    path: &Path,
    docs: Option<&Committed>,
    recorded: &StudyData,
) -> Result<()> {
    let data = StudyData::collect(root, plan, recorded)?;
    data.write(path)?;
    eprintln!("wrote {} ({} runs)", path.display(), data.runs.len());
    if let Some(c) = docs {
        let committed = root.join(c.data());
        data.write(&committed)?;
        eprintln!("wrote {}", committed.display());
    }
    Ok(())
}

fn list_cells(root: &Path, plan: &Plan, recorded: &StudyData) -> Result<()> {
    let base = bapo_study::plan::base_fingerprint(root, &plan.base)?;
    for cell in &plan.cells {
        println!(
            "{} ({}): {}",
            cell.dir.display(),
            CellState::of(&root.join(&cell.dir), cell, &base, recorded)?.describe(),
            cell.overrides.join(" ")
        );
    }
    Ok(())
}
