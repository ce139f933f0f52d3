//! The study's report: `<dir>/report.md` with its plots (and, for the full study,
//! `docs/study.md` and `docs/study/*.png`), written from the cells' run directories.
//!
//! Every change is from the model before training (each run's step-0 evaluation) to the end of
//! the run. A setting's change is the mean over its seeds; its first interval is a paired
//! bootstrap over the evaluation's items (seed-averaged item changes), its second Student's t
//! over the seeds' means. Settings are compared with DPO item by item (they are evaluated on
//! the same items) and seed by seed (the same data order). The verdict is written from those
//! intervals by the rules in [`verdict`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::intervals::Interval;
use crate::plan::{Cell, Grid, Plan};
use crate::plots::{self, Curve, Point, Series};
use crate::results::{self, Pooled, RunItems, difference, pool, slope_interval};

mod verdict;

/// Problems writing the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Read(String),
    #[error("{path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("no finished run of the main grid under {0}: run `cargo xtask study` first")]
    Empty(String),
}

/// The personalisation and retention columns: (metric, heading, scale for display, unit).
/// `pref/<user>/…` names the trained user; `pref/others/accuracy` the other users' items
/// together.
const COLUMNS: [(&str, &str, f64, &str); 7] = [
    (
        "pref/<user>/accuracy",
        "trained user: held-out accuracy",
        100.0,
        "points",
    ),
    (
        "pref/<user>/margin",
        "trained user: held-out margin",
        1.0,
        "nats",
    ),
    ("knowledge/country_facts", "country probe", 100.0, "points"),
    (
        "knowledge/facts_logp",
        "qa_wikidata log-prob / token",
        1.0,
        "nats",
    ),
    (
        "anchor/drift",
        "drift of the reference's answers",
        1.0,
        "nats",
    ),
    ("kl/heldout", "KL on held-out base responses", 1.0, "nats"),
    (
        "pref/others/accuracy",
        "other users: held-out accuracy",
        100.0,
        "points",
    ),
];

const PERSONALISATION: &str = "pref/<user>/accuracy";
const RETENTION: &str = "knowledge/country_facts";
const SECOND_RETENTION: &str = "knowledge/facts_logp";

/// A cell with its evaluations (None: not run or not finished).
struct Loaded<'a> {
    cell: &'a Cell,
    items: Option<RunItems>,
}

impl Loaded<'_> {
    /// The per-item changes of `metric`, with the placeholders resolved for this cell's user.
    fn changes(&self, metric: &str) -> Option<Vec<f64>> {
        let items = self.items.as_ref()?;
        if metric == "pref/others/accuracy" {
            let mut all = Vec::new();
            let others: Vec<String> = items
                .evaluations
                .first()?
                .1
                .keys()
                .filter(|k| k.starts_with("pref/") && k.ends_with("/accuracy"))
                .filter(|k| **k != format!("pref/{}/accuracy", self.cell.user))
                .cloned()
                .collect();
            for name in others {
                all.extend(items.item_changes(&name)?);
            }
            return (!all.is_empty()).then_some(all);
        }
        items.item_changes(&metric.replace("<user>", &self.cell.user))
    }
}

