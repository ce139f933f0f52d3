//! The study's grid: `configs/study.toml` read and expanded into cells, each one ordinary run of
//! `bapo train` (a base run config plus `--set` overrides) in its own run directory.
//!
//! The file names the base run config, the overrides every run shares, the objective settings
//! of the main grid (trained on one user at each learning rate, several seeds, each run
//! evaluated along its training), the users and settings of the heterogeneity grid, the probe
//! check (the model before training on every probe), models trained before the grid for use as
//! further references, the objectives left untested and why, the rules of the report
//! ([`Rules`], declared before the runs), figures read from each run's own logs
//! ([`LogFigure`]), and a `[quick]` table that shrinks all of it. The heterogeneity grid, the
//! probe check and `[quick]` are optional: a study of a few settings on one user (e.g.
//! `configs/anchor-forms.toml`) leaves them out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bapo_rundir::Pick;
use bapo_rundir::files::{EVAL_FILE, METRICS_FILE};
use serde::{Deserialize, Deserializer};

/// A study config that cannot be used: the message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: `{key}`: {message}")]
    Key {
        path: String,
        key: String,
        message: String,
    },
}

/// `configs/study.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// The report's title.
    #[serde(default = "default_title")]
    pub title: String,
    /// The run config every cell starts from (relative to the workspace root).
    pub base: PathBuf,
    /// Where the cells' run directories go (relative to the workspace root).
    pub dir: PathBuf,
    /// Where the full grid's results are committed (relative to the workspace root): its data
    /// file `<committed>/data.json`, its report `<committed>.md` and its figures in
    /// `<committed>/`. Absent: the results stay in `dir`.
    #[serde(default)]
    pub committed: Option<PathBuf>,
    /// `training.backend` of every run.
    pub backend: String,
    /// The trained user of the main grid.
    pub user: String,
    /// The main grid's learning rates: every setting runs at each.
    pub learning_rates: Vec<f64>,
    /// The seeds of the primary settings.
    pub seeds: Vec<u64>,
    /// The seeds of the secondary settings.
    #[serde(default)]
    pub secondary_seeds: Vec<u64>,
    /// The main grid's runs evaluate every this many steps (their curves); 0: only at the
    /// start and the end.
    #[serde(default)]
    pub curve_interval: usize,
    /// `--set` overrides of every run (dotted keys, TOML values).
    #[serde(default)]
    pub set: toml::Table,
    pub settings: Vec<Setting>,
    #[serde(default)]
    pub references: Vec<ReferenceModel>,
    /// Objectives not run, with the reason (printed in the report).
    #[serde(default)]
    pub not_tested: Vec<NotTested>,
    /// The same settings trained on other users (none when absent).
    #[serde(default)]
    pub heterogeneity: Option<Heterogeneity>,
    /// The probe check: the model before training on every probe, once (none when absent).
    #[serde(default)]
    pub probes: Option<Probes>,
    pub rules: Rules,
    /// Figures read from every run's own logs, shown per setting.
    #[serde(default)]
    pub log_figures: Vec<LogFigure>,
    /// `--quick`'s smaller grid (absent: the study has none).
    #[serde(default)]
    pub quick: Option<Quick>,
}

/// `[[log_figures]]`: one number read from each run's own logs (e.g. the first step's gradient
/// norm in `metrics.jsonl`), shown per setting as the mean over seeds and each seed's value. A
/// description of the runs: it has no interval and the verdict draws nothing from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFigure {
    /// Its name in the report.
    pub name: String,
    /// The log it is read from.
    pub log: LogFile,
    /// The key of the log's lines.
    pub key: String,
    /// Which line: `"last"`, `"max"` or `"step N"`.
    #[serde(deserialize_with = "pick")]
    pub at: Pick,
}

/// A log of the run directory that figures are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFile {
    /// `metrics.jsonl`: one line per training step.
    Metrics,
    /// `eval.jsonl`: one line per evaluation (the aggregates).
    Eval,
}

