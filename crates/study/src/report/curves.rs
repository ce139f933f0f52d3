//! Personalisation along training, retention at the declared levels, and end-of-run changes.

use super::select::Table;
use super::text::{header, interval, percent, rate, row};
use super::{COMPARISONS, Report, Results};
use crate::stats::Bootstrap;

impl Report<'_> {
    pub(super) fn personalisation_section(&self, results: &Results) -> String {
        let mut m = format!(
            "## Personalisation along training ({} half)\n\n\
             The trained user's generated-answer style score, and the held-out implicit-reward \
             accuracy with ties (|margin| ≤ 1e-4 nats) counted half, at each evaluated step: \
             mean over seeds.\n\n",
            results.half.name()
        );
        for (li, lr) in self.plan.learning_rates.iter().enumerate() {
            for (what, pick) in [
                ("style score", 0usize),
                ("held-out accuracy, ties half", 1usize),
            ] {
                m += &format!("**Learning rate {}: {what}**\n\n", rate(*lr));
                m += &self.steps_table(results, li, pick);
                m += "\n";
            }
        }
        m
    }

    /// One row per setting, one column per evaluated step.
    fn steps_table(&self, results: &Results, li: usize, pick: usize) -> String {
        let table_of = |setting: &str| {
            let t = results.tables.get(&(li, setting.to_string()))?;
            if pick == 0 {
                t.style.as_ref()
            } else {
                t.accuracy.as_ref()
            }
        };
        let steps: Vec<usize> = self
            .plan
            .settings
            .iter()
            .find_map(|(s, _, _)| table_of(s))
            .map(|t| t.steps.clone())
            .unwrap_or_default();
        let heads: Vec<String> = steps.iter().map(|s| format!("step {s}")).collect();
        let mut all = vec!["setting"];
        all.extend(heads.iter().map(String::as_str));
        let mut m = header(&all);
        for (setting, _, _) in &self.plan.settings {
            let mut cells = vec![setting.clone()];
            for step in &steps {
                cells.push(match table_of(setting) {
                    Some(t) => self.mean_cell(results, t, *step, setting, li, pick),
                    None => "—".into(),
                });
            }
            m += &row(&cells);
        }
        m
    }

    fn mean_cell(
        &self,
        results: &Results,
        t: &Table,
        step: usize,
        setting: &str,
        li: usize,
        pick: usize,
    ) -> String {
        let Some(index) = t.steps.iter().position(|s| *s == step) else {
            return "—".into();
        };
        let key = results.key(&[
            "mean",
            &li.to_string(),
            setting,
            &pick.to_string(),
            &step.to_string(),
        ]);
        match self.boot.mean_at(t, index, &key) {
            Ok(b) => interval(&b, 1.0, 3, false),
            Err(e) => format!("— ({e})"),
        }
    }

    pub(super) fn frontier_section(&self, results: &Results) -> String {
        let mut m = format!(
            "## Retention at the declared personalisation levels ({} half)\n\n\
             Each setting's change from step 0 where its seed-mean style curve first reaches \
             the level (interpolated between evaluations under every bootstrap draw), with \
             the share of resamples whose curve reached it. Then the primary settings' \
             differences at the level, paired (the same drawn seeds and countries).\n\n",
            results.half.name()
        );
        for (li, lr) in self.plan.learning_rates.iter().enumerate() {
            for (fi, f) in self.plan.rules.levels.iter().enumerate() {
                m += &format!("**Learning rate {}, level f = {f}**\n\n", rate(*lr));
                m += &self.measures_header("setting");
                for (setting, _, _) in &self.plan.settings {
                    let cells = (0..self.plan.rules.retention.len()).map(|mi| {
                        let b = results.at_level.get(&(li, fi, setting.clone(), mi));
                        b.map_or("—".into(), |b| self.level_cell(b, mi))
                    });
                    m += &self.measures_row(setting, cells);
                }
                m += "\n";
                m += &self.differences_table(results, li, fi);
            }
        }
        m
    }

    fn differences_table(&self, results: &Results, li: usize, fi: usize) -> String {
        let mut m = self.measures_header("difference");
        for (ci, (b, a)) in COMPARISONS.iter().enumerate() {
            let (Some(nb), Some(na)) = (self.primary(b), self.primary(a)) else {
                continue;
            };
            let cells = (0..self.plan.rules.retention.len()).map(|mi| {
                let d = results.differences.get(&(li, fi, ci, mi));
                d.map_or("—".into(), |d| self.level_cell(d, mi))
            });
            m += &self.measures_row(&format!("{nb} − {na}"), cells);
        }
        m + "\n"
    }

    /// A change at a level: its interval and the share of resamples that reached the level.
    fn level_cell(&self, b: &Bootstrap, mi: usize) -> String {
        let scale = self.plan.rules.retention[mi].scale;
        let shown = interval(b, scale, self.decimals_of(mi), true);
        if b.estimate.is_none() {
            return format!("not reached (reached in {})", percent(b.defined_share()));
        }
        format!("{shown} (reached in {})", percent(b.defined_share()))
    }

    pub(super) fn end_section(&self, results: &Results) -> String {
        let mut m = format!(
            "## Changes at the end of training ({} half)\n\n\
             Each setting's change from step 0 to its last evaluation, mean over seeds and \
             items.\n\n",
            results.half.name()
        );
        for (li, lr) in self.plan.learning_rates.iter().enumerate() {
            m += &format!("**Learning rate {}**\n\n", rate(*lr));
            m += &self.measures_header("setting");
            for (setting, _, _) in &self.plan.settings {
                let cells = (0..self.plan.rules.retention.len()).map(|mi| {
                    let b = results.end.get(&(li, setting.clone(), mi));
                    let scale = self.plan.rules.retention[mi].scale;
                    b.map_or("—".into(), |b| {
                        interval(b, scale, self.decimals_of(mi), true)
                    })
                });
                m += &self.measures_row(setting, cells);
            }
            m += "\n";
        }
        m
    }

    /// A header with one column per retention measure (its unit, and which way is better).
    pub(super) fn measures_header(&self, first: &str) -> String {
        let heads: Vec<String> = self
            .plan
            .rules
            .retention
            .iter()
            .map(|r| {
                let better = if r.higher_is_better() { "↑" } else { "↓" };
                format!("{} ({}, {better})", r.name, r.unit)
            })
            .collect();
        let mut all = vec![first];
        all.extend(heads.iter().map(String::as_str));
        header(&all)
    }

    pub(super) fn measures_row(&self, first: &str, cells: impl Iterator<Item = String>) -> String {
        let mut all = vec![first.to_string()];
        all.extend(cells);
        row(&all)
    }
}
