//! The study's report (docs/study.md for the full study, `<dir>/report.md` otherwise) and its
//! plots, computed from a [`StudyData`] read back from its file, never from run directories:
//! the committed `docs/study/data.json` regenerates docs/study.md byte for byte.
//!
//! Sections: the setup (grid, rules as declared, what was not tested, compute cost), the
//! probes before training, the development/confirmation split, the verdict (a fixed family of
//! claims, Holm-adjusted), personalisation along training, the frontiers (retention at the
//! declared personalisation levels), end-of-run changes, heterogeneity, the runs' own log
//! figures where the study names some (descriptive), the figures, then the same tables on the
//! development half as exploration. Every interval is a two-level bootstrap from
//! [`crate::stats`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::StudyData;
use crate::plan::{Grid, Plan, RetentionMeasure, Role};
use crate::stats::{Bootstrap, StatsError};

mod curves;
mod figures;
mod heterogeneity;
mod logs;
mod numbers;
pub mod select;
mod setup;
mod text;
mod verdict;

use numbers::Boot;
use select::{Half, Selector, Table, runs_of, tie_half_accuracy};

/// Problems writing the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: no finished run of the main grid: run `cargo xtask study` first")]
    Empty(String),
}

/// Where the report goes: the Markdown file, the folder of its images, and how the Markdown
/// links to that folder.
#[derive(Debug, Clone)]
pub struct Output {
    pub markdown: PathBuf,
    pub images: PathBuf,
    pub link_prefix: String,
}

/// The objective pairs the verdict compares, (b, a) for "b − a", by objective name.
pub const COMPARISONS: [(&str, &str); 3] = [("bapo", "dpo"), ("kl-dpo", "dpo"), ("bapo", "kl-dpo")];

/// The image files, always linked (a figure that cannot be drawn is a warning, so that the
/// Markdown does not depend on the machine's fonts).
fn image_names(plan: &Plan) -> Vec<String> {
    let mut names: Vec<String> = plan
        .learning_rates
        .iter()
        .map(|lr| format!("frontier-lr{}.png", text::rate(*lr)))
        .collect();
    if plan.has_heterogeneity() {
        names.push("heterogeneity.png".into());
    }
    names
}

/// Writes the report of `data` (read from `source`, the name the report cites) to `out`.
/// Returns the files written and warnings (figures not drawn).
pub fn write_report(
    plan: &Plan,
    data: &StudyData,
    source: &str,
    out: &Output,
) -> Result<(Vec<PathBuf>, Vec<String>), ReportError> {
    let report = Report::new(plan, data)?;
    let mut written = Vec::new();
    let mut warnings = Vec::new();
    create_dir(&out.images)?;
    for (name, figure) in image_names(plan).iter().zip(report.figures()) {
        let file = out.images.join(name);
        match figure.draw(&file) {
            Ok(()) => written.push(file),
            Err(e) => warnings.push(format!("{name} not drawn: {e}")),
        }
    }
    let markdown = report.markdown(source, &out.link_prefix);
    if let Some(parent) = out.markdown.parent() {
        create_dir(parent)?;
    }
    write(&out.markdown, &markdown)?;
    written.push(out.markdown.clone());
    Ok((written, warnings))
}

/// The report's Markdown alone (what `write_report` writes), for tests and checks.
pub fn render(
    plan: &Plan,
    data: &StudyData,
    source: &str,
    link_prefix: &str,
) -> Result<String, ReportError> {
    Ok(Report::new(plan, data)?.markdown(source, link_prefix))
}

