//! The study's per-item results in one compact file (`data.json`), committed next to the
//! report so that anyone can recompute every number of it without the run directories.
//!
//! [`StudyData::collect`] reads every finished cell of a plan (its `eval_items.jsonl`,
//! `eval_item_labels.json` and `finished.json`) and keeps only what the report uses: per run,
//! the metrics named in [`kept_metric`] at every evaluated step, each value rounded to 4
//! significant digits, and the figures the plan reads from its logs ([`crate::plan::LogFigure`]).
//! Item labels (cluster, chance, flags) are stored once per distinct labelling and cluster
//! names once in a table, since every run of a user shares them.
//!
//! The project's full study runs over several sittings, on machines that do not keep their
//! run directories: a run recorded in the committed file counts as done
//! ([`StudyData::recorded`]), and [`StudyData::collect`] carries it into the next file. Each
//! run keeps the overrides it was made with, so a run made with other settings is never
//! taken for a cell of the plan; nor a run made from another base config (its fingerprint
//! is kept too).
//!
//! The file is JSON with a fixed layout (one run per line, keys in a fixed order, integral
//! values written as integers, others as the shortest text that reads back to the same
//! number): writing what was read gives the same bytes, so the report computed from it is
//! the same byte for byte. The report is only ever computed from data read back from a file.

use std::collections::BTreeMap;
use std::path::Path;

use bapo_rundir::files::{
    EVAL_ITEMS_FILE, FINISHED_FILE, ITEM_LABELS_FILE, STUDY_OVERRIDES_FILE, is_finished,
};
use bapo_rundir::{Row, read_rows};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::plan::{Cell, Grid, Plan, base_fingerprint, run_record};

/// The first line of every data file: its layout's name and version.
pub const FORMAT: &str = "bapo-study-data 2";

/// A data file that cannot be read or written: the message names the file and the fault.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DataError {
    pub path: String,
    pub message: String,
}

impl DataError {
    fn new(path: &Path, message: impl Into<String>) -> DataError {
        DataError {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// What is inconsistent in a data file, in words; [`StudyData::read`] adds the file's path.
type Inconsistency = String;

/// Every finished run's kept metrics.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyData {
    pub format: String,
    /// Cluster (country, entity) names; labels refer to them by index.
    pub clusters: Vec<String>,
    /// Distinct item labellings; metrics refer to them by index.
    pub labels: Vec<Labels>,
    pub runs: Vec<RunData>,
}

/// What a metric's items are, in item order (an empty vector: not known).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// Each item's cluster, an index into [`StudyData::clusters`].
    #[serde(default)]
    pub cluster: Vec<usize>,
    #[serde(default)]
    pub chance: Vec<f64>,
    /// Whether the item's answer occurs in the trained user's training text.
    #[serde(default)]
    pub seen: Vec<bool>,
    /// Whether the length-only chooser (fewest characters) is right.
    #[serde(default)]
    pub shortest_correct: Vec<bool>,
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunData {
    /// `main`, `heterogeneity` or `probes`.
    pub grid: String,
    /// The run directory of its cell (relative to the workspace root): which cell it is.
    pub dir: String,
    pub setting: String,
    pub objective: String,
    pub user: String,
    pub seed: u64,
    pub learning_rate: f64,
    /// The base config the run was made from: its path and fingerprint
    /// ([`base_fingerprint`]).
    pub base: String,
    /// The `--set` overrides the run was made with (its cell's, in order).
    pub overrides: Vec<String>,
    /// What the run cost, where the run recorded it.
    pub cost: Option<Cost>,
    /// The evaluated steps, ascending (step 0: the model before training).
    pub steps: Vec<usize>,
    pub metrics: BTreeMap<String, MetricData>,
    /// The plan's log figures, by name, where the run's logs hold them as finite numbers; main
    /// grid runs only, as the report shows them (written only when there are some: a file of
    /// a study without them reads as before).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: BTreeMap<String, f64>,
}

impl RunData {
    /// What the run was made with, as its run directory records it ([`run_record`]).
    pub fn record(&self) -> String {
        run_record(&self.base, &self.overrides)
    }

    /// Whether this run is `cell`'s: its run directory names every part of the cell (setting,
    /// learning rate, user, seed), compared as text, not as numbers read back.
    fn is_of(&self, cell: &Cell) -> bool {
        self.dir == cell_dir(cell)
    }

    /// Whether this run was made as `cell` is now: from the base config whose fingerprint is
    /// `base`, with the cell's overrides.
    fn made_as(&self, cell: &Cell, base: &str) -> bool {
        self.base == base && self.overrides == cell.overrides
    }
}

/// A run's compute: training tokens and wall-clock seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    pub tokens: Option<f64>,
    pub seconds: Option<f64>,
}

/// One metric of one run: its labelling and its item values at every evaluated step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricData {
    /// Index into [`StudyData::labels`].
    pub labels: usize,
    /// `values[t][i]`: item i at `steps[t]`.
    #[serde(serialize_with = "compact_rows")]
    pub values: Vec<Vec<f64>>,
}

