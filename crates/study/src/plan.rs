//! The study's grid: `configs/study.toml` read and expanded into cells, each one ordinary run of
//! `bapo train` (a base run config plus `--set` overrides) in its own run directory.
//!
//! The file names the base run config, the overrides every run shares, the objective settings
//! of the main grid (trained on one user, several seeds), the users and settings of the
//! heterogeneity grid, models trained before the grid for use as further references (MRPO's
//! auxiliary), and a `[quick]` table that shrinks all of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// The run config every cell starts from (relative to the workspace root).
    pub base: PathBuf,
    /// Where the cells' run directories go (relative to the workspace root).
    pub dir: PathBuf,
    /// `training.backend` of every run.
    pub backend: String,
    /// The trained user of the main grid.
    pub user: String,
    pub seeds: Vec<u64>,
    /// The first seed's runs of the main grid also evaluate every this many steps (the probe
    /// curves); 0: only at the start and the end.
    #[serde(default)]
    pub curve_interval: usize,
    /// `--set` overrides of every run (dotted keys, TOML values).
    #[serde(default)]
    pub set: toml::Table,
    pub settings: Vec<Setting>,
    #[serde(default)]
    pub references: Vec<ReferenceModel>,
    pub heterogeneity: Heterogeneity,
    pub quick: Quick,
}

/// One objective setting of the grid.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// A short name, used in run directory names and the report (letters, digits, `-`, `.`).
    pub name: String,
    /// The whole `[objective]` table of the runs.
    pub objective: toml::Table,
    /// Further reference models (names of `[[references]]`), in order: `model.references`.
    #[serde(default)]
    pub references: Vec<String>,
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
}

/// `--quick`: what replaces the full grid's values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quick {
    pub dir: PathBuf,
    pub seeds: Vec<u64>,
    pub settings: Vec<String>,
    pub heterogeneity_users: Vec<String>,
    #[serde(default)]
    pub curve_interval: usize,
    /// Overrides applied after the shared `set` (e.g. fewer steps).
    #[serde(default)]
    pub set: toml::Table,
}

/// Which grid a cell belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grid {
    /// A model trained before the grid, used as a reference.
    Reference,
    /// The trained user of the main grid, every setting and seed.
    Main,
    /// The heterogeneity grid's other users.
    Heterogeneity,
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
    /// The run directory, relative to the workspace root: `<dir>/<setting>-<user>-seed<k>`.
    pub dir: PathBuf,
    /// The `--set key=value` overrides, in order, after the base config.
    pub overrides: Vec<String>,
}

/// The expanded grid.
#[derive(Debug, Clone)]
pub struct Plan {
    pub base: PathBuf,
    pub dir: PathBuf,
    pub backend: String,
    /// The trained user of the main grid.
    pub user: String,
    pub seeds: Vec<u64>,
    /// Reference models first (other cells read their exports), then the main grid, then the
    /// heterogeneity grid.
    pub cells: Vec<Cell>,
    /// The settings, in the config's order, with their objective names.
    pub settings: Vec<(String, String)>,
    /// Each reference model's name and why it was chosen.
    pub references: Vec<(String, String)>,
    /// The settings of the heterogeneity grid.
    pub heterogeneity_settings: Vec<String>,
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

