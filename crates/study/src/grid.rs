//! Running the study's grid: every cell that is not finished, in the plan's order, each one
//! `bapo train` in its own run directory.
//!
//! A finished cell (its end phase recorded in `finished.json`, the end phase's last write) is
//! skipped, and so is a cell recorded in the data file of earlier sittings (the full study
//! keeps its runs in docs/study/data.json, since a machine may not keep runs/); a killed one is resumed from its last checkpoint (`bapo train --resume`, which
//! also finishes a run killed in its end phase, after its `summary.md` or not), or started
//! over when it had none. So the
//! study can be stopped at any moment and started again with the same command. A cell whose
//! recorded overrides differ from the plan's is refused, in its directory or in the data
//! file, so an edited config never mixes with old runs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bapo_rundir::files::{
    CHECKPOINT_STATE_FILE, CHECKPOINTS_DIR, STUDY_OVERRIDES_FILE, is_finished,
};

use crate::data::StudyData;
use crate::plan::{Cell, Plan, PlanError, base_fingerprint, run_record};

/// Why the grid stopped or failed.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error(
        "{dir} was made with other settings than the study config gives now; remove it to rerun it\nrecorded:\n{recorded}\nnow:\n{wanted}"
    )]
    Changed {
        dir: String,
        recorded: String,
        wanted: String,
    },
    #[error(
        "{cell} is recorded in the study's data file with other settings than the study config gives now; remove its line from the data file to rerun it\nrecorded:\n{recorded}\nnow:\n{wanted}"
    )]
    RecordedChanged {
        cell: String,
        recorded: String,
        wanted: String,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{} runs failed (rerun the same command to retry them):\n{}", .0.len(), .0.join("\n"))]
    Failed(Vec<String>),
}

/// The programs a grid runs: `bapo`, which has the built-in objectives, and for an objective
/// that is not built in, its crate's own `bapo-<objective>` (docs/adding-an-objective.md).
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `bapo`, for every cell whose objective has no binary of its own.
    pub bapo: PathBuf,
    /// Objective name → the binary with that objective linked.
    pub by_objective: BTreeMap<String, PathBuf>,
}

impl Binaries {
    /// `bapo` alone.
    pub fn bapo(binary: &Path) -> Binaries {
        Binaries {
            bapo: binary.to_path_buf(),
            by_objective: BTreeMap::new(),
        }
    }