impl LogFile {
    pub fn file_name(self) -> &'static str {
        match self {
            LogFile::Metrics => METRICS_FILE,
            LogFile::Eval => EVAL_FILE,
        }
    }
}

fn pick<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Pick, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

fn default_title() -> String {
    "The study: does BAPO personalise without forgetting?".into()
}

/// An objective the study does not run, and why.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotTested {
    pub objective: String,
    pub why: String,
}

/// `[probes]`: one short run (one step at learning rate 0) whose one evaluation scores the
/// model before training on every probe (BIG-bench's sets in full).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probes {
    /// Overrides after the shared `set`.
    #[serde(default)]
    pub set: toml::Table,
}

/// `[rules]`: how the report turns runs into claims, declared before the runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Personalisation levels at which objectives are compared, each a share of the headroom
    /// the reference leaves on the trained user's generated-answer style score.
    pub levels: Vec<f64>,
    /// The retention measures, every one shown for every comparison.
    pub retention: Vec<RetentionMeasure>,
    /// Two-sided interval level.
    pub level: f64,
    /// Family-wise error rate of the verdict's claims (Holm's step-down).
    pub alpha: f64,
    /// Bootstrap resamples of every interval.
    pub resamples: usize,
    /// Share of the clusters (countries) in the confirmation half.
    pub confirmation_share: f64,
}

/// A retention measure and its equivalence margin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionMeasure {
    /// The metric (`<user>` is the trained user).
    pub metric: String,
    /// Its name in the report.
    pub name: String,
    /// Display scale (100: points).
    pub scale: f64,
    pub unit: String,
    /// A change (or difference) within ± this many displayed units counts as none.
    pub margin: f64,
    /// Which way is better: `higher` (accuracies, log-probs) or `lower` (a KL).
    pub better: Better,
}

/// Which way a retention measure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

impl RetentionMeasure {
    /// Whether more of this measure is better.
    pub fn higher_is_better(&self) -> bool {
        self.better == Better::Higher
    }
}

/// One objective setting of the grid.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// A short name, used in run directory names and the report (letters, digits, `-`, `.`).
    pub name: String,
    /// The whole `[objective]` table of the runs.
    pub objective: toml::Table,
    /// `primary` (the verdict compares it; `seeds`) or `secondary` (more of the frontier;
    /// `secondary_seeds`).
    #[serde(default)]
    pub role: Role,
    /// Further reference models (names of `[[references]]`), in order: `model.references`.
    #[serde(default)]
    pub references: Vec<String>,
}

/// Whether the verdict compares a setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Primary,
    Secondary,
}

/// A model trained before the grid and exported, for use as a further reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceModel {
    pub name: String,
    /// Its training run: the base config with these overrides (the shared `set` is *not*
    /// applied); it must export (`checkpoint.export = true`).
    #[serde(default)]
    pub set: toml::Table,
    /// Why this model (printed in the report).
    pub why: String,
}

/// The heterogeneity grid: the same settings trained on other users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heterogeneity {
    pub users: Vec<String>,
    pub settings: Vec<String>,
    pub seeds: Vec<u64>,
    pub learning_rate: f64,
    /// Overrides after the shared `set`.
    #[serde(default)]
    pub set: toml::Table,
}

/// `--quick`: what replaces the full grid's values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quick {
    pub dir: PathBuf,
    pub seeds: Vec<u64>,
    pub learning_rates: Vec<f64>,
    pub settings: Vec<String>,
    pub heterogeneity_users: Vec<String>,
    pub heterogeneity_seeds: Vec<u64>,
    #[serde(default)]
    pub curve_interval: usize,
    /// Overrides applied after the shared `set` (e.g. fewer steps).
    #[serde(default)]
    pub set: toml::Table,
    /// Overrides of the probe check applied after `[probes]`'s (e.g. fewer BIG-bench items).
    #[serde(default)]
    pub probes: toml::Table,
}

