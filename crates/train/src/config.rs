//! The run config: one TOML file (see `configs/` and `docs/training.md`), every key documented
//! here, unknown keys rejected, with `--set key=value` overrides applied before parsing.
//!
//! Relative paths are taken from the directory the command runs in (the repository root in
//! the README's commands), as TRL's and torchtune's command-line tools do.

use std::path::{Path, PathBuf};

use bapo_model::{BaseQuantization, Precision};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;

/// A config that cannot be used: the message names the file, the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum RunConfigError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{source_name}: `{key}`: {message}")]
    Key {
        source_name: String,
        key: String,
        message: String,
    },
    #[error("--set {arg:?}: {message}")]
    Override { arg: String, message: String },
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub data: DataSection,
    /// The `[objective]` table: `name` plus that objective's settings (see `bapo objectives`).
    /// Checked by the objective registry, which names any bad key as `objective.<key>`.
    pub objective: toml::Table,
    #[serde(default)]
    pub anchors: AnchorSection,
    #[serde(default)]
    pub training: TrainingSection,
    #[serde(default)]
    pub optimizer: OptimizerSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    #[serde(default)]
    pub lora: LoraSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    pub output: OutputSection,
}

/// `[model]`: the policy, which is also reference 0 (the model before training).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A GGUF file or a Hugging Face checkpoint folder (config.json, safetensors,
    /// tokenizer.json).
    pub path: PathBuf,
    /// Further references (MRPO's `ref_1`, …), same tokenizer as the policy.
    #[serde(default)]
    pub references: Vec<PathBuf>,
}

/// `[data]`: preference data in TRL's formats, in JSONL or Parquet (docs/data-format.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// A JSONL or Parquet file, or a Hugging Face dataset id (`owner/name[@revision]`).
    pub path: PathBuf,
    /// The split of a Hugging Face dataset to read. Written out only when not `train`, so
    /// that the resolved config (and the fingerprint of runs made before the key existed)
    /// stays the same.
    #[serde(skip_serializing_if = "is_train")]
    pub split: String,
    /// Train on this user's preferences only (the `user` field); evaluation covers every user.
    pub user: Option<String>,
    /// Share of entities held out for evaluation (a split by `entity`, never shared).
    pub test_fraction: f64,
    /// Seed of the split.
    pub split_seed: u64,
    /// Keep at most this many training examples (after the split), in file order.
    pub max_train_examples: Option<usize>,
    /// TRL's truncation: prompt + completion, and the prompt alone.
    pub max_length: usize,
    pub max_prompt_length: Option<usize>,
    /// Shuffle the training examples every epoch (from `training.seed`).
    pub shuffle: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            path: PathBuf::new(),
            split: "train".into(),
            user: None,
            test_fraction: 0.1,
            split_seed: 0,
            max_train_examples: None,
            max_length: 512,
            max_prompt_length: Some(256),
            shuffle: true,
        }
    }
}

/// `[anchors]`: base responses of the reference and its cached log-probs (docs/anchors.md):
/// the anchor crate's own settings (the sampling knobs among them), and how fast and where the
/// cache is made. Its keys are flat in the file; unknown ones are refused by
/// [`check_flattened_sections`], as serde cannot through `flatten`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnchorSection {
    /// `num_anchors` is the base responses per prompt at least: an objective that uses more
    /// gets its own count.
    #[serde(flatten)]
    pub settings: bapo_anchors::AnchorSettings,
    /// Rows the reference decodes together (continuous batching); a speed setting, not part
    /// of the cache fingerprint.
    pub decode_batch: usize,
    pub cache_dir: PathBuf,
}

impl Default for AnchorSection {
    /// The anchor crate's defaults (greedy, 128 new tokens, one anchor, chunks of 16).
    fn default() -> Self {
        AnchorSection {
            settings: bapo_anchors::AnchorSettings::default(),
            decode_batch: bapo_model::GenerationConfig::default().max_batch,
            cache_dir: PathBuf::from(".cache/anchors"),
        }
    }
}

impl AnchorSection {
    /// The generation and chunking settings, with `num_anchors` base responses per prompt (0:
    /// reference log-probs only).
    pub fn settings(&self, num_anchors: usize) -> bapo_anchors::AnchorSettings {
        bapo_anchors::AnchorSettings {
            num_anchors,
            ..self.settings.clone()
        }
    }
}