/// A cell's run directory as the data file names it.
fn cell_dir(cell: &Cell) -> String {
    cell.dir.display().to_string()
}

/// The name of a grid in the data file.
pub fn grid_name(grid: Grid) -> &'static str {
    match grid {
        Grid::Reference => "reference",
        Grid::Main => "main",
        Grid::Heterogeneity => "heterogeneity",
        Grid::Probes => "probes",
    }
}

/// Whether the report uses `metric` of a run of `grid` trained on `user`: the probe check
/// keeps every probe; the grids keep the trained user's style score and margins (accuracy
/// is recomputed from the margin, ties counted half) and every retention measure.
pub fn kept_metric(plan: &Plan, grid: Grid, user: &str, metric: &str) -> bool {
    if grid == Grid::Probes {
        return metric.starts_with("knowledge/");
    }
    let own = [
        format!("answer/{user}/style"),
        format!("pref/{user}/margin"),
        format!("pref/{user}/reference_margin"),
    ];
    own.iter().any(|m| m == metric)
        || plan
            .rules
            .retention
            .iter()
            .any(|r| r.metric.replace("<user>", user) == metric)
}

/// A value rounded to 4 significant digits (the nearest double to the 4-digit decimal).
pub fn round4(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    format!("{v:.3e}").parse().unwrap_or(v)
}

impl StudyData {
    /// Every cell of `plan` (reference models excepted) that has data, in the plan's order:
    /// read from its finished run directory under `root`, or else taken from `recorded` (a
    /// data file of earlier sittings) where that holds the cell made from the same base
    /// config and overrides. A run directory that records other settings is an error.
    pub fn collect(root: &Path, plan: &Plan, recorded: &StudyData) -> Result<StudyData, DataError> {
        let mut data = StudyData {
            format: FORMAT.into(),
            ..StudyData::default()
        };
        let base = base_fingerprint(root, &plan.base)
            .map_err(|e| DataError::new(&root.join(&plan.base), e.to_string()))?;
        let mut interner = Interner::default();
        for cell in plan.cells.iter().filter(|c| c.grid != Grid::Reference) {
            let dir = root.join(&cell.dir);
            if is_finished(&dir) {
                check_record(&dir, &base, cell)?;
                data.runs
                    .push(read_run(&dir, plan, cell, &base, &mut interner)?);
            } else if let Some(run) = recorded.recorded(cell, &base) {
                data.runs.push(recorded.carried(run, &mut interner));
            } else if let Some(run) = recorded.recorded_otherwise(cell, &base) {
                return Err(DataError::new(
                    Path::new(&run.dir),
                    "recorded in the study's data file with other settings than the study config gives now (base config or overrides); remove its line from the data file to rerun it",
                ));
            }
        }
        // A run of earlier sittings that the plan no longer has would be lost from the file.
        if let Some(lost) = recorded
            .runs
            .iter()
            .find(|r| !data.runs.iter().any(|d| d.dir == r.dir))
        {
            return Err(DataError::new(
                Path::new(&lost.dir),
                "recorded in the study's data file but not a cell of the plan now; remove its line from the data file by hand to drop it",
            ));
        }
        data.clusters = interner.clusters;
        data.labels = interner.labels;
        Ok(data)
    }

