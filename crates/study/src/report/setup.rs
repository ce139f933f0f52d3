//! The report's first sections: the setup as declared, the probes before training, and the
//! development/confirmation split.

use std::collections::BTreeMap;

use super::Report;
use super::select::{Half, Selector};
use super::text::{decimals, header, interval, number, percent, rate, row};
use crate::data::RunData;
use crate::plan::Role;
use crate::stats::{Clusters, cluster_bootstrap};

impl Report<'_> {
    pub(super) fn setup_section(&self) -> String {
        let mut m = "## Setup\n\n".to_string();
        m += &self.grid_text();
        m += &self.rules_text();
        m += &self.not_tested_text();
        m += &self.cost_text();
        m
    }

    fn grid_text(&self) -> String {
        let p = self.plan;
        let rates: Vec<String> = p.learning_rates.iter().map(|r| rate(*r)).collect();
        let evaluated = if p.curve_interval > 0 {
            format!("every {} steps and at the end", p.curve_interval)
        } else {
            "at the start and the end".to_string()
        };
        let mut m = format!(
            "### The grid\n\nEvery run trains `{}` (backend `{}`) on user `{}` at learning rates \
             {}, evaluated {evaluated}. Runs with data per setting and learning rate:\n\n",
            p.base.display(),
            p.backend,
            p.user,
            rates.join(", "),
        );
        let mut heads = vec!["setting", "objective", "role"];
        let rate_heads: Vec<String> = rates.iter().map(|r| format!("runs at {r}")).collect();
        heads.extend(rate_heads.iter().map(String::as_str));
        m += &header(&heads);
        for (name, objective, role) in &p.settings {
            let mut cells = vec![name.clone(), objective.clone(), role_name(*role).into()];
            for lr in &p.learning_rates {
                let runs = super::runs_of(self.data, "main", name, &p.user, Some(*lr));
                let seeds: Vec<String> = runs.iter().map(|r| r.seed.to_string()).collect();
                cells.push(format!("{} (seeds {})", runs.len(), seeds.join(", ")));
            }
            m += &row(&cells);
        }
        if !p.has_heterogeneity() {
            return m + "\nNo heterogeneity grid.\n\n";
        }
        m += &format!(
            "\nHeterogeneity: settings {} on users {} ({} runs with data).\n\n",
            list(&p.heterogeneity_settings),
            list(&p.heterogeneity_users),
            self.data
                .runs
                .iter()
                .filter(|r| r.grid == "heterogeneity")
                .count()
        );
        m
    }

    fn rules_text(&self) -> String {
        let r = &self.plan.rules;
        let levels: Vec<String> = r.levels.iter().map(|f| f.to_string()).collect();
        let mut m = format!(
            "### The rules, as declared before the runs\n\n\
             Personalisation is the trained user's generated-answer style score \
             (`answer/{}/style`). Objectives are compared where their seed-mean curve first \
             reaches the level `ref + f·(1 − ref)` for f = {}, ref being the score at step 0 \
             (interpolated linearly between evaluations, under every bootstrap draw). \
             Retention measures, every one shown for every comparison:\n\n",
            self.plan.user,
            levels.join(", ")
        );
        m += &header(&["measure", "metric", "unit", "margin", "better"]);
        for measure in &r.retention {
            let better = if measure.higher_is_better() {
                "higher"
            } else {
                "lower"
            };
            m += &row(&[
                measure.name.clone(),
                format!("`{}`", measure.metric),
                measure.unit.clone(),
                format!("±{}", measure.margin),
                better.into(),
            ]);
        }
        m += &format!(
            "\nIntervals: {} two-level percentile bootstrap, {} resamples (seeds with \
             replacement, then countries with replacement within the drawn seeds; settings \
             compared on the same draws). Claims: Holm's step-down over the verdict's whole \
             family at α = {}. Items are split by country into a confirmation share of {} \
             (the verdict) and a development rest (exploration): a country is in the \
             confirmation half when the FNV-1a 64-bit hash of its UTF-8 name, passed through \
             MurmurHash3's fmix64 finaliser, is below {} · 2⁶⁴. Probe items whose answer occurs in the trained user's training text \
             are left out of every retention number.\n\n",
            percent(r.level),
            r.resamples,
            r.alpha,
            r.confirmation_share,
            r.confirmation_share
        );
        m
    }

    fn not_tested_text(&self) -> String {
        if self.plan.not_tested.is_empty() {
            return String::new();
        }
        let mut m = "### Not tested\n\n".to_string();
        for (objective, why) in &self.plan.not_tested {
            m += &format!("- **{objective}**: {why} The verdict draws nothing from it.\n");
        }
        m + "\n"
    }

    /// Tokens and wall time per run, medians per objective, from the runs that recorded them.
    fn cost_text(&self) -> String {
        let mut by_objective: BTreeMap<&str, Vec<&RunData>> = BTreeMap::new();
        for run in self.data.runs.iter().filter(|r| r.grid == "main") {
            by_objective.entry(&run.objective).or_default().push(run);
        }
        let mut m = "### Compute cost\n\nPer run of the main grid:\n\n".to_string();
        m += &header(&[
            "objective",
            "runs",
            "tokens per run (median)",
            "wall time per run (median)",
        ]);
        for (objective, runs) in &by_objective {
            let tokens: Vec<f64> = runs.iter().filter_map(|r| r.cost?.tokens).collect();
            let seconds: Vec<f64> = runs.iter().filter_map(|r| r.cost?.seconds).collect();
            m += &row(&[
                objective.to_string(),
                runs.len().to_string(),
                median_text(&tokens, runs.len(), |v| format!("{v:.0}")),
                median_text(&seconds, runs.len(), |v| format!("{v:.0} s")),
            ]);
        }
        m + "\nTokens are the training steps' (prompt and responses, as trained); wall time is \
             the whole `bapo train` process, evaluations included (the generated answers are \
             most of an evaluation). \"not recorded\": a run made before `finished.json` \
             recorded its cost, or resumed after a kill (only its last part would be \
             counted).\n\n"
    }

    pub(super) fn probes_section(&self) -> String {
        if !self.plan.has_probes() {
            return String::new();
        }
        let mut m = "## The probes before training\n\n".to_string();
        let Some(run) = self.data.runs.iter().find(|r| r.grid == "probes") else {
            return m + "No probe check in the data.\n\n";
        };
        m += "The model before training (the probe check: one step at learning rate 0, then \
              one evaluation), every item: accuracy \
              choosing by summed log-prob and by log-prob per character (lm-eval's \
              `acc_norm`), each with its cluster-bootstrap interval; the score of a chooser \
              that only picks the shortest answer; chance (the mean of 1 / choices). A probe \
              has signal when an accuracy's interval lies above both chance and the \
              length-only score.\n\n";
        m += &header(&[
            "probe",
            "items",
            "summed",
            "per character",
            "length only",
            "chance",
            "signal",
        ]);
        let mut without = Vec::new();
        for base in probe_names(run) {
            let line = self.probe_row(run, &base);
            if line.1.is_empty() {
                without.push(format!("`{base}`"));
            }
            m += &line.0;
        }
        m += &if without.is_empty() {
            "\nEvery probe has signal at this model size.\n\n".to_string()
        } else {
            format!(
                "\nNo signal at this model size: {}.\n\n",
                without.join(", ")
            )
        };
        m
    }

    /// The row of probe `base` (and `base_norm`), and which accuracies have signal.
    fn probe_row(&self, run: &RunData, base: &str) -> (String, Vec<&'static str>) {
        let norm = format!("{base}_norm");
        let labels = [base, norm.as_str()]
            .iter()
            .filter_map(|n| run.metrics.get(*n))
            .map(|m| &self.data.labels[m.labels])
            .find(|l| !l.chance.is_empty() || !l.shortest_correct.is_empty());
        let floor_chance = labels.and_then(|l| mean(&l.chance));
        let floor_length = labels.and_then(|l| {
            let v: Vec<f64> = l
                .shortest_correct
                .iter()
                .map(|b| f64::from(u8::from(*b)))
                .collect();
            mean(&v)
        });
        let floor = floor_chance.unwrap_or(0.0).max(floor_length.unwrap_or(0.0));
        let mut signal = Vec::new();
        let mut cells = vec![format!("`{base}`"), String::new()];
        for (name, kind) in [(base, "summed"), (norm.as_str(), "per character")] {
            let Some(metric) = run.metrics.get(name) else {
                cells.push("—".into());
                continue;
            };
            let values = &metric.values[0];
            cells[1] = values.len().to_string();
            let key = format!("probe/{name}");
            match self.probe_accuracy(values, metric.labels, &key) {
                Some(b) => {
                    if b.bounds.is_some_and(|(low, _)| low > floor) {
                        signal.push(kind);
                    }
                    cells.push(interval(&b, 100.0, 1, false));
                }
                None => cells.push("—".into()),
            }
        }
        let show = |v: Option<f64>| v.map_or("—".into(), |v| number(v * 100.0, 1, false));
        cells.push(show(floor_length));
        cells.push(show(floor_chance));
        cells.push(if signal.is_empty() {
            "none".into()
        } else {
            signal.join(", ")
        });
        (row(&cells), signal)
    }

    fn probe_accuracy(
        &self,
        values: &[f64],
        labels: usize,
        key: &str,
    ) -> Option<crate::stats::Bootstrap> {
        let select = Selector {
            data: self.data,
            half: Half::All,
            share: self.plan.rules.confirmation_share,
            drop_seen: false,
        };
        let items = select.items(labels, values.len())?;
        let clusters: &Clusters = &items.clusters;
        cluster_bootstrap(
            values,
            clusters,
            self.boot.resamples,
            self.boot.level,
            super::select::fnv1a64(key),
        )
        .ok()
    }

    pub(super) fn split_section(&self) -> String {
        let mut m = "## Development and confirmation halves\n\n".to_string();
        let Some(run) = self
            .data
            .runs
            .iter()
            .find(|r| r.grid == "main" && r.user == self.plan.user)
        else {
            return m + "No run of the main grid.\n\n";
        };
        m += "Items per half for the trained user (a country's items all fall in one half; \
              items seen in training are left out of the retention measures):\n\n";
        m += &header(&[
            "metric",
            "confirmation: countries / items",
            "development: countries / items",
            "seen, left out",
        ]);
        let user = &self.plan.user;
        let mut metrics = vec![
            format!("answer/{user}/style"),
            format!("pref/{user}/margin"),
        ];
        metrics.extend(
            self.plan
                .rules
                .retention
                .iter()
                .map(|r| r.metric.replace("<user>", user)),
        );
        for name in metrics {
            let Some(metric) = run.metrics.get(&name) else {
                continue;
            };
            let labels = &self.data.labels[metric.labels];
            let n = metric.values[0].len();
            let retention = !name.starts_with("answer/") && !name.starts_with("pref/");
            let mut cells = vec![format!("`{name}`")];
            for half in [Half::Confirmation, Half::Development] {
                let select = Selector {
                    data: self.data,
                    half,
                    share: self.plan.rules.confirmation_share,
                    drop_seen: retention,
                };
                cells.push(match select.items(metric.labels, n) {
                    Some(items) => format!("{} / {}", items.clusters.count(), items.index.len()),
                    None => "0 / 0".into(),
                });
            }
            let seen = labels.seen.iter().filter(|s| **s).count();
            cells.push(if retention {
                seen.to_string()
            } else {
                "kept".into()
            });
            m += &row(&cells);
        }
        m + "\n"
    }

    /// The decimals of retention measure `mi`.
    pub(super) fn decimals_of(&self, mi: usize) -> usize {
        decimals(self.plan.rules.retention[mi].scale)
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
    }
}

fn list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The median of `values` shown by `show`, "not recorded" when no run recorded it, and how
/// many did when only some.
fn median_text(values: &[f64], runs: usize, show: impl Fn(f64) -> String) -> String {
    if values.is_empty() {
        return "not recorded".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    if n < runs {
        format!("{} ({n} of {runs} runs)", show(median))
    } else {
        show(median)
    }
}

/// The choice probes of the probe run: `knowledge/*` metrics without the `_norm` suffix, and
/// not the log-prob one (`facts_logp`).
fn probe_names(run: &RunData) -> Vec<String> {
    run.metrics
        .keys()
        .filter(|k| k.starts_with("knowledge/") && !k.ends_with("_norm") && !k.ends_with("_logp"))
        .cloned()
        .collect()
}