/// `[training]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    /// `cpu` (Flex, default), `tch-cpu`, `cuda`, `wgpu`, `wgpu-cpu` (docs/backends.md).
    pub backend: Backend,
    /// CUDA / GPU index for `cuda` and `wgpu`.
    pub device_index: usize,
    /// What the model computes in: `f32`, or `bf16` mixed precision (bf16 matrix products
    /// over f32 weights and optimizer state; norms, softmax, log-probs and the loss in f32, as
    /// under `torch.autocast`). Not on `wgpu`, whose shaders have no bf16.
    pub precision: Precision,
    pub seed: u64,
    /// Examples per micro-batch (each is 2–3 sequences: chosen, rejected, base).
    pub batch_size: usize,
    /// Micro-batches per optimizer step; the loss is normalised by the global example count.
    pub gradient_accumulation_steps: usize,
    /// Global-norm clipping (PyTorch's `clip_grad_norm_`); 0 turns it off.
    pub max_grad_norm: f64,
    /// Stop after this many optimizer steps (takes precedence over `epochs`).
    pub max_steps: Option<usize>,
    pub epochs: usize,
    /// Log metrics every this many steps.
    pub logging_steps: usize,
    /// Score all responses of an example in one row with the prompt computed once (prefix
    /// sharing; evaluation and anchor scoring always do). `false` gives every response its own
    /// `prompt + response` row: the same numbers to float rounding, more work.
    pub share_prompts: bool,
    /// Activation recomputation per decoder block (TRL's `gradient_checkpointing`): the
    /// forward keeps each block's input only and the backward recomputes the block. Less
    /// memory, about one more forward of time; the same gradients to float rounding.
    #[serde(skip_serializing_if = "is_false")]
    pub gradient_checkpointing: bool,
    /// Run the LM head and log-softmax this many scored tokens at a time, forward and
    /// backward, so that at most `chunk × vocabulary` logits exist at once; 0 (the default)
    /// runs them all at once. Not with token-level KL, which needs the full logits.
    #[serde(skip_serializing_if = "is_zero")]
    pub lm_head_chunk_tokens: usize,
    /// With `gradient_checkpointing`, the backward recomputes each block for this many rows
    /// (sequences) of the micro-batch at a time, so that one block's activations for that
    /// many rows, not for all of them, exist at once; 0 (the default) recomputes all rows at
    /// once. The same gradients to float rounding.
    #[serde(skip_serializing_if = "is_zero")]
    pub recompute_chunk_rows: usize,
}

// Keys added after runs were made are written only when set, so that an earlier run's
// config, read and written again, stays the text its fingerprint was taken of.
fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

impl TrainingSection {
    /// The memory saving `gradient_checkpointing`, `recompute_chunk_rows` and
    /// `lm_head_chunk_tokens` ask for.
    pub fn memory_saving(&self) -> crate::step::MemorySaving {
        crate::step::MemorySaving {
            gradient_checkpointing: self.gradient_checkpointing,
            lm_head_chunk_tokens: self.lm_head_chunk_tokens,
            recompute_chunk_rows: self.recompute_chunk_rows,
        }
    }

    /// The batch layout `share_prompts` asks for.
    pub fn packing(&self) -> bapo_data::Packing {
        if self.share_prompts {
            bapo_data::Packing::SharedPrompt
        } else {
            bapo_data::Packing::Unshared
        }
    }
}

impl Default for TrainingSection {
    fn default() -> Self {
        TrainingSection {
            backend: Backend::Cpu,
            device_index: 0,
            precision: Precision::F32,
            seed: 0,
            batch_size: 4,
            gradient_accumulation_steps: 1,
            max_grad_norm: 1.0,
            max_steps: None,
            epochs: 1,
            logging_steps: 1,
            share_prompts: true,
            gradient_checkpointing: false,
            lm_head_chunk_tokens: 0,
            recompute_chunk_rows: 0,
        }
    }
}