/// Writes the report of `plan`'s runs; `docs` also writes docs/study.md and its images.
/// Returns the files written.
pub fn write_report(root: &Path, plan: &Plan, docs: bool) -> Result<Vec<PathBuf>, ReportError> {
    let out = root.join(&plan.dir);
    let loaded: Vec<Loaded> = plan
        .cells
        .iter()
        .map(|cell| {
            let dir = root.join(&cell.dir);
            let finished = crate::grid::is_finished(&dir);
            let items = if finished {
                Some(RunItems::read(&dir).map_err(ReportError::Read)?)
            } else {
                None
            };
            Ok(Loaded { cell, items })
        })
        .collect::<Result<_, ReportError>>()?;
    if !loaded
        .iter()
        .any(|l| l.cell.grid == Grid::Main && l.items.is_some())
    {
        return Err(ReportError::Empty(out.display().to_string()));
    }
    let study = Study::new(plan, &loaded);
    let mut written = Vec::new();
    let images = [
        ("frontier.png", study.frontier_plot()),
        ("curves.png", study.curves_plot()),
        ("heterogeneity.png", study.heterogeneity_plot()),
    ];
    let mut drawn = Vec::new();
    let mut notes = Vec::new();
    for (name, figure) in &images {
        let file = out.join(name);
        if figure.is_empty() {
            continue;
        }
        match figure.draw(&file) {
            Ok(()) => {
                written.push(file);
                drawn.push(*name);
            }
            Err(e) => notes.push(format!("{name} not drawn: {e}")),
        }
    }
    let markdown = study.markdown("", &drawn, &notes);
    let report = out.join("report.md");
    write(&report, &markdown)?;
    written.push(report);
    if docs {
        let image_dir = root.join("docs/study");
        std::fs::create_dir_all(&image_dir).map_err(|source| ReportError::Write {
            path: image_dir.display().to_string(),
            source,
        })?;
        for name in &drawn {
            let to = image_dir.join(name);
            std::fs::copy(out.join(name), &to).map_err(|source| ReportError::Write {
                path: to.display().to_string(),
                source,
            })?;
            written.push(to);
        }
        let page = root.join("docs/study.md");
        write(&page, &study.markdown("study/", &drawn, &notes))?;
        written.push(page);
    }
    Ok(written)
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

/// A setting's pooled result on every column.
struct SettingResult {
    name: String,
    objective: String,
    seeds: usize,
    columns: Vec<Option<Pooled>>,
    /// Versus DPO (None for DPO itself, or without a common seed).
    versus_dpo: Option<VersusDpo>,
}

/// A setting against DPO: (personalisation, retention, second retention) differences.
type VersusDpo = (Pooled, Pooled, Option<Pooled>);

/// A heterogeneity setting's runs on one user.
struct OnUser {
    personalisation: Option<Pooled>,
    retention: Option<Pooled>,
    /// The retention's per-item changes, averaged over seeds (for the slope's interval).
    retention_items: Vec<f64>,
}

/// One user of the heterogeneity grid.
struct UserResult {
    user: String,
    /// −(the reference's mean margin on the user's held-out pairs), with its interval.
    heterogeneity: Interval,
    /// Per heterogeneity setting: (personalisation, retention) of its runs on this user.
    by_setting: BTreeMap<String, OnUser>,
}

struct Study<'a> {
    plan: &'a Plan,
    loaded: &'a [Loaded<'a>],
    settings: Vec<SettingResult>,
    users: Vec<UserResult>,
    /// Per heterogeneity setting: the slope of the retention change on heterogeneity.
    slopes: BTreeMap<String, Interval>,
}

/// The finished runs of `setting` on `user` (of `grid` only, if given), in the plan's order.
fn finished_runs<'l>(
    loaded: &'l [Loaded<'l>],
    setting: &str,
    user: &str,
    grid: Option<Grid>,
) -> Vec<&'l Loaded<'l>> {
    loaded
        .iter()
        .filter(|l| l.cell.setting == setting && l.cell.user == user)
        .filter(|l| grid.is_none_or(|g| l.cell.grid == g))
        .filter(|l| l.items.is_some())
        .collect()
}

/// Each run's per-item changes of `metric` (runs without it left out).
fn changes(runs: &[&Loaded], metric: &str) -> Vec<Vec<f64>> {
    runs.iter().filter_map(|l| l.changes(metric)).collect()
}

