//! The report's PNG figures, drawn with plotters: one colour per objective (lighter shades for
//! an objective's further settings). Text needs a TrueType font: `BAPO_PLOT_FONT`, else DejaVu
//! Sans or Arial where the system has them (the same lookup as a run's own plots).

use std::path::Path;

use bapo_rundir::PlotError;
use bapo_rundir::plot::{Area, DrawResult, write_png};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::intervals::Interval;

/// A point with intervals on both axes.
#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    /// The objective (chooses the colour).
    pub group: String,
    pub x: Interval,
    pub y: Interval,
}

/// A figure of the report.
#[derive(Debug, Clone)]
pub enum Figure {
    /// Points with error bars joined by a line per series (e.g. per setting, over users).
    Connected {
        title: String,
        x_label: String,
        y_label: String,
        series: Vec<(String, Vec<Point>)>,
    },
}

/// The colour of an objective's `shade`-th setting (0: full colour).
fn colour(group: &str, shade: usize) -> RGBColor {
    let RGBColor(r, g, b) = match group {
        "dpo" => RGBColor(214, 39, 40),
        "kl-dpo" => RGBColor(255, 127, 14),
        "bapo" => RGBColor(31, 119, 180),
        "mrpo" => RGBColor(44, 160, 44),
        _ => RGBColor(148, 103, 189),
    };
    let t = (shade as f64 * 0.3).min(0.7);
    let mix = |c: u8| (c as f64 + (200.0 - c as f64).max(0.0) * t) as u8;
    RGBColor(mix(r), mix(g), mix(b))
}

/// Shades: the n-th distinct label of a group (in order of appearance) gets shade n.
fn shades<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<usize> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    items
        .map(|(group, label)| {
            if !seen.contains(&(group, label)) {
                seen.push((group, label));
            }
            seen.iter()
                .filter(|(g, _)| *g == group)
                .position(|(_, l)| *l == label)
                .unwrap_or(0)
        })
        .collect()
}

impl Figure {
    /// Draws the figure into `file` (PNG), drawn in memory and renamed into place whole.
    pub fn draw(&self, file: &Path) -> Result<(), PlotError> {
        if self.is_empty() {
            return Err(PlotError::Write(format!(
                "{}: nothing to draw",
                file.display()
            )));
        }
        write_png(file, (760, 500), |area| self.draw_on(area))
    }

    /// Whether the figure has no point or line at all.
    pub fn is_empty(&self) -> bool {
        let Figure::Connected { series, .. } = self;
        series.iter().all(|(_, p)| p.is_empty())
    }

    fn draw_on(&self, area: &Area) -> DrawResult {
        area.fill(&WHITE)?;
        match self {
            Figure::Connected {
                title,
                x_label,
                y_label,
                series,
            } => {
                let area = area.titled(title, ("sans-serif", 22))?;
                let points: Vec<Point> = series
                    .iter()
                    .flat_map(|(name, points)| {
                        points.iter().map(move |p| Point {
                            label: format!("{name}: {}", p.label),
                            ..p.clone()
                        })
                    })
                    .collect();
                scatter(&area, x_label, y_label, &points, true)?;
            }
        }
        Ok(())
    }
}

fn bounds(values: impl Iterator<Item = (f64, f64)>) -> (f64, f64) {
    let (mut low, mut high) = (f64::MAX, f64::MIN);
    for (a, b) in values {
        low = low.min(a);
        high = high.max(b);
    }
    if low > high {
        return (0.0, 1.0);
    }
    let pad = ((high - low) * 0.08).max(1e-6);
    (low - pad, high + pad)
}

/// A chart of both axes' f64 ranges on a PNG.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws `points` with their error bars on `area`; `connect`: joins each setting's points with
/// a line and names each point by its user, else names the points in the legend.
fn scatter(
    area: &Area,
    x_label: &str,
    y_label: &str,
    points: &[Point],
    connect: bool,
) -> DrawResult {
    let mut chart = scatter_chart(area, x_label, y_label, points)?;
    let shade = shades(
        points
            .iter()
            .map(|p| (p.group.as_str(), setting_of(&p.label))),
    );
    if connect {
        join_settings(&mut chart, points, &shade)?;
    }
    for (p, s) in points.iter().zip(&shade) {
        draw_point(&mut chart, p, colour(&p.group, *s), connect)?;
    }
    {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(())
}

/// The chart of a scatter panel, with its mesh and zero lines drawn.
fn scatter_chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    x_label: &str,
    y_label: &str,
    points: &[Point],
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    // The y axis shows "no change" (0); the x axis only what the points span.
    let x = bounds(points.iter().map(|p| (p.x.low, p.x.high)));
    let y = bounds(
        points
            .iter()
            .map(|p| (p.y.low, p.y.high))
            .chain([(0.0, 0.0)]),
    );
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .draw()?;
    // Zero lines: no change.
    chart.draw_series(LineSeries::new([(x.0, 0.0), (x.1, 0.0)], BLACK.mix(0.3)))?;
    if x.0 < 0.0 && x.1 > 0.0 {
        chart.draw_series(LineSeries::new([(0.0, y.0), (0.0, y.1)], BLACK.mix(0.3)))?;
    }
    Ok(chart)
}

/// Joins each setting's points (in order) by a line in the colour of its first point, named
/// in the legend by the setting.
fn join_settings(chart: &mut Chart, points: &[Point], shade: &[usize]) -> DrawResult {
    let mut groups: Vec<&str> = Vec::new();
    for p in points {
        let name = setting_of(&p.label);
        if !groups.contains(&name) {
            groups.push(name);
        }
    }
    for name in groups {
        let members: Vec<(usize, &Point)> = points
            .iter()
            .enumerate()
            .filter(|(_, p)| setting_of(&p.label) == name)
            .collect();
        let c = colour(&members[0].1.group, shade[members[0].0]);
        chart
            .draw_series(LineSeries::new(
                members.iter().map(|(_, p)| (p.x.estimate, p.y.estimate)),
                c.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(lx, ly)| PathElement::new([(lx, ly), (lx + 18, ly)], c.stroke_width(2)));
    }
    Ok(())
}

/// Draws one point in colour `c` with its error bars, named by its user beside it (`joined`)
/// or in the legend.
fn draw_point(chart: &mut Chart, p: &Point, c: RGBColor, joined: bool) -> DrawResult {
    chart.draw_series([
        PathElement::new(
            [(p.x.low, p.y.estimate), (p.x.high, p.y.estimate)],
            c.stroke_width(1),
        ),
        PathElement::new(
            [(p.x.estimate, p.y.low), (p.x.estimate, p.y.high)],
            c.stroke_width(1),
        ),
    ])?;
    let dot = chart.draw_series([Circle::new((p.x.estimate, p.y.estimate), 5, c.filled())])?;
    if joined {
        // Joined points are named beside them by the last part of their label (the step of
        // a frontier, the user of a heterogeneity point); the line's legend names the
        // setting. (The label is `series: setting: step`, so not the second part.)
        let text = p.label.rsplit(": ").next().unwrap_or(&p.label).to_string();
        chart.draw_series([EmptyElement::at((p.x.estimate, p.y.estimate))
            + Text::new(text, (7, -16), ("sans-serif", 13).into_font().color(&c))])?;
    } else {
        // Points that cluster are told apart by the legend, not by text on top of each
        // other.
        dot.label(p.label.clone())
            .legend(move |(lx, ly)| Circle::new((lx + 8, ly), 5, c.filled()));
    }
    Ok(())
}

/// The setting part of a `setting: user` label.
fn setting_of(label: &str) -> &str {
    label.split(": ").next().unwrap_or(label)
}
