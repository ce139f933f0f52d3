//! [`TrainError`]: everything that stops a run, prepare, evaluation or export. The errors of
//! the crates below (model, data, anchors, objective) are kept whole, with their own words.
//! Messages name the file, key, step or data lines at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bapo_objective::Quantity;
use bapo_rundir::files::FINISHED_FILE;

use crate::backend::BackendError;
use crate::config::RunConfigError;
use crate::optimizer::OptimizerStateError;
use crate::params::ParameterError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    // What the crates below refused.
    #[error(transparent)]
    ConfigFile(#[from] RunConfigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Model(#[from] bapo_model::ModelError),
    #[error(transparent)]
    Lora(#[from] bapo_model::LoraError),
    #[error("generation")]
    Generate(#[from] bapo_model::GenerateError),
    #[error("batch")]
    Batch(#[from] bapo_model::BatchError),
    #[error(transparent)]
    Data(#[from] bapo_data::DataError),
    #[error(transparent)]
    Anchors(#[from] bapo_anchors::AnchorError),
    // Its messages begin "objective `name`: …" or name the `[objective]` table.
    #[error(transparent)]
    ObjectiveConfig(#[from] bapo_objective::ObjectiveConfigError),
    #[error("objective")]
    Objective(#[from] bapo_objective::ObjectiveError),
    #[error("reading a tensor back: {0:?}")]
    TensorData(burn::tensor::DataError),
    #[error("{}: {message}", .path.display())]
    Io { path: PathBuf, message: String },
    #[error(transparent)]
    Log(#[from] bapo_rundir::LogError),
    #[error(
        "{}: this cached evaluation before training cannot be used ({message}); delete the file to recompute it",
        .path.display()
    )]
    EvalCacheCorrupt { path: PathBuf, message: String },

    // The config against the objective, the model and the data.
    #[error(
        "the objective needs {needed} references, but `model.references` lists {listed} beyond the policy"
    )]
    TooFewReferences { needed: usize, listed: usize },
    #[error(
        "`training.lm_head_chunk_tokens` = {chunk}: the objective `{objective}` compares token-level distributions with the reference (token-level KL), which needs the policy's full logits; set it to 0 (gradient_checkpointing still saves the blocks' activations)"
    )]
    ChunkedHeadWithTokenKl { objective: String, chunk: usize },
    #[error("`data.user` = {user:?} has no rows in {} (users: {})", .path.display(), .users.join(", "))]
    UnknownUser {
        user: String,
        path: PathBuf,
        users: Vec<String>,
    },
    #[error("`eval.users` names {user:?}, who has no rows in {} (users: {})", .path.display(), .users.join(", "))]
    UnknownEvalUser {
        user: String,
        path: PathBuf,
        users: Vec<String>,
    },
    #[error(
        "all {} rows of `data.user` = {user:?} in {} were dropped: {} (see docs/data-format.md; `data.max_length` and `data.max_prompt_length` set the length budget)",
        .dropped.values().sum::<usize>(),
        .path.display(),
        counts(.dropped)
    )]
    UserRowsDropped {
        user: String,
        path: PathBuf,
        /// How many rows each reason dropped.
        dropped: BTreeMap<&'static str, usize>,
    },
    #[error(
        "`eval.knowledge_probe` = {:?}: no such file (the default, {:?}, is built in; \"\" skips the probe)",
        .0.display().to_string(),
        bapo_data::BUILT_IN_PROBE_PATH
    )]
    MissingKnowledgeProbe(PathBuf),
    #[error("no training examples left in {} after the user selection and split", .0.display())]
    NoTrainingExamples(PathBuf),
    #[error(
        "the objective asks for {asked} base responses per prompt (its `num_anchors`), more than {max}: each is generated, scored and cached"
    )]
    TooManyAnchors { asked: usize, max: usize },
    #[error("`lora.target` = {0:?} matches no weight of the model")]
    LoraMatchesNothing(String),
    #[error(
        "`lora.rank` = {rank} is more than the model's width ({width}): no adapted weight has a rank above it"
    )]
    LoraRankTooLarge { rank: usize, width: usize },
    #[error(
        "`{key}` = {value}: one optimizer step would take {per_step} examples, more than the {examples} training examples (`training.batch_size` × `training.gradient_accumulation_steps` ≤ the examples)"
    )]
    StepPastTheData {
        key: &'static str,
        value: usize,
        per_step: usize,
        examples: usize,
    },
    #[error(
        "`training.batch_size` × `training.gradient_accumulation_steps` ({batch_size} × {accumulation}) is too large"
    )]
    BatchTooLarge {
        batch_size: usize,
        accumulation: usize,
    },
    #[error(
        "`training.epochs` = {epochs}: {epochs} epochs of {examples} examples is more steps than can be counted"
    )]
    TooManyEpochs { epochs: usize, examples: usize },
    #[error(
        "{steps} steps of {per_step} examples is more example positions than can be counted; lower `training.max_steps` or `training.epochs`"
    )]
    TooManyPositions { steps: usize, per_step: usize },

    // The run directory and resuming.
    #[error(
        "{} already holds a run (metrics.jsonl): pass --resume to continue it, or choose another `output.dir`; nothing was overwritten",
        .0.display()
    )]
    RunExists(PathBuf),
    #[error(
        "`output.dir` {} is a folder that is not a bapo run (it has no `lock` file) and holds what a run would write over: {}; choose another `output.dir`; nothing was touched",
        .dir.display(),
        .entries.join(", ")
    )]
    NotARun { dir: PathBuf, entries: Vec<String> },
    #[error(
        "{} is in use by another bapo run (pid {holder}); wait for it or choose another `output.dir`; nothing was touched",
        .run.display()
    )]
    Locked { run: PathBuf, holder: String },
    #[error(
        "{} was made with another config ({}); resume with the same settings or choose another `output.dir`",
        .config.display(),
        .differences.join("; ")
    )]
    ResumeWithAnotherConfig {
        config: PathBuf,
        differences: Vec<String>,
    },
    #[error(
        "{}: this run's copy of its config cannot be read ({message}); it was edited or damaged: restore it, or choose another `output.dir`; nothing was touched",
        .config.display()
    )]
    RunConfigUnreadable { config: PathBuf, message: String },
    #[error(
        "`output.dir` {} is not a run (no config.toml): `eval --write` writes into a run's logs; train it first, or leave out --write",
        .0.display()
    )]
    NoRunToWrite(PathBuf),
    #[error(
        "{} was written with another config than this run's; it cannot be resumed or written into this run's logs (a checkpoint written before bapo let a resume change `data.path`, `anchors.cache_dir` or `anchors.decode_batch` needs their old values)",
        .0.display()
    )]
    CheckpointOfAnotherConfig(PathBuf),
    #[error(
        "{} already finished all {total_steps} steps and its end phase ({FINISHED_FILE}); nothing to resume",
        .run.display()
    )]
    AlreadyFinished { run: PathBuf, total_steps: usize },
    #[error(
        "`{key}` {} has changed since {} was written: it holds other bytes than that checkpoint was trained on (sha256 {then} then, {now} now); resume needs the same content, or start a new run",
        .path.display(),
        .checkpoint.display()
    )]
    InputChanged {
        key: &'static str,
        path: PathBuf,
        checkpoint: PathBuf,
        /// Short forms of the two hashes.
        then: String,
        now: String,
    },
    #[error(
        "`model.path` {} has changed since {} was written: its weights belong to another model",
        .path.display(),
        .checkpoint.display()
    )]
    ModelChanged { path: PathBuf, checkpoint: PathBuf },

    // Checkpoint files.
    #[error("no checkpoint under {}", .0.display())]
    NoCheckpoint(PathBuf),
    #[error("{}", .path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("{}: tensor `{name}` is {dtype:?}, expected F32", .path.display())]
    NotF32 {
        path: PathBuf,
        name: String,
        dtype: safetensors::Dtype,
    },
    #[error("{}", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{}: tensor `{name}` holds NaN or infinite values; the checkpoint cannot be resumed, evaluated or exported",
        .path.display()
    )]
    NonFiniteInCheckpoint { path: PathBuf, name: String },
    #[error(
        "{}: `step` is {recorded} but the folder is the checkpoint of step {folder_step}; the file was edited: restore it",
        .state.display()
    )]
    CheckpointStepMismatch {
        state: PathBuf,
        recorded: usize,
        folder_step: usize,
    },
    #[error(
        "the newest checkpoint {} cannot be used: {}; {}",
        .newest.display(),
        with_causes(.error.as_ref()),
        match intact {
            Some(dir) => format!("the older checkpoint {} reads whole: move {} out of the checkpoints folder to resume from it", dir.display(), .newest.display()),
            None => "no older checkpoint reads whole".to_string(),
        }
    )]
    DamagedCheckpoint {
        newest: PathBuf,
        error: Box<TrainError>,
        intact: Option<PathBuf>,
    },
    #[error("checkpoint {}", .checkpoint.display())]
    Parameters {
        checkpoint: PathBuf,
        #[source]
        source: ParameterError,
    },
    #[error("checkpoint {}", .checkpoint.display())]
    OptimizerState {
        checkpoint: PathBuf,
        #[source]
        source: OptimizerStateError,
    },

    // The step.
    #[error("objective: the objective needs the {0}, which this loop cannot provide")]
    UnsupportedQuantity(Quantity),
    #[error(
        "objective: the objective needs reference {index}, but only {configured} reference(s) are configured (`model.references` lists the extra ones)"
    )]
    MissingReference { index: usize, configured: usize },
    #[error("objective: token-level KL needs the live reference")]
    NoLiveReference,
    #[error("batch: the reference scored other tokens than the policy")]
    ReferenceMismatch,
    #[error(
        "step {step}: the {what} is not finite (NaN or infinite) on the batch of {data} lines {lines:?}; training stopped, {}",
        match checkpoint { Some(c) => format!("the last good checkpoint is {}", c.display()), None => "no checkpoint was written yet".to_string() }
    )]
    NonFinite {
        step: usize,
        what: String,
        data: PathBuf,
        lines: Vec<usize>,
        checkpoint: Option<PathBuf>,
    },
    #[error(
        "step {step}: the trained weight `{tensor}` holds NaN or infinite values; training stopped without writing its checkpoint; {}",
        match checkpoint { Some(c) => format!("the last good checkpoint is {}", c.display()), None => "there is no earlier checkpoint".to_string() }
    )]
    NonFiniteWeights {
        step: usize,
        tensor: String,
        checkpoint: Option<PathBuf>,
    },
    #[error("bench step {step}: the {what} is not finite")]
    BenchNonFinite { step: usize, what: &'static str },

    // Evaluation and export.
    #[error("evaluation")]
    EvalBatch(#[source] bapo_model::BatchError),
    #[error("evaluation: {set}")]
    EvalText {
        set: String,
        #[source]
        source: bapo_model::ModelError,
    },
    #[error("export: {} already exists; refusing to overwrite it", .0.display())]
    ExportExists(PathBuf),
    #[error("export: a PEFT adapter is exported for the Llama family only")]
    AdapterNeedsLlama,
}

/// `error` and each of its causes, joined by ": " (what anyhow's `{:#}` prints), for a
/// message that carries another error's words in its own text. Messages never repeat their
/// cause themselves: they name it as their source (issue #25).
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

impl TrainError {
    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
        TrainError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    pub(crate) fn json(path: &Path, source: serde_json::Error) -> TrainError {
        TrainError::Json {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn safetensors(path: &Path, source: safetensors::SafeTensorError) -> TrainError {
        TrainError::Safetensors {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `3 for <reason>, 1 for <reason>`.
fn counts(dropped: &BTreeMap<&'static str, usize>) -> String {
    dropped
        .iter()
        .map(|(reason, count)| format!("{count} for {reason}"))
        .collect::<Vec<_>>()
        .join(", ")
}