impl<'a> Study<'a> {
    fn new(plan: &'a Plan, loaded: &'a [Loaded<'a>]) -> Study<'a> {
        let settings = Self::setting_results(plan, loaded);
        let users = Self::user_results(plan, loaded);
        let slopes = Self::heterogeneity_slopes(plan, &users);
        Study {
            plan,
            loaded,
            settings,
            users,
            slopes,
        }
    }

    /// Every setting of the main grid, pooled on every column and compared with DPO.
    fn setting_results(plan: &Plan, loaded: &[Loaded]) -> Vec<SettingResult> {
        let dpo_runs = finished_runs(loaded, "dpo", &plan.user, Some(Grid::Main));
        let mut settings = Vec::new();
        for (name, objective) in &plan.settings {
            let these = finished_runs(loaded, name, &plan.user, Some(Grid::Main));
            let columns = COLUMNS
                .iter()
                .enumerate()
                .map(|(i, (metric, ..))| pool(&changes(&these, metric), i as u64))
                .collect();
            let versus_dpo = if name == "dpo" {
                None
            } else {
                Self::versus_dpo(&dpo_runs, &these)
            };
            settings.push(SettingResult {
                name: name.clone(),
                objective: objective.clone(),
                seeds: these.len(),
                columns,
                versus_dpo,
            });
        }
        settings
    }

    /// `these` runs minus DPO's, on the runs with a common seed: the (personalisation,
    /// retention, second retention) differences; None without a common seed or without
    /// either of the first two.
    fn versus_dpo(dpo_runs: &[&Loaded], these: &[&Loaded]) -> Option<VersusDpo> {
        // Runs of both settings with the same seed, for paired differences.
        let paired: Vec<(&Loaded, &Loaded)> = these
            .iter()
            .filter_map(|l| {
                dpo_runs
                    .iter()
                    .find(|d| d.cell.seed == l.cell.seed)
                    .map(|d| (*d, *l))
            })
            .collect();
        if paired.is_empty() {
            return None;
        }
        let versus = |metric: &str, seed: u64| {
            let a: Vec<&Loaded> = paired.iter().map(|p| p.0).collect();
            let b: Vec<&Loaded> = paired.iter().map(|p| p.1).collect();
            difference(&changes(&a, metric), &changes(&b, metric), seed)
        };
        match (versus(PERSONALISATION, 11), versus(RETENTION, 12)) {
            (Some(p), Some(r)) => Some((p, r, versus(SECOND_RETENTION, 13))),
            _ => None,
        }
    }

    /// The trained user and the heterogeneity grid's users, in order of first appearance,
    /// each with its heterogeneity and its runs per heterogeneity setting; a user without
    /// the reference's margin is left out.
    fn user_results(plan: &Plan, loaded: &[Loaded]) -> Vec<UserResult> {
        let mut users_list = vec![plan.user.clone()];
        for l in loaded.iter().filter(|l| l.cell.grid == Grid::Heterogeneity) {
            if !users_list.contains(&l.cell.user) {
                users_list.push(l.cell.user.clone());
            }
        }
        let het_seeds: Vec<u64> = loaded
            .iter()
            .filter(|l| l.cell.grid == Grid::Heterogeneity)
            .map(|l| l.cell.seed)
            .collect();
        let mut users = Vec::new();
        for user in &users_list {
            let Some(heterogeneity) = Self::heterogeneity_of(loaded, user) else {
                continue;
            };
            let mut by_setting = BTreeMap::new();
            for setting in &plan.heterogeneity_settings {
                by_setting.insert(
                    setting.clone(),
                    Self::on_user(loaded, setting, user, &het_seeds),
                );
            }
            users.push(UserResult {
                user: user.clone(),
                heterogeneity,
                by_setting,
            });
        }
        users
    }

    /// `user`'s heterogeneity: −(the reference's mean margin on the user's held-out pairs,
    /// read at step 0 of any finished run on the user), with a bootstrap interval over the
    /// pairs; None without such a run or margin.
    fn heterogeneity_of(loaded: &[Loaded], user: &str) -> Option<Interval> {
        let any = loaded
            .iter()
            .find(|l| l.cell.user == *user && l.cell.grid != Grid::Reference && l.items.is_some());
        let reference = any.and_then(|l| {
            l.items
                .as_ref()?
                .at(0, &format!("pref/{user}/reference_margin"))
                .map(<[f64]>::to_vec)
        })?;
        let negated: Vec<f64> = reference.iter().map(|m| -m).collect();
        let zeros = vec![0.0; negated.len()];
        crate::paired_bootstrap(&zeros, &negated, results::RESAMPLES, 0.95, 21).ok()
    }

    /// `setting`'s runs on `user`, pooled: its personalisation, its retention and the
    /// retention's per-item changes averaged over seeds.
    fn on_user(loaded: &[Loaded], setting: &str, user: &str, het_seeds: &[u64]) -> OnUser {
        // The heterogeneity grid's seeds on every user, the trained user included.
        let these: Vec<&Loaded> = finished_runs(loaded, setting, user, None)
            .into_iter()
            .filter(|l| het_seeds.is_empty() || het_seeds.contains(&l.cell.seed))
            .collect();
        let retention = changes(&these, RETENTION);
        let pooled_items = results::per_item_mean(&retention)
            .map(|(items, _)| items)
            .unwrap_or_default();
        OnUser {
            personalisation: pool(&changes(&these, PERSONALISATION), 31),
            retention: pool(&retention, 32),
            retention_items: pooled_items,
        }
    }

    /// Per heterogeneity setting on two or more users: the slope of its retention change on
    /// the users' heterogeneity, with its interval (items resampled within each user).
    fn heterogeneity_slopes(plan: &Plan, users: &[UserResult]) -> BTreeMap<String, Interval> {
        let mut slopes = BTreeMap::new();
        for setting in &plan.heterogeneity_settings {
            let points: Vec<(f64, Vec<f64>)> = users
                .iter()
                .filter_map(|u| {
                    let items = &u.by_setting.get(setting)?.retention_items;
                    (!items.is_empty()).then(|| (u.heterogeneity.estimate, items.clone()))
                })
                .collect();
            if points.len() >= 2 {
                let x: Vec<f64> = points.iter().map(|p| p.0).collect();
                let groups: Vec<Vec<f64>> = points.into_iter().map(|p| p.1).collect();
                if let Some(s) = slope_interval(&x, &groups, 41) {
                    slopes.insert(setting.clone(), s);
                }
            }
        }
        slopes
    }

    fn setting(&self, name: &str) -> Option<&SettingResult> {
        self.settings.iter().find(|s| s.name == name)
    }

    fn column(name: &str) -> usize {
        COLUMNS.iter().position(|c| c.0 == name).unwrap_or(0)
    }

    fn frontier_plot(&self) -> plots::Figure {
        let point = |s: &SettingResult, metric: &str| -> Option<Point> {
            let x = s.columns[Self::column(PERSONALISATION)]?;
            let y = s.columns[Self::column(metric)]?;
            Some(Point {
                label: s.name.clone(),
                group: s.objective.clone(),
                x: scale(x.items, 100.0),
                y: scale(y.items, COLUMNS[Self::column(metric)].2),
            })
        };
        plots::Figure::Scatter {
            title: format!(
                "Personalisation against retention (user {}, {} seed(s))",
                self.plan.user,
                self.plan.seeds.len()
            ),
            x_label: "trained user's held-out accuracy, change (points)".into(),
            panels: vec![
                (
                    "country probe, change (points)".into(),
                    self.settings
                        .iter()
                        .filter_map(|s| point(s, RETENTION))
                        .collect(),
                ),
                (
                    "qa_wikidata log-prob per token, change (nats)".into(),
                    self.settings
                        .iter()
                        .filter_map(|s| point(s, SECOND_RETENTION))
                        .collect(),
                ),
            ],
        }
    }

    fn curves_plot(&self) -> plots::Figure {
        let first_seed = self.plan.seeds.first().copied().unwrap_or(0);
        let curves = |metric: &str, scale: f64| -> Vec<Series> {
            self.plan
                .settings
                .iter()
                .filter_map(|(name, objective)| {
                    let run = self.loaded.iter().find(|l| {
                        l.cell.grid == Grid::Main
                            && l.cell.setting == *name
                            && l.cell.seed == first_seed
                    })?;
                    let metric = metric.replace("<user>", &self.plan.user);
                    let points: Vec<(f64, f64)> = run
                        .items
                        .as_ref()?
                        .curve(&metric)
                        .into_iter()
                        .map(|(s, v)| (s as f64, v * scale))
                        .collect();
                    (points.len() >= 2).then(|| Series {
                        label: name.clone(),
                        group: objective.clone(),
                        points,
                    })
                })
                .collect()
        };
        plots::Figure::Lines(Curve {
            title: format!("Over training (user {}, seed {first_seed})", self.plan.user),
            x_label: "step".into(),
            panels: vec![
                ("country probe (%)".into(), curves(RETENTION, 100.0)),
                (
                    "trained user: held-out accuracy (%)".into(),
                    curves(PERSONALISATION, 100.0),
                ),
            ],
        })
    }

    fn heterogeneity_plot(&self) -> plots::Figure {
        let series = self
            .plan
            .heterogeneity_settings
            .iter()
            .map(|setting| {
                let objective = self
                    .plan
                    .settings
                    .iter()
                    .find(|(n, _)| n == setting)
                    .map(|(_, o)| o.clone())
                    .unwrap_or_default();
                let mut points: Vec<Point> = self
                    .users
                    .iter()
                    .filter_map(|u| {
                        let retention = u.by_setting.get(setting)?.retention;
                        Some(Point {
                            label: u.user.clone(),
                            group: objective.clone(),
                            x: Interval {
                                estimate: u.heterogeneity.estimate,
                                low: u.heterogeneity.low,
                                high: u.heterogeneity.high,
                            },
                            y: scale(retention?.items, 100.0),
                        })
                    })
                    .collect();
                points.sort_by(|a, b| a.x.estimate.total_cmp(&b.x.estimate));
                (setting.clone(), points)
            })
            .collect();
        plots::Figure::Connected {
            title: "Forgetting against heterogeneity".into(),
            x_label: "heterogeneity: −(reference's mean margin on the user's pairs), nats".into(),
            y_label: "country probe, change (points)".into(),
            series,
        }
    }

    /// The whole report; `images` is the folder of the PNGs relative to the page.
    fn markdown(&self, images: &str, drawn: &[&str], notes: &[String]) -> String {
        let mut m = String::new();
        let plan = self.plan;
        let _ = writeln!(
            m,
            "# The study: does BAPO personalise without forgetting?\n"
        );
        let _ = writeln!(
            m,
            "Written by `cargo xtask study{}` from the runs in `{}` (configs/study.toml). \
             Every number is a change from the model before training to the end of the run: \
             the mean over seeds, then **[a 95% paired bootstrap interval over the \
             evaluation's items]** and, with two or more seeds, **(a 95% t-interval over \
             seeds)**. `*` marks an item interval that excludes 0. How the regime was chosen, \
             what the probes are and what was tried before: docs/study-design.md.\n",
            if plan.dir.ends_with("study-quick") {
                " --quick"
            } else {
                ""
            },
            plan.dir.display()
        );
        self.write_setup(&mut m);
        self.write_probes(&mut m);
        self.write_main_table(&mut m);
        self.write_probe_kinds(&mut m);
        self.write_versus_dpo(&mut m);
        if drawn.contains(&"frontier.png") {
            let _ = writeln!(
                m,
                "![Personalisation against retention]({images}frontier.png)\n\n\
                 One point per setting, error bars the item intervals; colours by objective.\n"
            );
        }
        if drawn.contains(&"curves.png") {
            let _ = writeln!(
                m,
                "![The probes over training]({images}curves.png)\n\n\
                 The first seed's runs, evaluated every {} steps.\n",
                self.curve_interval()
            );
        }
        self.write_heterogeneity(&mut m);
        if drawn.contains(&"heterogeneity.png") {
            let _ = writeln!(
                m,
                "![Forgetting against heterogeneity]({images}heterogeneity.png)\n"
            );
        }
        let _ = writeln!(m, "## Verdict\n");
        for line in self.verdict() {
            let _ = writeln!(m, "- {line}");
        }
        let _ = writeln!(m);
        self.write_missing(&mut m, notes);
        m
    }

    fn write_setup(&self, m: &mut String) {
        let plan = self.plan;
        let main: Vec<&Cell> = plan.cells.iter().filter(|c| c.grid == Grid::Main).collect();
        let _ = writeln!(m, "## Setup\n");
        let _ = writeln!(
            m,
            "- Base config `{}` on backend `{}`; trained user **{}**; seeds {:?}; {} runs in the main grid, {} in the heterogeneity grid.",
            plan.base.display(),
            plan.backend,
            plan.user,
            plan.seeds,
            main.len(),
            plan.cells
                .iter()
                .filter(|c| c.grid == Grid::Heterogeneity)
                .count()
        );
        if let Some(cell) = main.first() {
            let shared: Vec<&String> = cell
                .overrides
                .iter()
                .filter(|o| {
                    ![
                        "objective=",
                        "data.user=",
                        "training.seed=",
                        "output.dir=",
                        "eval.interval=",
                        "model.references=",
                    ]
                    .iter()
                    .any(|p| o.starts_with(p))
                })
                .collect();
            let _ = writeln!(
                m,
                "- Overrides of every run: `{}`.",
                shared
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("`, `")
            );
        }
        for (name, objective) in &plan.settings {
            if let Some(cell) = main.iter().find(|c| c.setting == *name) {
                let o = cell
                    .overrides
                    .iter()
                    .find(|o| o.starts_with("objective="))
                    .map(String::as_str)
                    .unwrap_or("");
                let _ = writeln!(m, "- `{name}` ({objective}): `{o}`");
            }
        }
        for (name, why) in &plan.references {
            let _ = writeln!(m, "- Reference model `{name}`: {why}.");
        }
        let _ = writeln!(m);
    }

    fn write_probes(&self, m: &mut String) {
        let _ = writeln!(m, "## Probes: the model before training\n");
        let _ = writeln!(
            m,
            "The reference's own scores (step 0 of the first run of user {}) with a 95% bootstrap interval over items, next to chance.\n",
            self.plan.user
        );
        let _ = writeln!(
            m,
            "| probe | items | reference | chance |\n|---|---:|---:|---:|"
        );
        let Some(first) = self
            .loaded
            .iter()
            .find(|l| l.cell.grid == Grid::Main && l.items.is_some())
            .and_then(|l| l.items.as_ref())
        else {
            return;
        };
        for (metric, chance) in [
            ("knowledge/country_facts", "0.250"),
            ("knowledge/country_capital", "0.250"),
            ("knowledge/country_subregion", "0.250"),
            ("knowledge/country_border", "0.250"),
            ("knowledge/facts_logp", "—"),
        ] {
            if let Some(items) = first.at(0, metric) {
                // The interval of a mean: a "change" from zero, resampling the items.
                let zeros = vec![0.0; items.len()];
                let score =
                    match crate::paired_bootstrap(&zeros, items, results::RESAMPLES, 0.95, 71) {
                        Ok(i) => format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.low, i.high),
                        Err(_) => format!("{:.3}", results::mean(items)),
                    };
                let _ = writeln!(m, "| `{metric}` | {} | {score} | {chance} |", items.len());
            }
        }
        let _ = writeln!(m);
    }

    fn write_main_table(&self, m: &mut String) {
        let user = &self.plan.user;
        for (heading, columns) in [
            (
                format!("## Personalisation, user {user}"),
                &[0usize, 1, 6][..],
            ),
            (format!("## Retention, user {user}"), &[2usize, 3, 4, 5][..]),
        ] {
            let _ = writeln!(m, "{heading}\n");
            let _ = writeln!(
                m,
                "| setting | seeds | {} |\n|---|---:|{}",
                columns
                    .iter()
                    .map(|&c| format!("{} ({})", COLUMNS[c].1, COLUMNS[c].3))
                    .collect::<Vec<_>>()
                    .join(" | "),
                "---|".repeat(columns.len())
            );
            for s in &self.settings {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|&c| {
                        s.columns[c]
                            .map(|p| show(&p, COLUMNS[c].2))
                            .unwrap_or("—".into())
                    })
                    .collect();
                let _ = writeln!(m, "| `{}` | {} | {} |", s.name, s.seeds, cells.join(" | "));
            }
            let _ = writeln!(m);
        }
    }

