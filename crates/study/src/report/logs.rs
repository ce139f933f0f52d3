//! The runs' own log figures ([`crate::plan::LogFigure`]): per learning rate, one row per
//! setting, each figure as the mean over the seeds and every seed's value. Descriptive only:
//! a figure read once per run (the first step's gradient norm, the largest one) has one value
//! per seed, too few for an interval, and the verdict draws nothing from it.

use super::Report;
use super::select::runs_of;
use super::text::{header, rate, row};

impl Report<'_> {
    /// The section, or nothing when the plan reads no figures from the logs.
    pub(super) fn log_figures_section(&self) -> String {
        let figures = &self.plan.log_figures;
        if figures.is_empty() {
            return String::new();
        }
        let mut m = "## The runs' logs\n\n".to_string();
        m += "Figures read from each run's own logs, as the study config names them: the mean \
              over seeds, then each seed's value in seed order in parentheses (— where a \
              run's log does not hold the figure as a finite number). A description of the \
              runs: no interval, and the verdict draws nothing from them.\n\n";
        m += &header(&["figure", "log", "key", "line"]);
        for f in figures {
            m += &row(&[
                f.name.clone(),
                format!("`{}`", f.log.file_name()),
                format!("`{}`", f.key),
                f.at.to_string(),
            ]);
        }
        m += "\n";
        for lr in &self.plan.learning_rates {
            m += &format!("**Learning rate {}**\n\n", rate(*lr));
            let mut heading = vec!["setting", "seeds"];
            heading.extend(figures.iter().map(|f| f.name.as_str()));
            m += &header(&heading);
            for (setting, _, _) in &self.plan.settings {
                let runs = runs_of(self.data, "main", setting, &self.plan.user, Some(*lr));
                let seeds: Vec<String> = runs.iter().map(|r| r.seed.to_string()).collect();
                let mut cells = vec![setting.clone(), seeds.join(", ")];
                for f in figures {
                    let values: Vec<Option<f64>> = runs
                        .iter()
                        .map(|r| r.figures.get(&f.name).copied())
                        .collect();
                    cells.push(mean_and_seeds(&values));
                }
                m += &row(&cells);
            }
            m += "\n";
        }
        m
    }
}

/// "mean (v₁, v₂, …)" over the seeds' values; the mean only of the seeds that have one, and
/// "—" for a seed without one (or alone when none has one).
fn mean_and_seeds(values: &[Option<f64>]) -> String {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    if present.is_empty() {
        return "—".into();
    }
    let mean = present.iter().sum::<f64>() / present.len() as f64;
    let each: Vec<String> = values
        .iter()
        .map(|v| v.map_or("—".into(), significant))
        .collect();
    format!("{} ({})", significant(mean), each.join(", "))
}

/// `v` with three significant digits, in plain decimals (never "-0").
fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{}", v.abs());
    }
    let digits_before_point = v.abs().log10().floor() as i32 + 1;
    let decimals = (3 - digits_before_point).clamp(0, 6) as usize;
    super::text::number(v, decimals, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mean_counts_only_the_seeds_that_have_the_figure() {
        assert_eq!(mean_and_seeds(&[Some(4.8), Some(8.6)]), "6.70 (4.80, 8.60)");
        assert_eq!(mean_and_seeds(&[Some(1010.0), None]), "1010 (1010, —)");
        assert_eq!(mean_and_seeds(&[None, None]), "—");
        assert_eq!(
            mean_and_seeds(&[Some(-0.000_123_4)]),
            "-0.000123 (-0.000123)"
        );
        assert_eq!(mean_and_seeds(&[Some(0.0)]), "0 (0)");
    }
}