    /// The run recorded for `cell`: the same grid, setting, user and seed, made from the base
    /// config whose fingerprint is `base` with the cell's overrides.
    pub fn recorded(&self, cell: &Cell, base: &str) -> Option<&RunData> {
        self.runs
            .iter()
            .find(|r| r.is_of(cell) && r.made_as(cell, base))
    }

    /// A run recorded for `cell` but made from another base config or with other overrides
    /// (an edited config), if any.
    pub fn recorded_otherwise(&self, cell: &Cell, base: &str) -> Option<&RunData> {
        self.runs
            .iter()
            .find(|r| r.is_of(cell) && !r.made_as(cell, base))
    }

    /// `run` (one of this file's) with its labels and clusters re-indexed in `interner`.
    fn carried(&self, run: &RunData, interner: &mut Interner) -> RunData {
        let mut run = run.clone();
        for metric in run.metrics.values_mut() {
            let old = &self.labels[metric.labels];
            let labels = Labels {
                cluster: old
                    .cluster
                    .iter()
                    .map(|&c| interner.cluster(&self.clusters[c]))
                    .collect(),
                ..old.clone()
            };
            metric.labels = interner.labels(labels);
        }
        run
    }

    /// The file's text: a header line, one labelling per line, one run per line.
    pub fn to_text(&self) -> Result<String, serde_json::Error> {
        let mut text = format!(
            "{{\"format\":{},\n\"clusters\":{},\n\"labels\":[",
            serde_json::to_string(&self.format)?,
            serde_json::to_string(&self.clusters)?
        );
        text += &lines(&self.labels)?;
        text += "],\n\"runs\":[";
        text += &lines(&self.runs)?;
        text += "]}\n";
        Ok(text)
    }

    /// Writes the data to `path` (whole, then renamed into place).
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        let text = self
            .to_text()
            .map_err(|e| DataError::new(path, e.to_string()))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DataError::new(parent, e.to_string()))?;
        }
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|e| DataError::new(path, e.to_string()))
    }

    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<StudyData, DataError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| DataError::new(path, e.to_string()))?;
        let data: StudyData =
            serde_json::from_str(&text).map_err(|e| DataError::new(path, e.to_string()))?;
        data.check().map_err(|m| DataError::new(path, m))?;
        Ok(data)
    }

    /// The first inconsistency: indices out of range, rows of the wrong length, steps out of
    /// order, values that are not finite.
    fn check(&self) -> Result<(), Inconsistency> {
        if self.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", self.format));
        }
        for (i, l) in self.labels.iter().enumerate() {
            if let Some(c) = l.cluster.iter().find(|c| **c >= self.clusters.len()) {
                return Err(format!("labels[{i}]: cluster {c} is not in `clusters`"));
            }
        }
        for (i, run) in self.runs.iter().enumerate() {
            self.check_run(run)
                .map_err(|m| format!("runs[{i}] ({} seed {}): {m}", run.setting, run.seed))?;
        }
        Ok(())
    }

    fn check_run(&self, run: &RunData) -> Result<(), Inconsistency> {
        if run.steps.is_empty() || run.steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err("`steps` must be ascending and not empty".into());
        }
        for (name, m) in &run.metrics {
            let labels = self
                .labels
                .get(m.labels)
                .ok_or_else(|| format!("{name}: labels {} does not exist", m.labels))?;
            if m.values.len() != run.steps.len() {
                return Err(format!(
                    "{name}: {} rows for {} steps",
                    m.values.len(),
                    run.steps.len()
                ));
            }
            let n = m.values[0].len();
            let label_lengths = [
                labels.cluster.len(),
                labels.chance.len(),
                labels.seen.len(),
                labels.shortest_correct.len(),
            ];
            if n == 0 || m.values.iter().any(|r| r.len() != n) {
                return Err(format!(
                    "{name}: every step needs the same, nonzero item count"
                ));
            }
            if label_lengths.iter().any(|&l| l != 0 && l != n) {
                return Err(format!("{name}: labels {} describe other items", m.labels));
            }
            if m.values.iter().flatten().any(|v| !v.is_finite()) {
                return Err(format!("{name}: a value is not finite"));
            }
        }
        if let Some((name, _)) = run.figures.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("figure {name:?} is not finite"));
        }
        Ok(())
    }
}