    fn write_probe_kinds(&self, m: &mut String) {
        const KINDS: [&str; 3] = ["capital", "subregion", "border"];
        let rows: Vec<(String, Vec<Option<Pooled>>)> = self
            .settings
            .iter()
            .map(|s| {
                let runs = self.runs_of(&s.name);
                let pooled = KINDS
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| {
                        let metric = format!("knowledge/country_{kind}");
                        let changes: Vec<Vec<f64>> =
                            runs.iter().filter_map(|l| l.changes(&metric)).collect();
                        pool(&changes, 60 + i as u64)
                    })
                    .collect();
                (s.name.clone(), pooled)
            })
            .collect();
        if rows.iter().all(|(_, p)| p.iter().all(Option::is_none)) {
            return;
        }
        let _ = writeln!(m, "The country probe by kind of question (points):\n");
        let _ = writeln!(
            m,
            "| setting | capital | subregion | border |\n|---|---|---|---|"
        );
        for (name, pooled) in rows {
            let cells: Vec<String> = pooled
                .iter()
                .map(|p| p.map(|p| show(&p, 100.0)).unwrap_or("—".into()))
                .collect();
            let _ = writeln!(m, "| `{name}` | {} |", cells.join(" | "));
        }
        let _ = writeln!(m);
    }

    fn write_versus_dpo(&self, m: &mut String) {
        let _ = writeln!(m, "## Against DPO, item by item and seed by seed\n");
        let _ = writeln!(
            m,
            "Each setting's change minus DPO's, on the same items and seeds. A setting is \
             *matched* with DPO when its personalisation difference's item interval reaches \
             0 or above (it personalises no measurably less).\n"
        );
        let _ = writeln!(
            m,
            "| setting | personalisation − DPO (points) | matched | country probe − DPO (points) | qa_wikidata − DPO (nats/token) |\n|---|---|---|---|---|"
        );
        for s in &self.settings {
            let Some((p, r, f)) = &s.versus_dpo else {
                continue;
            };
            let _ = writeln!(
                m,
                "| `{}` | {} | {} | {} | {} |",
                s.name,
                show(p, 100.0),
                if matched(p) { "yes" } else { "no" },
                show(r, 100.0),
                f.map(|f| show(&f, 1.0)).unwrap_or("—".into())
            );
        }
        let _ = writeln!(m);
    }

    fn write_heterogeneity(&self, m: &mut String) {
        let _ = writeln!(m, "## Forgetting against heterogeneity\n");
        let _ = writeln!(
            m,
            "A user's heterogeneity is how far their choices are from what the reference \
             prefers: minus the reference's mean log-prob margin `log π_ref(chosen) − log \
             π_ref(rejected)` on the user's held-out pairs (nats, summed over tokens as DPO's \
             implicit reward is; `pref/<user>/reference_margin`). Each cell: change of the \
             country probe (points) [item interval], and of the trained user's held-out \
             accuracy in parentheses.\n"
        );
        let settings = &self.plan.heterogeneity_settings;
        let _ = writeln!(
            m,
            "| user | heterogeneity (nats) | {} |\n|---|---|{}",
            settings
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(settings.len())
        );
        let mut users: Vec<&UserResult> = self.users.iter().collect();
        users.sort_by(|a, b| {
            a.heterogeneity
                .estimate
                .total_cmp(&b.heterogeneity.estimate)
        });
        for u in users {
            let cells: Vec<String> = settings
                .iter()
                .map(|s| match u.by_setting.get(s) {
                    Some(OnUser {
                        personalisation: p,
                        retention: Some(r),
                        ..
                    }) => format!(
                        "{} ({})",
                        show_items(&r.items, 100.0),
                        p.map(|p| format!("{:+.0}", p.items.estimate * 100.0))
                            .unwrap_or("—".into())
                    ),
                    _ => "—".into(),
                })
                .collect();
            let _ = writeln!(
                m,
                "| {} | {:+.1} [{:+.1}, {:+.1}] | {} |",
                u.user,
                u.heterogeneity.estimate,
                u.heterogeneity.low,
                u.heterogeneity.high,
                cells.join(" | ")
            );
        }
        let _ = writeln!(
            m,
            "\nSlope of the country probe's change on heterogeneity (points per nat; interval: \
             items resampled within each user):\n"
        );
        for s in settings {
            if let Some(slope) = self.slopes.get(s) {
                let _ = writeln!(m, "- `{s}`: {}", show_items(slope, 100.0));
            }
        }
        let _ = writeln!(m);
    }

    fn write_missing(&self, m: &mut String, notes: &[String]) {
        let missing: Vec<String> = self
            .loaded
            .iter()
            .filter(|l| l.items.is_none())
            .map(|l| format!("`{}`", l.cell.dir.display()))
            .collect();
        if missing.is_empty() && notes.is_empty() {
            return;
        }
        let _ = writeln!(m, "## Not in this report\n");
        if !missing.is_empty() {
            let _ = writeln!(m, "Runs not finished: {}.\n", missing.join(", "));
        }
        for n in notes {
            let _ = writeln!(m, "- {n}");
        }
    }

    /// The evaluation interval of the first seed's runs.
    fn curve_interval(&self) -> String {
        self.plan
            .cells
            .iter()
            .flat_map(|c| c.overrides.iter())
            .find_map(|o| o.strip_prefix("eval.interval="))
            .unwrap_or("?")
            .to_string()
    }

    /// The main grid's finished runs of `setting`, by seed.
    fn runs_of(&self, setting: &str) -> Vec<&Loaded<'a>> {
        let mut runs: Vec<&Loaded> = self
            .loaded
            .iter()
            .filter(|l| l.cell.grid == Grid::Main && l.cell.setting == setting)
            .filter(|l| l.items.is_some())
            .collect();
        runs.sort_by_key(|l| l.cell.seed);
        runs
    }

    /// `metric` of setting `b` minus setting `a`, on their runs with a common seed.
    fn between(&self, a: &str, b: &str, metric: &str, seed: u64) -> Option<Pooled> {
        let (runs_a, runs_b) = (self.runs_of(a), self.runs_of(b));
        let pairs: Vec<(&Loaded, &Loaded)> = runs_a
            .iter()
            .filter_map(|x| {
                runs_b
                    .iter()
                    .find(|y| y.cell.seed == x.cell.seed)
                    .map(|y| (*x, *y))
            })
            .collect();
        let a: Vec<Vec<f64>> = pairs.iter().filter_map(|p| p.0.changes(metric)).collect();
        let b: Vec<Vec<f64>> = pairs.iter().filter_map(|p| p.1.changes(metric)).collect();
        difference(&a, &b, seed)
    }
}

/// Matched with DPO: the personalisation difference's item interval reaches 0 or above.
fn matched(personalisation: &Pooled) -> bool {
    personalisation.items.high >= 0.0
}

fn scale(i: Interval, factor: f64) -> Interval {
    Interval {
        estimate: i.estimate * factor,
        low: i.low * factor,
        high: i.high * factor,
    }
}

/// `+1.2 [−0.3, +2.8] * (−1.0, +3.4)` (estimate, item interval, seed interval).
fn show(p: &Pooled, factor: f64) -> String {
    let mut text = show_items(&p.items, factor);
    if let Some(s) = p.seeds {
        let s = scale(s, factor);
        let _ = write!(text, " ({}, {})", number(s.low), number(s.high));
    }
    text
}

fn show_items(i: &Interval, factor: f64) -> String {
    let i = scale(*i, factor);
    format!(
        "{} [{}, {}]{}",
        number(i.estimate),
        number(i.low),
        number(i.high),
        if i.excludes_zero() { " *" } else { "" }
    )
}

/// Signed, with precision by size.
fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:+.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:+.1}")
    } else {
        format!("{v:+.2}")
    }
}
