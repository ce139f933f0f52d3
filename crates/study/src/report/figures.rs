//! The report's figures: per learning rate, each setting's curve of retention change against
//! personalisation (its seed-mean point at every evaluated step, with both intervals), and
//! the heterogeneity scatter (one point per user, joined per setting). Confirmation half.

use super::Report;
use super::text::rate;
use crate::intervals::Interval;
use crate::plots::{Figure, Point};
use crate::stats::Bootstrap;

/// A bootstrap as a plotted interval (no interval: a point).
fn as_interval(b: &Bootstrap, scale: f64) -> Option<Interval> {
    let estimate = b.estimate? * scale;
    let (low, high) = b.bounds.unwrap_or((b.estimate?, b.estimate?));
    Some(Interval {
        estimate,
        low: low * scale,
        high: high * scale,
    })
}

impl Report<'_> {
    /// The figures, in the order of `image_names`.
    pub(super) fn figures(&self) -> Vec<Figure> {
        let mut figures: Vec<Figure> = (0..self.plan.learning_rates.len())
            .map(|li| self.frontier_figure(li))
            .collect();
        if self.plan.has_heterogeneity() {
            figures.push(self.heterogeneity_figure());
        }
        figures
    }

    fn frontier_figure(&self, li: usize) -> Figure {
        let measure = &self.plan.rules.retention[0];
        let series = self
            .plan
            .settings
            .iter()
            .filter_map(|(setting, objective, _)| {
                let tables = self.confirmation.tables.get(&(li, setting.clone()))?;
                let (x, y) = (tables.style.as_ref()?, tables.retention[0].as_ref()?);
                let points = (0..x.steps.len())
                    .filter_map(|t| {
                        let key = format!("figure/{li}/{setting}/{t}");
                        let px = self.boot.mean_at(x, t, &key).ok()?;
                        let py = self.boot.change_at(y, t, &key).ok()?;
                        Some(Point {
                            label: format!("{setting}: {}", x.steps[t]),
                            group: objective.clone(),
                            x: as_interval(&px, 1.0)?,
                            y: as_interval(&py, measure.scale)?,
                        })
                    })
                    .collect();
                Some((setting.clone(), points))
            })
            .collect();
        Figure::Connected {
            title: format!(
                "Retention against personalisation, lr {}",
                rate(self.plan.learning_rates[li])
            ),
            x_label: format!(
                "style score of {} (points labelled by step)",
                self.plan.user
            ),
            y_label: format!("{} change ({})", measure.name, measure.unit),
            series,
        }
    }

    fn heterogeneity_figure(&self) -> Figure {
        let measure = &self.plan.rules.retention[0];
        let series = self
            .confirmation
            .slopes
            .iter()
            .map(|(setting, result)| {
                let objective = self
                    .plan
                    .settings
                    .iter()
                    .find(|(s, _, _)| s == setting)
                    .map_or(String::new(), |(_, o, _)| o.clone());
                let points = result
                    .units
                    .iter()
                    .filter_map(|u| {
                        Some(Point {
                            label: format!("{setting}: {}", u.user),
                            group: objective.clone(),
                            x: as_interval(&u.win, 1.0)?,
                            y: as_interval(&u.change, measure.scale)?,
                        })
                    })
                    .collect();
                (setting.clone(), points)
            })
            .collect();
        Figure::Connected {
            title: "Forgetting against heterogeneity".into(),
            x_label: "reference's win rate on the user's held-out pairs".into(),
            y_label: format!("{} change at the end ({})", measure.name, measure.unit),
            series,
        }
    }

    pub(super) fn figures_section(&self, link_prefix: &str) -> String {
        let mut m = "## Figures\n\n".to_string();
        for lr in &self.plan.learning_rates {
            let name = format!("frontier-lr{}.png", rate(*lr));
            m += &format!(
                "![Retention against personalisation at lr {}]({link_prefix}{name})\n\n",
                rate(*lr)
            );
        }
        if self.plan.has_heterogeneity() {
            m +=
                &format!("![Forgetting against heterogeneity]({link_prefix}heterogeneity.png)\n\n");
        }
        m
    }
}