/// Which grid a cell belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grid {
    /// A model trained before the grid, used as a reference.
    Reference,
    /// The trained user of the main grid, every setting and seed.
    Main,
    /// The heterogeneity grid's users.
    Heterogeneity,
    /// The probe check: the model before training on every probe.
    Probes,
}

/// One run of the study.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub grid: Grid,
    /// The setting's name (a reference model's name for [`Grid::Reference`]).
    pub setting: String,
    /// The objective's registered name (`dpo`, `bapo`, …).
    pub objective: String,
    pub user: String,
    pub seed: u64,
    /// The run's learning rate (0 where the run's own overrides set it).
    pub learning_rate: f64,
    pub role: Role,
    /// The run directory, relative to the workspace root:
    /// `<dir>/<setting>-lr<rate>-<user>-seed<k>`.
    pub dir: PathBuf,
    /// The `--set key=value` overrides, in order, after the base config.
    pub overrides: Vec<String>,
}

/// The expanded grid.
#[derive(Debug, Clone)]
pub struct Plan {
    pub title: String,
    pub base: PathBuf,
    pub dir: PathBuf,
    pub backend: String,
    /// The trained user of the main grid.
    pub user: String,
    pub seeds: Vec<u64>,
    pub learning_rates: Vec<f64>,
    /// Reference models first (other cells read their exports), then the main grid, then the
    /// heterogeneity grid.
    pub cells: Vec<Cell>,
    /// The settings, in the config's order, with their objective names and roles.
    pub settings: Vec<(String, String, Role)>,
    /// Objectives not run, and why.
    pub not_tested: Vec<(String, String)>,
    /// The report's rules.
    pub rules: Rules,
    pub curve_interval: usize,
    /// Each reference model's name and why it was chosen.
    pub references: Vec<(String, String)>,
    /// The settings of the heterogeneity grid, and its users in order.
    pub heterogeneity_settings: Vec<String>,
    pub heterogeneity_users: Vec<String>,
    /// The figures read from each run's logs.
    pub log_figures: Vec<LogFigure>,
}

impl Plan {
    /// Whether the plan has a heterogeneity grid.
    pub fn has_heterogeneity(&self) -> bool {
        !self.heterogeneity_settings.is_empty() && !self.heterogeneity_users.is_empty()
    }

    /// Whether the plan has the probe check.
    pub fn has_probes(&self) -> bool {
        self.cells.iter().any(|c| c.grid == Grid::Probes)
    }
}

