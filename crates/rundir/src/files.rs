//! What a run directory holds, by name. The training loop writes these; the study, `bapo
//! export`, `bapo eval` and xtask read them.

use std::path::Path;

/// The resolved config the run was made with.
pub const CONFIG_FILE: &str = "config.toml";
/// One line per logged training step (TRL's metric names).
pub const METRICS_FILE: &str = "metrics.jsonl";
/// One line per evaluation: each metric's value.
pub const EVAL_FILE: &str = "eval.jsonl";
/// One line per evaluation: each metric's per-item values.
pub const EVAL_ITEMS_FILE: &str = "eval_items.jsonl";
/// What each evaluation item is (its cluster, chance level, flags), the same at every
/// evaluation of the run.
pub const ITEM_LABELS_FILE: &str = "eval_item_labels.json";
/// The checkpoints, one folder per saved step.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The end phase's table of the run.
pub const SUMMARY_FILE: &str = "summary.md";
/// The end phase's PNG curves.
pub const PLOTS_DIR: &str = "plots";
/// The trained model, in Hugging Face's layout.
pub const EXPORT_DIR: &str = "export";
/// TensorBoard's event files.
pub const TENSORBOARD_DIR: &str = "tensorboard";
/// In each checkpoint's folder, written last: a folder without it is not a checkpoint.
pub const CHECKPOINT_STATE_FILE: &str = "state.json";
/// In a study's run (a cell), what it was started with: the base config's fingerprint and
/// the `--set` overrides, so that the study refuses a run directory made otherwise.
pub const STUDY_OVERRIDES_FILE: &str = "study-overrides.txt";
/// The lock file (it holds the pid of the run that has it).
pub const LOCK_FILE: &str = "lock";
/// Written last, once the end phase (final evaluation, summary, plots, export) is done.
pub const FINISHED_FILE: &str = "finished.json";

/// What a run writes at the top of its directory. A folder holding any of them without
/// [`LOCK_FILE`] (made first by every run) is someone else's, and a run there would write over
/// it.
pub const RUN_ENTRIES: [&str; 13] = [
    CONFIG_FILE,
    "config.toml.partial",
    METRICS_FILE,
    EVAL_FILE,
    EVAL_ITEMS_FILE,
    ITEM_LABELS_FILE,
    CHECKPOINTS_DIR,
    SUMMARY_FILE,
    PLOTS_DIR,
    EXPORT_DIR,
    "export.partial",
    TENSORBOARD_DIR,
    FINISHED_FILE,
];

/// Whether the run in `dir` finished: its end phase is recorded. (A `summary.md` alone is not
/// enough: the end phase writes it before the plots, the export and `finished.json`.)
pub fn is_finished(dir: &Path) -> bool {
    dir.join(FINISHED_FILE).exists()
}