fn create_dir(dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.display().to_string(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    let partial = path.with_extension("md.partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })
}

/// One setting at one learning rate on one half of the items: its tables.
#[derive(Debug, Clone)]
struct SettingTables {
    /// The trained user's generated-answer style score.
    style: Option<Table>,
    /// Held-out implicit-reward accuracy, ties counted half.
    accuracy: Option<Table>,
    /// Each retention measure, in `rules.retention`'s order.
    retention: Vec<Option<Table>>,
}

/// Every bootstrap of one half, computed once and shared by the tables and the verdict.
struct Results {
    half: Half,
    /// (learning rate index, setting) → tables.
    tables: BTreeMap<(usize, String), SettingTables>,
    /// (learning rate index, level index, setting, measure index) → change at the level.
    at_level: BTreeMap<(usize, usize, String, usize), Bootstrap>,
    /// (learning rate index, setting, measure index) → change at the end.
    end: BTreeMap<(usize, String, usize), Bootstrap>,
    /// (learning rate index, level index, comparison index, measure index) → b − a.
    differences: BTreeMap<(usize, usize, usize, usize), Bootstrap>,
    /// Heterogeneity setting → its users, and the slope of their end change on the
    /// reference's win rate.
    slopes: BTreeMap<String, heterogeneity::HetResult>,
}

struct Report<'a> {
    plan: &'a Plan,
    data: &'a StudyData,
    boot: Boot,
    confirmation: Results,
    development: Results,
    /// Numbers that could not be computed, and why.
    notes: Vec<String>,
}

impl<'a> Report<'a> {
    fn new(plan: &'a Plan, data: &'a StudyData) -> Result<Report<'a>, ReportError> {
        if !data.runs.iter().any(|r| r.grid == "main") {
            return Err(ReportError::Empty(plan.dir.display().to_string()));
        }
        let boot = Boot {
            resamples: plan.rules.resamples,
            level: plan.rules.level,
        };
        let mut notes = Vec::new();
        let confirmation = Results::compute(plan, data, boot, Half::Confirmation, &mut notes);
        let development = Results::compute(plan, data, boot, Half::Development, &mut notes);
        Ok(Report {
            plan,
            data,
            boot,
            confirmation,
            development,
            notes,
        })
    }

    fn markdown(&self, source: &str, link_prefix: &str) -> String {
        let mut m = String::new();
        m += &format!("# {}\n\n", self.plan.title);
        m += &format!(
            "Written by `cargo xtask study` from `{source}` ({} finished runs); `cargo xtask \
             study --report` rewrites it from that file alone. Every interval is a {} \
             two-level bootstrap ({} resamples: seeds, then countries within them).\n\n",
            self.data.runs.len(),
            text::percent(self.plan.rules.level),
            self.plan.rules.resamples
        );
        m += &self.setup_section();
        m += &self.probes_section();
        m += &self.split_section();
        m += &self.verdict_section();
        m += &self.personalisation_section(&self.confirmation);
        m += &self.frontier_section(&self.confirmation);
        m += &self.end_section(&self.confirmation);
        m += &self.heterogeneity_section(&self.confirmation);
        m += &self.log_figures_section();
        m += &self.figures_section(link_prefix);
        m += "## Exploratory: the development half\n\n";
        m += "The same tables on the development half of the items (the other countries). \
              No claim is drawn from them.\n\n";
        m += &self.personalisation_section(&self.development);
        m += &self.frontier_section(&self.development);
        m += &self.end_section(&self.development);
        m += &self.heterogeneity_section(&self.development);
        m += &self.missing_section();
        m
    }

    /// The primary setting of `objective`, if the grid has one.
    fn primary(&self, objective: &str) -> Option<&'a str> {
        self.plan
            .settings
            .iter()
            .find(|(_, o, role)| o == objective && *role == Role::Primary)
            .map(|(name, _, _)| name.as_str())
    }

    /// Cells of the plan without data, and numbers not computed.
    fn missing_section(&self) -> String {
        let missing: Vec<String> = self
            .plan
            .cells
            .iter()
            .filter(|c| c.grid != Grid::Reference)
            .filter(|c| {
                !self.data.runs.iter().any(|r| {
                    r.grid == crate::data::grid_name(c.grid)
                        && r.setting == c.setting
                        && r.user == c.user
                        && r.seed == c.seed
                        && select::same_rate(r.learning_rate, c.learning_rate)
                })
            })
            .map(|c| format!("`{}`", c.dir.display()))
            .collect();
        if missing.is_empty() && self.notes.is_empty() {
            return String::new();
        }
        let mut m = "## Missing\n\n".to_string();
        if !missing.is_empty() {
            m += &format!(
                "{} of the plan's runs have no data (not finished): {}.\n\n",
                missing.len(),
                missing.join(", ")
            );
        }
        for note in &self.notes {
            m += &format!("- {note}\n");
        }
        if !self.notes.is_empty() {
            m += "\n";
        }
        m
    }
}

impl Results {
    fn compute(
        plan: &Plan,
        data: &StudyData,
        boot: Boot,
        half: Half,
        notes: &mut Vec<String>,
    ) -> Results {
        let select = Selector {
            data,
            half,
            share: plan.rules.confirmation_share,
            drop_seen: true,
        };
        let mut results = Results {
            half,
            tables: BTreeMap::new(),
            at_level: BTreeMap::new(),
            end: BTreeMap::new(),
            differences: BTreeMap::new(),
            slopes: BTreeMap::new(),
        };
        for (li, lr) in plan.learning_rates.iter().enumerate() {
            for (setting, _, _) in &plan.settings {
                let runs = runs_of(data, "main", setting, &plan.user, Some(*lr));
                let tables = setting_tables(&runs, &plan.user, &plan.rules.retention, &select);
                results.tables.insert((li, setting.clone()), tables);
            }
        }
        results.compute_ends(plan, boot, notes);
        results.compute_levels(plan, boot, notes);
        results.compute_differences(plan, boot, notes);
        results.slopes = heterogeneity::slopes(plan, data, boot, &select, notes);
        results
    }