    /// The binary that trains `objective`.
    pub fn for_objective(&self, objective: &str) -> &Path {
        self.by_objective.get(objective).unwrap_or(&self.bapo)
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> GridError {
    GridError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What a grid run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GridOutcome {
    /// The run directories trained (fully or from a checkpoint), in order.
    pub ran: Vec<PathBuf>,
    /// Those resumed from a checkpoint.
    pub resumed: Vec<PathBuf>,
    /// Finished cells left alone.
    pub skipped: Vec<PathBuf>,
}

/// Runs every cell that is neither finished nor in `recorded` (the data of earlier sittings;
/// empty for none), in the plan's order, and calls `after_run` after each run that finished.
/// Each cell runs its objective's binary of `binaries` with `env`; its output goes to
/// `<dir>/logs/<cell>.log`.
pub fn run_grid(
    root: &Path,
    plan: &Plan,
    binaries: &Binaries,
    env: &[(String, OsString)],
    recorded: &StudyData,
    mut after_run: impl FnMut() -> Result<(), GridError>,
) -> Result<GridOutcome, GridError> {
    let logs = root.join(&plan.dir).join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| io(&logs, e))?;
    let base = base_fingerprint(root, &plan.base)?;
    let mut outcome = GridOutcome::default();

    let total = plan.cells.len();
    let started = Instant::now();
    let mut ran = 0usize;
    let mut failed = Vec::new();
    for (index, cell) in plan.cells.iter().enumerate() {
        let dir = root.join(&cell.dir);
        let state = CellState::of(&dir, cell, &base, recorded)?;
        let label = format!(
            "[{}/{total}] {} on {}, seed {}",
            index + 1,
            cell.setting,
            cell.user,
            cell.seed
        );
        if matches!(state, CellState::Finished | CellState::Recorded) {
            eprintln!("{label}: {}, skipped", state.describe());
            outcome.skipped.push(cell.dir.clone());
            continue;
        }
        let remaining = total - index;
        let left =
            (ran > 0).then(|| started.elapsed().as_secs_f64() / ran as f64 * remaining as f64);
        eprintln!(
            "{label}: {}; {} elapsed{}",
            state.describe(),
            minutes(started.elapsed().as_secs_f64()),
            left.map(|s| format!(", about {} left", minutes(s)))
                .unwrap_or_default()
        );
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let record = dir.join(STUDY_OVERRIDES_FILE);
        std::fs::write(&record, run_record(&base, &cell.overrides)).map_err(|e| io(&record, e))?;
        let log = logs.join(format!("{}.log", file_name(&cell.dir)));
        // `--resume` also restarts a run killed before its first checkpoint: it starts again
        // from step 0 with fresh logs, and nothing is deleted here.
        let resume = matches!(state, CellState::Resume | CellState::Restart);
        let binary = binaries.for_objective(&cell.objective);
        let ok = run_cell(root, binary, env, plan, cell, resume, &log)?;
        ran += 1;
        outcome.ran.push(cell.dir.clone());
        if state == CellState::Resume {
            outcome.resumed.push(cell.dir.clone());
        }
        if !ok {
            eprintln!("{label}: failed; its log: {}", log.display());
            eprintln!("{}", tail(&log, 15));
            failed.push(label);
        } else {
            after_run()?;
        }
    }
    eprintln!(
        "grid done in {} ({ran} runs made, {} skipped)",
        minutes(started.elapsed().as_secs_f64()),
        total - ran
    );
    if !failed.is_empty() {
        return Err(GridError::Failed(failed));
    }
    Ok(outcome)
}

/// Where a cell stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    /// Its end phase is recorded (`finished.json`).
    Finished,
    /// Not finished here, but its run is in the data file of earlier sittings.
    Recorded,
    /// A checkpoint: resume from it (the end phase only, when it is the last step's).
    Resume,
    /// Killed before its first checkpoint: start over (`--resume` does, with fresh logs).
    Restart,
    /// No run directory yet.
    New,
}

impl CellState {
    /// The state of `cell`, whose run directory is `dir`, made from the base config whose
    /// fingerprint is `base`; `recorded` holds the runs of earlier sittings.
    pub fn of(
        dir: &Path,
        cell: &Cell,
        base: &str,
        recorded: &StudyData,
    ) -> Result<CellState, GridError> {
        let wanted = run_record(base, &cell.overrides);
        if let Some(run) = recorded.recorded_otherwise(cell, base) {
            return Err(GridError::RecordedChanged {
                cell: cell.dir.display().to_string(),
                recorded: run.record(),
                wanted,
            });
        }
        if !dir.exists() {
            return Ok(if recorded.recorded(cell, base).is_some() {
                CellState::Recorded
            } else {
                CellState::New
            });
        }
        let made_with = std::fs::read_to_string(dir.join(STUDY_OVERRIDES_FILE)).unwrap_or_default();
        if !made_with.is_empty() && made_with != wanted {
            return Err(GridError::Changed {
                dir: dir.display().to_string(),
                recorded: made_with,
                wanted,
            });
        }
        if is_finished(dir) {
            return Ok(CellState::Finished);
        }
        if recorded.recorded(cell, base).is_some() {
            return Ok(CellState::Recorded);
        }
        let checkpoints = dir.join(CHECKPOINTS_DIR);
        let checkpointed = std::fs::read_dir(&checkpoints)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().join(CHECKPOINT_STATE_FILE).exists())
                    .count()
            })
            .unwrap_or(0);
        // From any checkpoint, the last one included: `bapo train --resume` finishes a run
        // killed in its end phase.
        Ok(if checkpointed == 0 {
            CellState::Restart
        } else {
            CellState::Resume
        })
    }

    pub fn describe(self) -> &'static str {
        match self {
            CellState::Finished => "finished",
            CellState::Recorded => "recorded by an earlier sitting",
            CellState::Resume => "resuming from its last checkpoint",
            CellState::Restart => "starting over (killed before its first checkpoint)",
            CellState::New => "starting",
        }
    }
}

fn run_cell(
    root: &Path,
    binary: &Path,
    env: &[(String, OsString)],
    plan: &Plan,
    cell: &Cell,
    resume: bool,
    log: &Path,
) -> Result<bool, GridError> {
    let file = std::fs::File::create(log).map_err(|e| io(log, e))?;
    let copy = file.try_clone().map_err(|e| io(log, e))?;
    let mut command = Command::new(binary);
    command
        .arg("train")
        .arg("--config")
        .arg(root.join(&plan.base));
    for o in &cell.overrides {
        command.args(["--set", o]);
    }
    if resume {
        command.arg("--resume");
    }
    command
        .arg("--quiet")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .stdout(copy)
        .stderr(file);
    let status = command.status().map_err(|e| io(binary, e))?;
    Ok(status.success())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn minutes(seconds: f64) -> String {
    format!(
        "{}m{:02}s",
        (seconds / 60.0) as u64,
        (seconds % 60.0) as u64
    )
}