impl StudyConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<StudyConfig, PlanError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PlanError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let config: StudyConfig = toml::from_str(&text).map_err(|e| PlanError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        config.check(&shown)?;
        Ok(config)
    }

    /// Every rule of the file, each error naming its key.
    fn check(&self, path: &str) -> Result<(), PlanError> {
        let bad = |key: &str, message: String| PlanError::Key {
            path: path.to_string(),
            key: key.to_string(),
            message,
        };
        self.check_seeds_and_rates().map_err(|(k, m)| bad(&k, m))?;
        self.rules.check().map_err(|(k, m)| bad(&k, m))?;
        self.check_settings().map_err(|(k, m)| bad(&k, m))?;
        self.check_references().map_err(|(k, m)| bad(&k, m))?;
        self.check_log_figures().map_err(|(k, m)| bad(&k, m))?;
        self.check_committed().map_err(|(k, m)| bad(&k, m))?;
        self.check_run_directories().map_err(|(k, m)| bad(&k, m))
    }

    /// Whether the config has a `[quick]` grid.
    pub fn has_quick(&self) -> bool {
        self.quick.is_some()
    }

    /// The committed folder: a relative path down from the workspace root.
    fn check_committed(&self) -> Result<(), (String, String)> {
        let Some(folder) = &self.committed else {
            return Ok(());
        };
        let down = folder
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if folder.as_os_str().is_empty() || !down {
            return Err((
                "committed".into(),
                format!(
                    "{:?}: a folder below the workspace root, e.g. \"docs/study\"",
                    folder.display().to_string()
                ),
            ));
        }
        Ok(())
    }

    /// Log figures: each named once, and not blank.
    fn check_log_figures(&self) -> Result<(), (String, String)> {
        for (i, f) in self.log_figures.iter().enumerate() {
            if f.name.trim().is_empty() || f.key.trim().is_empty() {
                return Err((
                    format!("log_figures[{i}]"),
                    "`name` and `key` must not be blank".into(),
                ));
            }
            if self.log_figures[..i].iter().any(|g| g.name == f.name) {
                return Err((
                    format!("log_figures[{i}].name"),
                    format!("{:?} appears twice", f.name),
                ));
            }
        }
        Ok(())
    }

    /// At least one seed and one learning rate in each grid; rates positive.
    fn check_seeds_and_rates(&self) -> Result<(), (String, String)> {
        if self.seeds.is_empty() {
            return Err(("seeds".into(), "at least one seed".into()));
        }
        if self.quick.as_ref().is_some_and(|q| q.seeds.is_empty()) {
            return Err(("quick.seeds".into(), "at least one seed".into()));
        }
        let quick_rates = self
            .quick
            .as_ref()
            .map_or(&[][..], |q| &q.learning_rates[..]);
        if self.learning_rates.is_empty() || (self.quick.is_some() && quick_rates.is_empty()) {
            return Err((
                "learning_rates".into(),
                "at least one learning rate (and in [quick])".into(),
            ));
        }
        let het_rate = self.heterogeneity.as_ref().map(|h| h.learning_rate);
        if let Some(bad_rate) = [&self.learning_rates[..], quick_rates]
            .concat()
            .into_iter()
            .chain(het_rate)
            .find(|r| !(r.is_finite() && *r > 0.0))
        {
            return Err((
                "learning_rates".into(),
                format!("{bad_rate}: a learning rate is a positive number"),
            ));
        }
        let secondary = self.settings.iter().any(|s| s.role == Role::Secondary);
        if secondary && self.secondary_seeds.is_empty() {
            return Err((
                "secondary_seeds".into(),
                "secondary settings need at least one seed".into(),
            ));
        }
        Ok(())
    }

    /// Settings: names unique and usable in a folder name, an objective each, references
    /// that exist; the grids name settings that exist.
    fn check_settings(&self) -> Result<(), (String, String)> {
        let mut names = BTreeMap::new();
        for (i, s) in self.settings.iter().enumerate() {
            let key = format!("settings[{i}].name");
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err((
                    key,
                    format!("{:?}: letters, digits, `-` and `.` only", s.name),
                ));
            }
            if names.insert(s.name.clone(), i).is_some() {
                return Err((key, format!("{:?} appears twice", s.name)));
            }
            if objective_name(&s.objective).is_none() {
                return Err((
                    format!("settings[{i}].objective"),
                    "needs `name` (a string)".into(),
                ));
            }
            if let Some(r) = s
                .references
                .iter()
                .find(|r| !self.references.iter().any(|m| &m.name == *r))
            {
                return Err((
                    format!("settings[{i}].references"),
                    format!("{r:?} is not a [[references]] name"),
                ));
            }
        }
        let lists = [
            (
                self.heterogeneity.as_ref().map(|h| &h.settings),
                "heterogeneity.settings",
            ),
            (self.quick.as_ref().map(|q| &q.settings), "quick.settings"),
        ];
        for (list, key) in lists {
            let list = list.map_or(&[][..], |l| &l[..]);
            if let Some(unknown) = list.iter().find(|n| !names.contains_key(*n)) {
                return Err((key.into(), format!("{unknown:?} is not a setting name")));
            }
        }
        Ok(())
    }

    /// Every reference model exports (the runs that use it read the export).
    fn check_references(&self) -> Result<(), (String, String)> {
        for (i, r) in self.references.iter().enumerate() {
            if r.set
                .get("checkpoint.export")
                .and_then(toml::Value::as_bool)
                != Some(true)
            {
                return Err((
                    format!("references[{i}].set"),
                    "a reference model must export: `\"checkpoint.export\" = true`".into(),
                ));
            }
        }
        Ok(())
    }

    /// No two runs of a grid share a directory. Both grids name a run
    /// `<setting>-lr<rate>-<user>-seed<k>`: the main user in the heterogeneity grid at a main
    /// learning rate and seed would share one.
    fn check_run_directories(&self) -> Result<(), (String, String)> {
        let grids = [(false, "heterogeneity"), (true, "quick")];
        for (quick, key) in grids.into_iter().filter(|(q, _)| !q || self.has_quick()) {
            let mut dirs = std::collections::BTreeSet::new();
            if let Some(cell) = self.plan(quick).cells.iter().find(|c| !dirs.insert(&c.dir)) {
                return Err((
                    key.into(),
                    format!(
                        "two runs of the study would share {} (the main user in the heterogeneity grid at a main learning rate and seed)",
                        cell.dir.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The grid to run: the full one, or `[quick]`'s (the full one when the config has no
    /// `[quick]`: callers check [`StudyConfig::has_quick`] first).
    pub fn plan(&self, quick: bool) -> Plan {
        let scope = self.scope(quick);
        let mut cells = Vec::new();

        // Reference models: trained with their own overrides only.
        let references: Vec<&ReferenceModel> = self
            .references
            .iter()
            .filter(|r| self.is_wanted(r, &scope.main_settings))
            .collect();
        let mut reference_exports = BTreeMap::new();
        for r in &references {
            let cell = self.reference_cell(r, scope.dir);
            reference_exports.insert(
                r.name.clone(),
                cell.dir.join(bapo_rundir::files::EXPORT_DIR),
            );
            cells.push(cell);
        }

        let maker = CellMaker {
            dir: scope.dir,
            shared: self.shared_overrides(quick),
            reference_exports,
        };
        cells.extend(self.probes_cell(&maker, quick));
        cells.extend(self.main_cells(&scope, &maker));
        let het_settings: Vec<String> = self
            .heterogeneity
            .iter()
            .flat_map(|h| &h.settings)
            .filter(|s| scope.main_settings.contains(s))
            .cloned()
            .collect();
        cells.extend(self.heterogeneity_cells(&scope, &maker, &het_settings));
        Plan {
            title: self.title.clone(),
            base: self.base.clone(),
            dir: scope.dir.to_path_buf(),
            backend: self.backend.clone(),
            user: self.user.clone(),
            seeds: scope.seeds.to_vec(),
            learning_rates: scope.learning_rates.to_vec(),
            cells,
            settings: scope
                .main_settings
                .iter()
                .filter_map(|n| self.setting(n))
                .map(|s| {
                    (
                        s.name.clone(),
                        objective_name(&s.objective).unwrap_or_default(),
                        s.role,
                    )
                })
                .collect(),
            not_tested: self
                .not_tested
                .iter()
                .map(|n| (n.objective.clone(), n.why.clone()))
                .collect(),
            rules: self.rules.clone(),
            curve_interval: scope.curve_interval,
            references: references
                .iter()
                .map(|r| (r.name.clone(), r.why.clone()))
                .collect(),
            heterogeneity_settings: het_settings,
            heterogeneity_users: scope.het_users.to_vec(),
            log_figures: self.log_figures.clone(),
        }
    }

    /// The values the grid is drawn from: the full grid's, or `[quick]`'s.
    fn scope(&self, quick: bool) -> Scope<'_> {
        match (&self.quick, quick) {
            (Some(q), true) => Scope {
                dir: &q.dir,
                seeds: &q.seeds,
                secondary_seeds: &q.seeds,
                learning_rates: &q.learning_rates,
                main_settings: q.settings.clone(),
                het_users: &q.heterogeneity_users,
                curve_interval: q.curve_interval,
                het_seeds: &q.heterogeneity_seeds,
            },
            _ => Scope {
                dir: &self.dir,
                seeds: &self.seeds,
                secondary_seeds: &self.secondary_seeds,
                learning_rates: &self.learning_rates,
                main_settings: self.settings.iter().map(|s| s.name.clone()).collect(),
                het_users: self.heterogeneity.as_ref().map_or(&[], |h| &h.users[..]),
                curve_interval: self.curve_interval,
                het_seeds: self.heterogeneity.as_ref().map_or(&[], |h| &h.seeds[..]),
            },
        }
    }

    /// The overrides every cell of the grids starts with: the backend, the shared `set`, then
    /// (quick) `[quick]`'s `set`.
    fn shared_overrides(&self, quick: bool) -> Vec<String> {
        let mut shared: Vec<String> = vec![format!("training.backend={:?}", self.backend)];
        shared.extend(overrides(&self.set));
        if let (Some(q), true) = (&self.quick, quick) {
            shared.extend(overrides(&q.set));
        }
        shared
    }

    /// The setting named `name`.
    fn setting(&self, name: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.name == name)
    }

    /// Whether reference model `r` is needed: a setting of the main grid reads it.
    fn is_wanted(&self, r: &ReferenceModel, main_settings: &[String]) -> bool {
        self.settings
            .iter()
            .filter(|s| main_settings.contains(&s.name))
            .any(|s| s.references.contains(&r.name))
    }

    /// The training run of reference model `r` in `<dir>/<name>`: the backend and its own
    /// overrides only (not the shared ones).
    fn reference_cell(&self, r: &ReferenceModel, dir: &Path) -> Cell {
        let run = dir.join(&r.name);
        let mut o = vec![format!("training.backend={:?}", self.backend)];
        o.extend(overrides(&r.set));
        o.push(format!("output.dir={:?}", path_text(&run)));
        let objective = r
            .set
            .get("objective")
            .and_then(|v| v.as_table())
            .and_then(objective_name)
            .unwrap_or_default();
        let user = r
            .set
            .get("data.user")
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_string();
        Cell {
            grid: Grid::Reference,
            setting: r.name.clone(),
            objective,
            user,
            seed: 0,
            learning_rate: 0.0,
            role: Role::Secondary,
            dir: run,
            overrides: o,
        }
    }

    /// The probe check in `<dir>/probes`: one step on the trained user at the warm-up's first
    /// learning rate, 0 (so the model is the model before training), then one evaluation on
    /// every probe (not two: BIG-bench in full is the study's most expensive evaluation). None
    /// without `[probes]`.
    fn probes_cell(&self, maker: &CellMaker, quick: bool) -> Option<Cell> {
        let probes = self.probes.as_ref()?;
        let run = maker.dir.join("probes");
        let mut o = maker.shared.clone();
        o.extend(overrides(&probes.set));
        if let (Some(q), true) = (&self.quick, quick) {
            o.extend(overrides(&q.probes));
        }
        o.push(format!("data.user={:?}", self.user));
        o.push(format!("eval.users=[{:?}]", self.user));
        // Linear warm-up from 0: the one step's learning rate is 0 (crates/train schedule.rs).
        o.push("schedule.warmup_steps=1".into());
        o.push("training.max_steps=1".into());
        o.push("eval.at_start=false".into());
        o.push(format!("output.dir={:?}", path_text(&run)));
        Some(Cell {
            grid: Grid::Probes,
            setting: "probes".into(),
            objective: String::new(),
            user: self.user.clone(),
            seed: 0,
            learning_rate: 0.0,
            role: Role::Secondary,
            dir: run,
            overrides: o,
        })
    }

    /// The main grid: every setting on the trained user at every learning rate, its role's
    /// seeds, each run evaluated along its training.
    fn main_cells(&self, scope: &Scope, maker: &CellMaker) -> Vec<Cell> {
        let mut cells = Vec::new();
        for name in &scope.main_settings {
            let Some(s) = self.setting(name) else {
                continue;
            };
            let seeds = match s.role {
                Role::Primary => scope.seeds,
                Role::Secondary => scope.secondary_seeds,
            };
            for rate in scope.learning_rates {
                for seed in seeds {
                    let run = RunOf {
                        user: &self.user,
                        seed: *seed,
                        learning_rate: *rate,
                        curve_interval: scope.curve_interval,
                        set: None,
                    };
                    cells.push(maker.cell(Grid::Main, s, run));
                }
            }
        }
        cells
    }

    /// The heterogeneity grid: `het_settings` on every heterogeneity user at its learning
    /// rate, every heterogeneity seed, evaluated at the start and the end.
    fn heterogeneity_cells(
        &self,
        scope: &Scope,
        maker: &CellMaker,
        het_settings: &[String],
    ) -> Vec<Cell> {
        let mut cells = Vec::new();
        let Some(het) = &self.heterogeneity else {
            return cells;
        };
        for user in scope.het_users {
            for name in het_settings {
                let Some(s) = self.setting(name) else {
                    continue;
                };
                for seed in scope.het_seeds {
                    let run = RunOf {
                        user,
                        seed: *seed,
                        learning_rate: het.learning_rate,
                        curve_interval: 0,
                        set: Some(&het.set),
                    };
                    cells.push(maker.cell(Grid::Heterogeneity, s, run));
                }
            }
        }
        cells
    }
}

impl Rules {
    /// The first bad value: (its key, why).
    fn check(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: &str| Err((format!("rules.{key}"), message.to_string()));
        if self.levels.is_empty() || self.levels.iter().any(|l| !(*l > 0.0 && *l < 1.0)) {
            return bad(
                "levels",
                "one or more shares of the headroom, each in (0, 1)",
            );
        }
        if self.retention.is_empty() {
            return bad("retention", "at least one retention measure");
        }
        if let Some(r) = self
            .retention
            .iter()
            .find(|r| !(r.margin > 0.0 && r.margin.is_finite() && r.scale > 0.0))
        {
            return bad(
                "retention",
                &format!("{}: margin and scale must be positive", r.metric),
            );
        }
        if !(self.level > 0.5 && self.level < 1.0) {
            return bad("level", "an interval level in (0.5, 1)");
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return bad("alpha", "a family-wise error rate in (0, 0.5)");
        }
        if self.resamples < 100 {
            return bad("resamples", "at least 100 bootstrap resamples");
        }
        if !(self.confirmation_share > 0.0 && self.confirmation_share < 1.0) {
            return bad("confirmation_share", "a share in (0, 1)");
        }
        Ok(())
    }
}

/// What [`StudyConfig::plan`] draws from: the full grid's values or `[quick]`'s.
struct Scope<'c> {
    dir: &'c Path,
    seeds: &'c [u64],
    secondary_seeds: &'c [u64],
    learning_rates: &'c [f64],
    /// The settings of the main grid, in order.
    main_settings: Vec<String>,
    /// The heterogeneity grid's users.
    het_users: &'c [String],
    curve_interval: usize,
    /// The heterogeneity grid's seeds.
    het_seeds: &'c [u64],
}

/// Makes the cells of the main and heterogeneity grids.
struct CellMaker<'c> {
    /// Where the run directories go.
    dir: &'c Path,
    /// The overrides every cell starts with.
    shared: Vec<String>,
    /// Each reference model's export, by name.
    reference_exports: BTreeMap<String, PathBuf>,
}

/// Which run of a setting a cell is.
struct RunOf<'r> {
    user: &'r str,
    seed: u64,
    learning_rate: f64,
    /// Evaluate every this many steps (0: at the start and the end).
    curve_interval: usize,
    /// The grid's own overrides, after the shared ones.
    set: Option<&'r toml::Table>,
}