/// Each item serialised on its own line, comma-separated.
fn lines<T: Serialize>(items: &[T]) -> Result<String, serde_json::Error> {
    let rows = items
        .iter()
        .map(|i| serde_json::to_string(i).map(|s| format!("\n{s}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows.join(","))
}

/// Rows of values, integral ones written as integers (`1`, not `1.0`).
fn compact_rows<S: Serializer>(rows: &[Vec<f64>], s: S) -> Result<S::Ok, S::Error> {
    let rows: Vec<Vec<Value>> = rows
        .iter()
        .map(|r| r.iter().map(|v| compact_number(*v)).collect())
        .collect();
    rows.serialize(s)
}

fn compact_number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

/// Cluster names and labellings, each stored once.
#[derive(Default)]
struct Interner {
    clusters: Vec<String>,
    cluster_index: BTreeMap<String, usize>,
    labels: Vec<Labels>,
    labels_index: BTreeMap<String, usize>,
}

impl Interner {
    fn cluster(&mut self, name: &str) -> usize {
        if let Some(&i) = self.cluster_index.get(name) {
            return i;
        }
        self.clusters.push(name.to_string());
        self.cluster_index
            .insert(name.to_string(), self.clusters.len() - 1);
        self.clusters.len() - 1
    }

    fn labels(&mut self, labels: Labels) -> usize {
        let key = serde_json::to_string(&labels).unwrap_or_default();
        if let Some(&i) = self.labels_index.get(&key) {
            return i;
        }
        self.labels.push(labels);
        self.labels_index.insert(key, self.labels.len() - 1);
        self.labels.len() - 1
    }
}

/// A run's labels file as written by `bapo train` (absent fields: not known).
#[derive(Deserialize, Default, Clone)]
struct RawLabels {
    #[serde(default)]
    cluster: Vec<String>,
    #[serde(default)]
    chance: Vec<f64>,
    #[serde(default)]
    seen: Vec<bool>,
    #[serde(default)]
    shortest_correct: Vec<bool>,
}

/// Refuses a run directory whose record ([`STUDY_OVERRIDES_FILE`]) says it was made otherwise than
/// `cell` is now; one without a record (made before records existed) is taken as it is.
fn check_record(dir: &Path, base: &str, cell: &Cell) -> Result<(), DataError> {
    let path = dir.join(STUDY_OVERRIDES_FILE);
    match std::fs::read_to_string(&path) {
        Ok(made_with) if made_with != run_record(base, &cell.overrides) => Err(DataError::new(
            &path,
            "the run was made with other settings than the study config gives now (base config or overrides); remove its directory to rerun it",
        )),
        _ => Ok(()),
    }
}

fn read_run(
    dir: &Path,
    plan: &Plan,
    cell: &Cell,
    base: &str,
    interner: &mut Interner,
) -> Result<RunData, DataError> {
    let evaluations = read_items(&dir.join(EVAL_ITEMS_FILE))?;
    let labels = read_labels(&dir.join(ITEM_LABELS_FILE))?;
    let steps: Vec<usize> = evaluations.iter().map(|(s, _)| *s).collect();
    let names: Vec<&String> = evaluations
        .first()
        .map(|(_, m)| m.keys().collect())
        .unwrap_or_default();
    let mut metrics = BTreeMap::new();
    for name in names {
        if !kept_metric(plan, cell.grid, &cell.user, name) {
            continue;
        }
        let Some(values) = rows_of(&evaluations, name) else {
            continue;
        };
        let raw = labels.get(name).cloned().unwrap_or_default();
        let stored = Labels {
            cluster: raw.cluster.iter().map(|c| interner.cluster(c)).collect(),
            chance: raw.chance.iter().map(|v| round4(*v)).collect(),
            seen: raw.seen,
            shortest_correct: raw.shortest_correct,
        };
        let index = interner.labels(stored);
        metrics.insert(
            name.clone(),
            MetricData {
                labels: index,
                values,
            },
        );
    }
    Ok(RunData {
        grid: grid_name(cell.grid).into(),
        dir: cell_dir(cell),
        setting: cell.setting.clone(),
        objective: cell.objective.clone(),
        user: cell.user.clone(),
        seed: cell.seed,
        learning_rate: cell.learning_rate,
        base: base.to_string(),
        overrides: cell.overrides.clone(),
        cost: read_cost(&dir.join(FINISHED_FILE)),
        steps,
        metrics,
        figures: match cell.grid {
            Grid::Main => read_figures(dir, plan)?,
            _ => BTreeMap::new(),
        },
    })
}

/// The plan's log figures of the run in `dir`, rounded to 4 significant digits; a figure its
/// log does not hold (e.g. an anchor metric of a DPO run) is left out.
fn read_figures(dir: &Path, plan: &Plan) -> Result<BTreeMap<String, f64>, DataError> {
    let mut logs: BTreeMap<&str, Vec<Row>> = BTreeMap::new();
    let mut figures = BTreeMap::new();
    for figure in &plan.log_figures {
        let file = figure.log.file_name();
        if !logs.contains_key(file) {
            let rows =
                read_rows(&dir.join(file)).map_err(|e| DataError::new(e.path(), e.detail()))?;
            logs.insert(file, rows);
        }
        if let Some(value) = figure.at.from_rows(&logs[file], &figure.key) {
            figures.insert(figure.name.clone(), round4(value));
        }
    }
    Ok(figures)
}

/// A run's evaluations in step order: (step, metric → item values).
type Evaluations = Vec<(usize, BTreeMap<String, Vec<f64>>)>;

/// `metric`'s rounded items at every evaluation; None when an evaluation lacks it or the
/// item counts differ.
fn rows_of(evaluations: &Evaluations, metric: &str) -> Option<Vec<Vec<f64>>> {
    let rows: Vec<Vec<f64>> = evaluations
        .iter()
        .map(|(_, m)| {
            m.get(metric)
                .map(|v| v.iter().map(|x| round4(*x)).collect())
        })
        .collect::<Option<_>>()?;
    let n = rows.first()?.len();
    (n > 0 && rows.iter().all(|r: &Vec<f64>| r.len() == n)).then_some(rows)
}

/// `eval_items.jsonl`: (step, metric → item values) per line, in step order (the first line
/// of a step that a resumed run logged twice).
fn read_items(path: &Path) -> Result<Evaluations, DataError> {
    let rows = read_rows(path).map_err(|e| DataError::new(e.path(), e.detail()))?;
    let mut evaluations: Evaluations = rows.iter().map(|row| (row.step(), row.items())).collect();
    evaluations.sort_by_key(|(s, _)| *s);
    evaluations.dedup_by_key(|(s, _)| *s);
    Ok(evaluations)
}

/// `eval_item_labels.json`; empty when the run wrote none (runs before labels existed).
fn read_labels(path: &Path) -> Result<BTreeMap<String, RawLabels>, DataError> {
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::new(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| DataError::new(path, e.to_string()))
}

/// The run's cost from `finished.json` (`tokens`, `seconds`), where it records them for the
/// whole run: a run resumed after a kill (`resumed_at` > 0) recorded only its last part.
fn read_cost(path: &Path) -> Option<Cost> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    if v.get("resumed_at").and_then(Value::as_u64).unwrap_or(0) > 0 {
        return None;
    }
    let field = |k: &str| v.get(k).and_then(Value::as_f64).map(round4);
    let cost = Cost {
        tokens: field("tokens"),
        seconds: field("seconds"),
    };
    (cost.tokens.is_some() || cost.seconds.is_some()).then_some(cost)
}
