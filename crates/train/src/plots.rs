//! PNG line charts of the logged curves (`plots/<metric>.png`), drawn with plotters. Text
//! needs a TrueType font: `BAPO_PLOT_FONT`, else DejaVu Sans or Arial where the system has
//! them (Debian: `fonts-dejavu-core`); without one the plots are skipped with a message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::metrics::read_log;

const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers a font once; the error says how to get one.
fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = std::env::var_os("BAPO_PLOT_FONT")
                .map(PathBuf::from)
                .or_else(|| {
                    FONT_CANDIDATES
                        .iter()
                        .map(PathBuf::from)
                        .find(|p| p.exists())
                })
                .ok_or("no TrueType font found: set BAPO_PLOT_FONT to a .ttf file, or install fonts-dejavu-core")?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            // plotters keeps the font for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{}: not a usable TrueType font", path.display()))
        })
        .clone()
}

/// Draws every numeric curve of `metrics.jsonl` (and of `eval.jsonl` with two or more
/// points) into `<run>/plots/`; returns the files written.
pub fn write_plots(run: &Path) -> Result<Vec<PathBuf>, String> {
    font()?;
    let dir = run.join("plots");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for log in ["metrics.jsonl", "eval.jsonl"] {
        let path = run.join(log);
        if !path.exists() {
            continue;
        }
        let rows = read_log(&path).map_err(|e| e.to_string())?;
        let mut curves: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (step, values) in &rows {
            for (name, value) in values {
                if value.is_finite() {
                    curves
                        .entry(name.clone())
                        .or_default()
                        .push((*step as f64, *value));
                }
            }
        }
        for (name, points) in curves {
            if points.len() < 2 {
                continue;
            }
            let file = dir.join(format!("{}.png", name.replace('/', "_")));
            draw(&file, &name, &points).map_err(|e| format!("{}: {e}", file.display()))?;
            written.push(file);
        }
    }
    Ok(written)
}

fn draw(file: &Path, name: &str, points: &[(f64, f64)]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(file, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let mut chart = ChartBuilder::on(&root)
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
    root.present()?;
    Ok(())
}