impl CellMaker<'_> {
    /// The run of setting `s` in `<dir>/<setting>-lr<rate>-<user>-seed<k>`, evaluating the
    /// trained user only.
    fn cell(&self, grid: Grid, s: &Setting, run: RunOf) -> Cell {
        let dir = self.dir.join(format!(
            "{}-lr{}-{}-seed{}",
            s.name, run.learning_rate, run.user, run.seed
        ));
        let mut o = self.shared.clone();
        if let Some(set) = run.set {
            o.extend(overrides(set));
        }
        o.push(format!("objective={}", inline(&s.objective)));
        o.push(format!("data.user={:?}", run.user));
        o.push(format!("eval.users=[{:?}]", run.user));
        o.push(format!("optimizer.learning_rate={}", run.learning_rate));
        o.push(format!("training.seed={}", run.seed));
        if !s.references.is_empty() {
            let paths: Vec<String> = s
                .references
                .iter()
                .map(|r| format!("{:?}", path_text(&self.reference_exports[r])))
                .collect();
            o.push(format!("model.references=[{}]", paths.join(", ")));
        }
        if run.curve_interval > 0 {
            o.push(format!("eval.interval={}", run.curve_interval));
        }
        o.push(format!("output.dir={:?}", path_text(&dir)));
        Cell {
            grid,
            setting: s.name.clone(),
            objective: objective_name(&s.objective).unwrap_or_default(),
            user: run.user.to_string(),
            seed: run.seed,
            learning_rate: run.learning_rate,
            role: s.role,
            dir,
            overrides: o,
        }
    }
}

