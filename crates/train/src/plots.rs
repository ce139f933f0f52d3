//! PNG line charts of the logged curves (`plots/<metric>.png`), drawn with plotters. Text
//! needs a TrueType font: `BAPO_PLOT_FONT`, else DejaVu Sans or Arial where the system has
//! them (Debian: `fonts-dejavu-core`); without one the plots are skipped with a message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bapo_rundir::PlotError;
use bapo_rundir::files::{EVAL_FILE, METRICS_FILE, PLOTS_DIR};
use bapo_rundir::plot::{Area, DrawResult, font, write_png};
use plotters::prelude::*;

use crate::metrics::read_log;

const WIDTH: u32 = 720;
const HEIGHT: u32 = 420;

/// Draws every numeric curve of `metrics.jsonl` (and of `eval.jsonl` with two or more
/// points) into `<run>/plots/`; returns the files written. Each PNG is drawn in memory,
/// written beside its place and renamed, so a failed write never leaves a truncated plot.
pub fn write_plots(run: &Path) -> Result<Vec<PathBuf>, PlotError> {
    font()?;
    let dir = run.join(PLOTS_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| PlotError::Write(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for log in [METRICS_FILE, EVAL_FILE] {
        let path = run.join(log);
        if !path.exists() {
            continue;
        }
        for (name, points) in curves(&path)? {
            if points.len() < 2 {
                continue;
            }
            let file = dir.join(format!("{}.png", name.replace('/', "_")));
            write_png(&file, (WIDTH, HEIGHT), |area| chart(area, &name, &points))?;
            written.push(file);
        }
    }
    Ok(written)
}

/// Each metric's finite (step, value) points in the log at `path`.
fn curves(path: &Path) -> Result<BTreeMap<String, Vec<(f64, f64)>>, PlotError> {
    let rows = read_log(path).map_err(|e| PlotError::Write(e.to_string()))?;
    let mut curves: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for row in &rows {
        for (name, value) in row.numbers() {
            if value.is_finite() {
                curves
                    .entry(name)
                    .or_default()
                    .push((row.step() as f64, value));
            }
        }
    }
    Ok(curves)
}

/// One curve's line chart.
fn chart(root: &Area, name: &str, points: &[(f64, f64)]) -> DrawResult {
    root.fill(&WHITE)?;
    let (x0, x1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let mut chart = ChartBuilder::on(root)
        .caption(name, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
    Ok(())
}
