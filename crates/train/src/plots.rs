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

/// Registers a font once; the error says how to get one. A font the user named in
/// `BAPO_PLOT_FONT` that cannot be used is an error of its own: it once skipped the plots
/// with a note that read like a missing system font (issue #26).
fn font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), PlotError>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let (path, named) = match std::env::var_os("BAPO_PLOT_FONT") {
                Some(path) => (PathBuf::from(path), true),
                None => FONT_CANDIDATES
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
                    .map(|p| (p, false))
                    .ok_or(PlotError::NoFont("no TrueType font found: set BAPO_PLOT_FONT to a .ttf file, or install fonts-dejavu-core".into()))?,
            };
            let fail = |why: String| {
                if named {
                    PlotError::BadFont(format!(
                        "BAPO_PLOT_FONT={}: {why}; name a .ttf file, or unset it to use the system's fonts",
                        path.display()
                    ))
                } else {
                    PlotError::NoFont(format!("{}: {why}", path.display()))
                }
            };
            let bytes = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
            // plotters keeps the font for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| fail("not a usable TrueType font".into()))
        })
        .clone()
}

/// Why plots were not (all) written.
#[derive(Debug, Clone, PartialEq)]
pub enum PlotError {
    /// No font to draw text with: the plots are skipped (a note, not a failure).
    NoFont(String),
    /// The font `BAPO_PLOT_FONT` names cannot be used: the user asked for plots in it.
    BadFont(String),
    /// A plot could not be drawn or written (e.g. a full disk): the run did not write
    /// everything it should.
    Write(String),
}

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlotError::NoFont(m) | PlotError::BadFont(m) | PlotError::Write(m) => f.write_str(m),
        }
    }
}

const WIDTH: u32 = 720;
const HEIGHT: u32 = 420;

/// Draws every numeric curve of `metrics.jsonl` (and of `eval.jsonl` with two or more
/// points) into `<run>/plots/`; returns the files written. Each PNG is drawn in memory,
/// written beside its place and renamed, so a failed write never leaves a truncated plot.
pub fn write_plots(run: &Path) -> Result<Vec<PathBuf>, PlotError> {
    font()?;
    let dir = run.join("plots");
    std::fs::create_dir_all(&dir)
        .map_err(|e| PlotError::Write(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for log in ["metrics.jsonl", "eval.jsonl"] {
        let path = run.join(log);
        if !path.exists() {
            continue;
        }
        let rows = read_log(&path).map_err(|e| PlotError::Write(e.to_string()))?;
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
            let png = draw(&name, &points).map_err(|e| {
                PlotError::Write(format!("{}: drawing failed: {e}", file.display()))
            })?;
            let partial = file.with_extension("png.partial");
            std::fs::write(&partial, png)
                .and_then(|()| std::fs::rename(&partial, &file))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&partial);
                    PlotError::Write(format!("{}: {e}", file.display()))
                })?;
            written.push(file);
        }
    }
    Ok(written)
}

/// The PNG bytes of one curve.
fn draw(name: &str, points: &[(f64, f64)]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        chart(&root, name, points)?;
        root.present()?;
    }
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, pixels).ok_or("pixel buffer size")?;
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageOutputFormat::Png)?;
    Ok(png.into_inner())
}

fn chart(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    name: &str,
    points: &[(f64, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
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