/// `[optimizer]`: AdamW with PyTorch's defaults (`torch.optim.AdamW`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerSection {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for OptimizerSection {
    fn default() -> Self {
        OptimizerSection {
            learning_rate: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Learning-rate decay after the warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Cosine,
    Linear,
    Constant,
}

/// `[schedule]`: linear warmup from 0, then decay to 0 at the last step (transformers'
/// `get_cosine_schedule_with_warmup` / `get_linear_schedule_with_warmup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    pub kind: ScheduleKind,
    pub warmup_steps: usize,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection {
            kind: ScheduleKind::Cosine,
            warmup_steps: 0,
        }
    }
}

/// `[lora]`: adapters (PEFT's convention) or, with `enabled = false`, full fine-tuning. Its
/// keys are flat in the file, as `[anchors]`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraSection {
    pub enabled: bool,
    /// Rank, α and the target pattern (a regular expression over parameter paths such as
    /// `layers.3.attention.q_proj.weight`).
    #[serde(flatten)]
    pub settings: bapo_model::LoraSettings,
    /// What the frozen base's matrices are held in: `f32`, or `bf16` (half the memory; with
    /// `training.precision = "bf16"` only). The adapters and their optimizer state are f32.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub base_dtype: Precision,
    /// `none`, `q8` or `q4`: the frozen base's block projections held quantized (blocks of
    /// 32 inputs with an f32 scale each), dequantised one projection at a time
    /// (`bapo_model::quantized`); `cpu` backend only, f32 compute.
    #[serde(skip_serializing_if = "BaseQuantization::is_none")]
    pub base_quantization: BaseQuantization,
}

impl Default for LoraSection {
    fn default() -> Self {
        LoraSection {
            enabled: true,
            settings: bapo_model::LoraSettings::default(),
            base_dtype: Precision::F32,
            base_quantization: BaseQuantization::None,
        }
    }
}

impl LoraSection {
    /// The section with every key written out (the default leaves `init`, `base_dtype` and
    /// `base_quantization` out), for the check of known keys.
    fn with_every_key() -> Self {
        LoraSection {
            settings: bapo_model::LoraSettings {
                init: bapo_model::LoraInit::KaimingUniform,
                ..bapo_model::LoraSettings::default()
            },
            base_dtype: Precision::Bf16,
            base_quantization: BaseQuantization::Q8,
            ..LoraSection::default()
        }
    }
}

/// `[eval]`: personalisation and forgetting (docs/evaluation.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluate every this many steps (0: only at the start and the end).
    pub interval: usize,
    /// Evaluate before the first step.
    pub at_start: bool,
    /// Held-out preference examples per user.
    pub examples_per_user: usize,
    /// The users whose held-out pairs are evaluated (empty: every user; the trained user is
    /// always evaluated).
    pub users: Vec<String>,
    /// The BIG-bench task folder (`cargo xtask fetch` puts it there); empty skips knowledge.
    pub bigbench_dir: PathBuf,
    /// Items of each knowledge set (0 skips the set).
    pub hhh_alignment: usize,
    pub general_knowledge: usize,
    pub misconceptions: usize,
    pub facts: usize,
    /// The country-knowledge probe (`cargo xtask data` writes it); empty skips it.
    pub knowledge_probe: PathBuf,
    /// Probe items to score, spread over the file, none about a country the run trains on
    /// (0 skips the probe).
    pub country_facts: usize,
    /// The policy answers every held-out prompt (greedy, at most this many new tokens) and
    /// fixed rules score the answers' style and fact (`answer/…`, docs/evaluation.md); 0
    /// skips it.
    pub answer_tokens: usize,
    /// Prompts per evaluation forward, each with all its responses (a preference example's
    /// chosen, rejected and base response; a question's choices) after it, computed once.
    pub batch_size: usize,
    /// Token positions per evaluation forward once rows are padded to the longest (a longer
    /// row goes alone).
    pub batch_tokens: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            interval: 0,
            at_start: true,
            examples_per_user: 32,
            users: Vec::new(),
            bigbench_dir: PathBuf::from(".cache/assets/bigbench"),
            hhh_alignment: 64,
            general_knowledge: 70,
            misconceptions: 64,
            facts: 64,
            knowledge_probe: PathBuf::from("data/personalised/knowledge.jsonl"),
            country_facts: 300,
            answer_tokens: 0,
            batch_size: 16,
            batch_tokens: 2048,
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Write a checkpoint every this many steps (0: only at the end).
    pub interval: usize,
    /// Checkpoints kept (the oldest are removed; the last good one always stays).
    pub keep: usize,
    /// Export at the end: a PEFT adapter (LoRA) or a transformers checkpoint (full).
    pub export: bool,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            interval: 0,
            keep: 2,
            export: true,
        }
    }
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// The run directory: metrics, config copy, checkpoints, plots, export.
    pub dir: PathBuf,
    /// TensorBoard event files in `<dir>/tensorboard/` (TRL's tags). Written out only when
    /// off, so that the resolved config (and the fingerprint of runs made before the key
    /// existed) stays the same.
    #[serde(default = "enabled", skip_serializing_if = "is_enabled")]
    pub tensorboard: bool,
}