fn objective_name(objective: &toml::Table) -> Option<String> {
    objective
        .get("name")
        .and_then(toml::Value::as_str)
        .map(str::to_string)
}

/// What a study run was made with, as recorded in its run directory and its data: the base
/// config's fingerprint ([`base_fingerprint`]) on a first line, then the run's overrides.
pub fn run_record(base: &str, overrides: &[String]) -> String {
    let mut record = format!("# base {base}\n");
    for o in overrides {
        record += o;
        record += "\n";
    }
    record
}

/// The base run config's path and the SHA-256 of its settings (the parsed TOML written back
/// with sorted keys, so comments and layout do not count): an edited base config makes every
/// recorded run another run (issue #26, item 9).
pub fn base_fingerprint(root: &Path, base: &Path) -> Result<String, PlanError> {
    use sha2::{Digest, Sha256};
    let path = root.join(base);
    let read = |message: String| PlanError::Read {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| read(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| read(e.to_string()))?;
    let digest = Sha256::digest(canonical(&toml::Value::Table(table)).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{} sha256:{hex}", base.display()))
}

/// A TOML value as text with every table's keys sorted (the workspace's `toml` keeps a file's
/// key order, which must not count). Scalars are written by `toml`'s `Display`.
fn canonical(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(table) => {
            let sorted: BTreeMap<&String, &toml::Value> = table.iter().collect();
            let entries: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{k:?}={}", canonical(v)))
                .collect();
            format!("{{{}}}", entries.join(","))
        }
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// `key=value` for every entry, values written as inline TOML.
fn overrides(table: &toml::Table) -> Vec<String> {
    table
        .iter()
        .map(|(key, value)| format!("{key}={}", inline_value(value)))
        .collect()
}

fn inline_value(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(t) => inline(t),
        other => other.to_string(),
    }
}

/// A table as one line of inline TOML: `{ name = "dpo", beta = 0.1 }`.
fn inline(table: &toml::Table) -> String {
    let entries: Vec<String> = table
        .iter()
        .map(|(k, v)| format!("{k} = {}", inline_value(v)))
        .collect();
    format!("{{ {} }}", entries.join(", "))
}

/// A path as the text a TOML string holds (forward slashes as given).
fn path_text(path: &Path) -> String {
    path.display().to_string()
}
