//! `cargo xtask study [--quick] [--config FILE] [--report | --list]`: the study's grid
//! (configs/study.toml, `bapo_study::plan`), run cell by cell with `bapo train`, then its report
//! (`bapo_study::report`).
//!
//! Each cell is an ordinary run directory; `bapo_study::grid` says which are skipped,
//! resumed or started over. This file only builds `bapo` for the study's backend.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bapo_study::{CellState, StudyConfig};

const USAGE: &str = "usage: cargo xtask study [--quick] [--config FILE] [--report | --list]";

pub fn study(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut report_only = false;
    let mut list = false;
    let mut config_path = root.join("configs/study.toml");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--report" => report_only = true,
            "--list" => list = true,
            "--config" => config_path = PathBuf::from(it.next().context(USAGE)?),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    let config = StudyConfig::load(&config_path)?;
    let plan = config.plan(quick);
    if list {
        for cell in &plan.cells {
            println!(
                "{} ({}): {}",
                cell.dir.display(),
                CellState::of(&root.join(&cell.dir), cell)?.describe(),
                cell.overrides.join(" ")
            );
        }
        return Ok(());
    }
    if !report_only {
        crate::fetch::fetch(root)?;
        let features: Vec<&str> = crate::backends::feature(&plan.backend)?
            .into_iter()
            .collect();
        let (binary, env) = crate::backends::build_bapo(root, cargo, &features, false)?;
        bapo_study::run_grid(root, &plan, &binary, &env)?;
    }
    // Only the project's own full study rewrites docs/study.md.
    let docs = !quick && config_path == root.join("configs/study.toml");
    let written = bapo_study::write_report(root, &plan, docs)?;
    for file in written {
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}