fn is_train(split: &str) -> bool {
    split == "train"
}

fn enabled() -> bool {
    true
}

fn is_enabled(on: &bool) -> bool {
    *on
}

impl RunConfig {
    /// The batching limits of an evaluation forward (`eval.batch_size`, `eval.batch_tokens`),
    /// its LM head run as training runs it (`training.lm_head_chunk_tokens`): a run whose
    /// training fits in memory because the head is chunked must not run out in its
    /// evaluation.
    pub fn eval_limits(&self) -> crate::eval::BatchLimits {
        crate::eval::BatchLimits {
            rows: self.eval.batch_size,
            tokens: self.eval.batch_tokens,
            head_chunk_tokens: self.training.lm_head_chunk_tokens,
        }
    }

    /// Reads `path`, applies `overrides` (`key=value`, dotted keys, TOML values; a bare word is
    /// a string) and checks every key and value.
    pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig, RunConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| RunConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// [`RunConfig::load`] from text; `source_name` names it in errors.
    pub fn from_toml(
        text: &str,
        source_name: &str,
        overrides: &[String],
    ) -> Result<RunConfig, RunConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| RunConfigError::Syntax {
                    path: PathBuf::from(source_name),
                    message: e.to_string(),
                })?;
        for arg in overrides {
            apply_override(&mut table, arg)?;
        }
        check_flattened_sections(&table, source_name)?;
        let config: RunConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| key_error(source_name, "", e))?;
        config.validate(source_name)?;
        Ok(config)
    }

    /// The resolved config as TOML (written next to the run's metrics).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Every value in its range, named by its key when not.
    fn validate(&self, source_name: &str) -> Result<(), RunConfigError> {
        let check = Checker { source_name };
        check.paths(self)?;
        check.data(&self.data)?;
        if !self.objective.contains_key("name") {
            return Err(check.bad(
                "objective.name",
                "missing: which objective to train (see `bapo objectives`)".into(),
            ));
        }
        check.anchors(&self.anchors)?;
        check.training(&self.training)?;
        check.optimizer(&self.optimizer)?;
        check.lora(&self.lora)?;
        check.precision(&self.training, &self.lora)?;
        check.base_quantization(&self.training, &self.lora)?;
        check.at_least_one("eval.batch_size", self.eval.batch_size)?;
        check.at_least_one("eval.batch_tokens", self.eval.batch_tokens)?;
        check.at_least_one("checkpoint.keep", self.checkpoint.keep)
    }
}

/// The most base responses per prompt a run may ask for: each is generated, scored and kept,
/// and a number far past it is a typo that would only allocate (issue #26: 1e9 aborted).
pub(crate) const MAX_ANCHORS: usize = 64;

/// The range checks of [`RunConfig::validate`], each error naming the file and the key.
struct Checker<'a> {
    source_name: &'a str,
}