    fn key(&self, parts: &[&str]) -> String {
        format!("{}/{}", self.half.name(), parts.join("/"))
    }

    fn compute_ends(&mut self, plan: &Plan, boot: Boot, notes: &mut Vec<String>) {
        for ((li, setting), tables) in &self.tables {
            for (mi, table) in tables.retention.iter().enumerate() {
                let Some(table) = table else { continue };
                let key = self.key(&[
                    "end",
                    &li.to_string(),
                    setting,
                    &plan.rules.retention[mi].metric,
                ]);
                if let Some(b) = kept(boot.end_change(table, &key), &key, notes) {
                    self.end.insert((*li, setting.clone(), mi), b);
                }
            }
        }
    }

    fn compute_levels(&mut self, plan: &Plan, boot: Boot, notes: &mut Vec<String>) {
        for ((li, setting), tables) in &self.tables {
            let Some(style) = &tables.style else { continue };
            for (fi, f) in plan.rules.levels.iter().enumerate() {
                for (mi, table) in tables.retention.iter().enumerate() {
                    let Some(table) = table else { continue };
                    let metric = &plan.rules.retention[mi].metric;
                    let key =
                        self.key(&["level", &li.to_string(), &f.to_string(), setting, metric]);
                    if let Some(b) = kept(boot.at_level(style, table, *f, &key), &key, notes) {
                        self.at_level.insert((*li, fi, setting.clone(), mi), b);
                    }
                }
            }
        }
    }

    fn compute_differences(&mut self, plan: &Plan, boot: Boot, notes: &mut Vec<String>) {
        for (ci, (b, a)) in COMPARISONS.iter().enumerate() {
            let primary = |o: &str| {
                plan.settings
                    .iter()
                    .find(|(_, obj, role)| obj == o && *role == Role::Primary)
                    .map(|(n, _, _)| n.clone())
            };
            let (Some(b), Some(a)) = (primary(b), primary(a)) else {
                continue;
            };
            for li in 0..plan.learning_rates.len() {
                self.compute_difference(plan, boot, (li, ci), (&a, &b), notes);
            }
        }
    }

    fn compute_difference(
        &mut self,
        plan: &Plan,
        boot: Boot,
        (li, ci): (usize, usize),
        (a, b): (&str, &str),
        notes: &mut Vec<String>,
    ) {
        let (Some(ta), Some(tb)) = (
            self.tables.get(&(li, a.to_string())),
            self.tables.get(&(li, b.to_string())),
        ) else {
            return;
        };
        let (Some(xa), Some(xb)) = (&ta.style, &tb.style) else {
            return;
        };
        for (fi, f) in plan.rules.levels.iter().enumerate() {
            for mi in 0..plan.rules.retention.len() {
                let (Some(ya), Some(yb)) = (&ta.retention[mi], &tb.retention[mi]) else {
                    continue;
                };
                let metric = &plan.rules.retention[mi].metric;
                let key = self.key(&["difference", &li.to_string(), &f.to_string(), b, a, metric]);
                let Some(result) = boot.difference_at_level((xa, ya), (xb, yb), *f, &key) else {
                    notes.push(format!("{key}: {b} and {a} share no seed or no items"));
                    continue;
                };
                if let Some(d) = kept(result, &key, notes) {
                    self.differences.insert((li, fi, ci, mi), d);
                }
            }
        }
    }
}

/// The tables of one setting's runs (sorted by seed) on the chosen items.
fn setting_tables(
    runs: &[&crate::data::RunData],
    user: &str,
    retention: &[RetentionMeasure],
    select: &Selector,
) -> SettingTables {
    let personal = Selector {
        drop_seen: false,
        ..*select
    };
    SettingTables {
        style: Table::of(runs, &format!("answer/{user}/style"), &personal),
        accuracy: Table::of(runs, &format!("pref/{user}/margin"), &personal)
            .map(|t| t.map(tie_half_accuracy)),
        retention: retention
            .iter()
            .map(|r| Table::of(runs, &r.metric.replace("<user>", user), select))
            .collect(),
    }
}

/// The bootstrap, or None with a note saying why not.
fn kept(
    result: Result<Bootstrap, StatsError>,
    key: &str,
    notes: &mut Vec<String>,
) -> Option<Bootstrap> {
    result.map_err(|e| notes.push(format!("{key}: {e}"))).ok()
}