    fn check(&self, path: &str) -> Result<(), PlanError> {
        let bad = |key: &str, message: String| PlanError::Key {
            path: path.to_string(),
            key: key.to_string(),
            message,
        };
        if self.seeds.is_empty() {
            return Err(bad("seeds", "at least one seed".into()));
        }
        let mut names = BTreeMap::new();
        for (i, s) in self.settings.iter().enumerate() {
            let key = format!("settings[{i}].name");
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(bad(
                    &key,
                    format!("{:?}: letters, digits, `-` and `.` only", s.name),
                ));
            }
            if names.insert(s.name.clone(), i).is_some() {
                return Err(bad(&key, format!("{:?} appears twice", s.name)));
            }
            if objective_name(&s.objective).is_none() {
                return Err(bad(
                    &format!("settings[{i}].objective"),
                    "needs `name` (a string)".into(),
                ));
            }
            for r in &s.references {
                if !self.references.iter().any(|m| &m.name == r) {
                    return Err(bad(
                        &format!("settings[{i}].references"),
                        format!("{r:?} is not a [[references]] name"),
                    ));
                }
            }
        }
        let known = |list: &[String], key: &str| -> Result<(), PlanError> {
            match list.iter().find(|n| !names.contains_key(*n)) {
                Some(unknown) => Err(bad(key, format!("{unknown:?} is not a setting name"))),
                None => Ok(()),
            }
        };
        known(&self.heterogeneity.settings, "heterogeneity.settings")?;
        known(&self.quick.settings, "quick.settings")?;
        if self.quick.seeds.is_empty() {
            return Err(bad("quick.seeds", "at least one seed".into()));
        }
        for (i, r) in self.references.iter().enumerate() {
            if r.set
                .get("checkpoint.export")
                .and_then(toml::Value::as_bool)
                != Some(true)
            {
                return Err(bad(
                    &format!("references[{i}].set"),
                    "a reference model must export: `\"checkpoint.export\" = true`".into(),
                ));
            }
        }
        Ok(())
    }

    /// The grid to run: the full one, or `[quick]`'s.
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
            reference_exports.insert(r.name.clone(), cell.dir.join("export"));
            cells.push(cell);
        }

        let maker = CellMaker {
            dir: scope.dir,
            shared: self.shared_overrides(quick),
            reference_exports,
            curve_interval: scope.curve_interval,
        };
        cells.extend(self.main_cells(&scope, &maker));
        let het_settings: Vec<String> = self
            .heterogeneity
            .settings
            .iter()
            .filter(|s| scope.main_settings.contains(s))
            .cloned()
            .collect();
        cells.extend(self.heterogeneity_cells(&scope, &maker, &het_settings));
        Plan {
            base: self.base.clone(),
            dir: scope.dir.to_path_buf(),
            backend: self.backend.clone(),
            user: self.user.clone(),
            seeds: scope.seeds.to_vec(),
            cells,
            settings: scope
                .main_settings
                .iter()
                .filter_map(|n| self.setting(n))
                .map(|s| {
                    (
                        s.name.clone(),
                        objective_name(&s.objective).unwrap_or_default(),
                    )
                })
                .collect(),
            references: references
                .iter()
                .map(|r| (r.name.clone(), r.why.clone()))
                .collect(),
            heterogeneity_settings: het_settings,
        }
    }

    /// The values the grid is drawn from: the full grid's, or `[quick]`'s.
    fn scope(&self, quick: bool) -> Scope<'_> {
        if quick {
            Scope {
                dir: &self.quick.dir,
                seeds: &self.quick.seeds,
                main_settings: self.quick.settings.clone(),
                other_users: &self.quick.heterogeneity_users,
                curve_interval: self.quick.curve_interval,
                het_seeds: &self.quick.seeds,
            }
        } else {
            Scope {
                dir: &self.dir,
                seeds: &self.seeds,
                main_settings: self.settings.iter().map(|s| s.name.clone()).collect(),
                other_users: &self.heterogeneity.users,
                curve_interval: self.curve_interval,
                het_seeds: &self.heterogeneity.seeds,
            }
        }
    }

    /// The overrides every cell of the grids starts with: the backend, the shared `set`, then
    /// (quick) `[quick]`'s `set`.
    fn shared_overrides(&self, quick: bool) -> Vec<String> {
        let mut shared: Vec<String> = vec![format!("training.backend={:?}", self.backend)];
        shared.extend(overrides(&self.set));
        if quick {
            shared.extend(overrides(&self.quick.set));
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
            dir: run,
            overrides: o,
        }
    }

    /// The main grid: every setting on the trained user, every seed; the first seed's runs
    /// also evaluate along the way (the probe curves).
    fn main_cells(&self, scope: &Scope, maker: &CellMaker) -> Vec<Cell> {
        let mut cells = Vec::new();
        for name in &scope.main_settings {
            let Some(s) = self.setting(name) else {
                continue;
            };
            for (i, seed) in scope.seeds.iter().enumerate() {
                cells.push(maker.cell(Grid::Main, s, &self.user, *seed, i == 0));
            }
        }
        cells
    }

    /// The heterogeneity grid: `het_settings` on every other user (the trained user is not
    /// repeated), every heterogeneity seed.
    fn heterogeneity_cells(
        &self,
        scope: &Scope,
        maker: &CellMaker,
        het_settings: &[String],
    ) -> Vec<Cell> {
        let mut cells = Vec::new();
        for user in scope.other_users.iter().filter(|u| **u != self.user) {
            for name in het_settings {
                let Some(s) = self.setting(name) else {
                    continue;
                };
                for seed in scope.het_seeds {
                    cells.push(maker.cell(Grid::Heterogeneity, s, user, *seed, false));
                }
            }
        }
        cells
    }
}

/// What [`StudyConfig::plan`] draws from: the full grid's values or `[quick]`'s.
struct Scope<'c> {
    dir: &'c Path,
    seeds: &'c [u64],
    /// The settings of the main grid, in order.
    main_settings: Vec<String>,
    /// The heterogeneity grid's users.
    other_users: &'c [String],
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
    /// The first seed's evaluation interval (0: none).
    curve_interval: usize,
}

impl CellMaker<'_> {
    /// The run of setting `s` on `user` with `seed`, in `<dir>/<setting>-<user>-seed<k>`;
    /// `curve`: it also evaluates every `curve_interval` steps.
    fn cell(&self, grid: Grid, s: &Setting, user: &str, seed: u64, curve: bool) -> Cell {
        let run = self.dir.join(format!("{}-{user}-seed{seed}", s.name));
        let mut o = self.shared.clone();
        o.push(format!("objective={}", inline(&s.objective)));
        o.push(format!("data.user={user:?}"));
        o.push(format!("training.seed={seed}"));
        if !s.references.is_empty() {
            let paths: Vec<String> = s
                .references
                .iter()
                .map(|r| format!("{:?}", path_text(&self.reference_exports[r])))
                .collect();
            o.push(format!("model.references=[{}]", paths.join(", ")));
        }
        if curve && self.curve_interval > 0 {
            o.push(format!("eval.interval={}", self.curve_interval));
        }
        o.push(format!("output.dir={:?}", path_text(&run)));
        Cell {
            grid,
            setting: s.name.clone(),
            objective: objective_name(&s.objective).unwrap_or_default(),
            user: user.to_string(),
            seed,
            dir: run,
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