impl Checker<'_> {
    fn bad(&self, key: &str, message: String) -> RunConfigError {
        RunConfigError::Key {
            source_name: self.source_name.to_string(),
            key: key.to_string(),
            message,
        }
    }

    fn positive(&self, key: &str, v: f64) -> Result<(), RunConfigError> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(self.bad(key, format!("{v} must be a finite number > 0")))
        }
    }

    fn at_least_one(&self, key: &str, v: usize) -> Result<(), RunConfigError> {
        if v >= 1 {
            Ok(())
        } else {
            Err(self.bad(key, "0 must be at least 1".into()))
        }
    }

    /// The paths a run cannot do without.
    fn paths(&self, config: &RunConfig) -> Result<(), RunConfigError> {
        if config.model.path.as_os_str().is_empty() {
            return Err(self.bad("model.path", "missing: a GGUF file or HF folder".into()));
        }
        if config.data.path.as_os_str().is_empty() {
            return Err(self.bad(
                "data.path",
                "missing: a JSONL or Parquet preference file, or a Hugging Face dataset id".into(),
            ));
        }
        if config.output.dir.as_os_str().is_empty() {
            return Err(self.bad("output.dir", "missing: where the run is written".into()));
        }
        Ok(())
    }

    fn data(&self, data: &DataSection) -> Result<(), RunConfigError> {
        if !bapo_model::hub::is_ref_name(&data.split) {
            return Err(self.bad(
                "data.split",
                format!("{:?} is not a split name (e.g. \"train\")", data.split),
            ));
        }
        if !(data.test_fraction >= 0.0 && data.test_fraction < 1.0) {
            return Err(self.bad(
                "data.test_fraction",
                format!("{} must be in [0, 1)", data.test_fraction),
            ));
        }
        self.at_least_one("data.max_length", data.max_length)?;
        if let Some(p) = data.max_prompt_length
            && (p == 0 || p >= data.max_length)
        {
            return Err(self.bad(
                "data.max_prompt_length",
                format!("{p} must be in [1, data.max_length = {})", data.max_length),
            ));
        }
        if data.max_train_examples == Some(0) {
            return Err(self.bad("data.max_train_examples", "0 must be at least 1".into()));
        }
        Ok(())
    }

    fn anchors(&self, anchors: &AnchorSection) -> Result<(), RunConfigError> {
        let s = &anchors.settings;
        self.at_least_one("anchors.chunk_size", s.chunk_size)?;
        self.at_least_one("anchors.decode_batch", anchors.decode_batch)?;
        self.at_least_one("anchors.max_new_tokens", s.max_new_tokens)?;
        self.at_least_one("anchors.num_anchors", s.num_anchors)?;
        if s.num_anchors > MAX_ANCHORS {
            return Err(self.bad(
                "anchors.num_anchors",
                format!(
                    "{} is more than {MAX_ANCHORS} base responses per prompt (each is generated, scored and cached; BAPO uses 1)",
                    s.num_anchors
                ),
            ));
        }
        s.sampling.check().map_err(|e| {
            let key = match e {
                bapo_model::GenerateError::TopP(_) => "anchors.top_p",
                _ => "anchors.temperature",
            };
            self.bad(key, e.to_string())
        })
    }

    fn training(&self, t: &TrainingSection) -> Result<(), RunConfigError> {
        self.at_least_one("training.batch_size", t.batch_size)?;
        self.at_least_one(
            "training.gradient_accumulation_steps",
            t.gradient_accumulation_steps,
        )?;
        if !(t.max_grad_norm.is_finite() && t.max_grad_norm >= 0.0) {
            return Err(self.bad(
                "training.max_grad_norm",
                format!("{} must be >= 0 (0: no clipping)", t.max_grad_norm),
            ));
        }
        if t.max_steps == Some(0) {
            return Err(self.bad("training.max_steps", "0 must be at least 1".into()));
        }
        if t.recompute_chunk_rows > 0 && !t.gradient_checkpointing {
            return Err(self.bad(
                "training.recompute_chunk_rows",
                format!(
                    "{} needs training.gradient_checkpointing = true (it says how many rows the \
                     recomputing backward runs at a time)",
                    t.recompute_chunk_rows
                ),
            ));
        }
        self.at_least_one("training.epochs", t.epochs)?;
        self.at_least_one("training.logging_steps", t.logging_steps)
    }

    fn optimizer(&self, o: &OptimizerSection) -> Result<(), RunConfigError> {
        self.positive("optimizer.learning_rate", o.learning_rate)?;
        for (key, v) in [("optimizer.beta1", o.beta1), ("optimizer.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(self.bad(key, format!("{v} must be in [0, 1)")));
            }
        }
        self.positive("optimizer.eps", o.eps)?;
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(self.bad(
                "optimizer.weight_decay",
                format!("{} must be >= 0", o.weight_decay),
            ));
        }
        Ok(())
    }

    /// bf16 where the backend has it, and a bf16 base only under LoRA with bf16 compute.
    fn precision(&self, t: &TrainingSection, lora: &LoraSection) -> Result<(), RunConfigError> {
        if t.precision == Precision::Bf16 && matches!(t.backend, Backend::Wgpu | Backend::WgpuCpu) {
            return Err(self.bad(
                "training.precision",
                format!(
                    "bf16 is not available on backend `{}`: WGSL shaders have no bf16 type. \
                     bf16 runs on `cpu`, `tch-cpu` and `cuda`; on `{}` use precision \"f32\"",
                    t.backend, t.backend
                ),
            ));
        }
        if lora.base_dtype == Precision::Bf16 {
            if !lora.enabled {
                return Err(self.bad(
                    "lora.base_dtype",
                    "bf16 holds a frozen LoRA base; with lora.enabled = false every weight \
                     is trained and its master copy stays f32 (training.precision = \"bf16\" \
                     computes in bf16)"
                        .into(),
                ));
            }
            if t.precision != Precision::Bf16 {
                return Err(self.bad(
                    "lora.base_dtype",
                    "a bf16 base needs training.precision = \"bf16\": in f32 every product \
                     would widen the base again"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// A quantized base: under LoRA, computed in f32, on the backend that has quantized
    /// tensors.
    fn base_quantization(
        &self,
        t: &TrainingSection,
        lora: &LoraSection,
    ) -> Result<(), RunConfigError> {
        if lora.base_quantization.is_none() {
            return Ok(());
        }
        let refuse = |why: String| Err(self.bad("lora.base_quantization", why));
        if !lora.enabled {
            return refuse(
                "a quantized base is a frozen LoRA base; with lora.enabled = false every weight \
                 is trained in f32"
                    .into(),
            );
        }
        if lora.base_dtype != Precision::F32 || t.precision != Precision::F32 {
            return refuse(
                "a quantized base is dequantised to f32 where it is used: leave \
                 lora.base_dtype and training.precision at \"f32\""
                    .into(),
            );
        }
        // The tables stay frozen: a GGUF file's are held in its own blocks (bapo_model::
        // file_tables), which have no parameter to adapt.
        if let Ok(group) = lora.settings.check() {
            let id = burn::module::ParamId::new();
            if let Some(table) = ["embed_tokens.weight", "lm_head.weight"]
                .into_iter()
                .find(|path| group.matches(&id, Some(path)))
            {
                return Err(self.bad(
                    "lora.target",
                    format!(
                        "`{}` matches `{table}`: with lora.base_quantization the token \
                         embedding and the LM head stay frozen; target the blocks' projections",
                        lora.settings.target
                    ),
                ));
            }
        }
        // wgpu: cubecl 0.11 quantizes only in blocks along a tensor's last dimension, and
        // with the weight transposed to make them so, a LoRA step at Qwen2.5-1.5B's shape
        // panicked inside cubecl on an H200 (docs/performance.md, the third lease).
        if t.backend != Backend::Cpu && lora.base_quantization == BaseQuantization::Gguf {
            return refuse(format!(
                "`gguf` dequantises each projection on the host where it meets an input, which \
                 has been tried on backend \"cpu\" only, not on `{}`",
                t.backend
            ));
        }
        if t.backend != Backend::Cpu {
            return refuse(format!(
                "backend `{}` cannot hold a quantized base (burn-tch implements no quantized \
                 operation; on the wgpu backends cubecl's quantized kernels failed at real \
                 model sizes): use backend \"cpu\", or lora.base_dtype = \"bf16\" on `{}`",
                t.backend, t.backend
            ));
        }
        Ok(())
    }

    /// LoRA's settings, checked before any model is loaded.
    fn lora(&self, lora: &LoraSection) -> Result<(), RunConfigError> {
        if !lora.enabled {
            return Ok(());
        }
        lora.settings.check().map(|_| ()).map_err(|e| {
            let key = match e {
                bapo_model::LoraError::Rank => "lora.rank",
                bapo_model::LoraError::Alpha(_) => "lora.alpha",
                bapo_model::LoraError::Target { .. } => "lora.target",
            };
            self.bad(key, e.to_string())
        })
    }
}

/// serde's error at `path` (under `prefix`, the section a part was read from), as the
/// config's error: the key, and serde's words without Rust type names.
fn key_error(
    source_name: &str,
    prefix: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
) -> RunConfigError {
    let path = e.path().to_string();
    let key = match (prefix, path.as_str()) {
        ("", ".") => "(top level)".to_string(),
        ("", _) => path,
        (_, ".") => prefix.to_string(),
        _ => format!("{prefix}.{path}"),
    };
    RunConfigError::Key {
        source_name: source_name.to_string(),
        key,
        message: bapo_objective::plain_serde_message(e.into_inner().message()),
    }
}

/// `[anchors]` and `[lora]` flatten the library's settings types into their keys, and
/// through `#[serde(flatten)]` serde neither refuses an unknown key nor names the key of a
/// value of the wrong type. Both are done here, before the config is read: each section's
/// keys against those its default writes out (it writes every field), then each flattened
/// part read on its own, innermost first.
fn check_flattened_sections(table: &toml::Table, source_name: &str) -> Result<(), RunConfigError> {
    if let Some(anchors) = table.get("anchors") {
        check_known_keys("anchors", anchors, &AnchorSection::default(), source_name)?;
        read_part::<bapo_model::Sampling>("anchors", anchors, source_name)?;
        read_part::<bapo_anchors::AnchorSettings>("anchors", anchors, source_name)?;
    }
    if let Some(lora) = table.get("lora") {
        check_known_keys("lora", lora, &LoraSection::with_every_key(), source_name)?;
        read_part::<bapo_model::LoraSettings>("lora", lora, source_name)?;
    }
    Ok(())
}

/// Refuses a key of `section` (when it is a table) that `default` does not write.
fn check_known_keys<T: Serialize>(
    section: &str,
    value: &toml::Value,
    default: &T,
    source_name: &str,
) -> Result<(), RunConfigError> {
    let (toml::Value::Table(given), Ok(toml::Value::Table(known))) =
        (value, toml::Value::try_from(default))
    else {
        return Ok(());
    };
    match given.keys().find(|k| !known.contains_key(*k)) {
        None => Ok(()),
        Some(unknown) => Err(RunConfigError::Key {
            source_name: source_name.to_string(),
            key: format!("{section}.{unknown}"),
            message: format!(
                "unknown field `{unknown}`, expected one of {}",
                known
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Reads the part `T` of `section` alone, for an error that names its key.
fn read_part<T: serde::de::DeserializeOwned>(
    section: &str,
    value: &toml::Value,
    source_name: &str,
) -> Result<(), RunConfigError> {
    if !value.is_table() {
        return Ok(());
    }
    serde_path_to_error::deserialize::<_, T>(value.clone())
        .map(|_| ())
        .map_err(|e| key_error(source_name, section, e))
}

/// Sets `key` (dotted) to `value` in `table`.
fn apply_override(table: &mut toml::Table, arg: &str) -> Result<(), RunConfigError> {
    let fail = |message: String| RunConfigError::Override {
        arg: arg.to_string(),
        message,
    };
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| fail("expected key=value, e.g. training.max_steps=10".into()))?;
    let key = key.trim();
    let value = value.trim();
    // A TOML value (`10`, `1e-4`, `true`, `"text"`, `[1, 2]`); anything else is a string,
    // except a number TOML cannot hold, which would otherwise be reported as a string.
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    let digits = value.trim_start_matches(['+', '-']);
    if parsed.is_none()
        && !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return Err(fail(format!(
            "`{value}` is an integer too large for a config value (at most {})",
            i64::MAX
        )));
    }
    let value = parsed.unwrap_or_else(|| toml::Value::String(value.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(fail(format!("`{key}` is not a dotted key")));
    }
    let (last, sections) = parts.split_last().ok_or_else(|| fail("empty key".into()))?;
    let mut current = table;
    for (i, part) in sections.iter().enumerate() {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            fail(format!(
                "`{}` is a value, not a table",
                parts[..=i].join(".")
            ))
        })?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}
