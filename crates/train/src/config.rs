//! The run config: one TOML file (see `configs/` and `docs/training.md`), every key documented
//! here, unknown keys rejected, with `--set key=value` overrides applied before parsing.
//!
//! Relative paths are taken from the directory the command runs in (the repository root in
//! the README's commands), as TRL's and torchtune's command-line tools do.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::Backend;

/// A config that cannot be used: the message names the file, the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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

/// `[data]`: preference data in TRL's JSONL formats (docs/data-format.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    pub path: PathBuf,
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

/// `[anchors]`: base responses of the reference and its cached log-probs (docs/anchors.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnchorSection {
    pub max_new_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub seed: u64,
    /// Base responses per prompt, for objectives that use them (BAPO's `num_anchors` must
    /// match).
    pub num_anchors: usize,
    /// Examples per cache chunk.
    pub chunk_size: usize,
    /// Rows the reference decodes together (continuous batching); a speed setting, not part
    /// of the cache fingerprint.
    pub decode_batch: usize,
    pub cache_dir: PathBuf,
}

impl Default for AnchorSection {
    /// The anchor crate's defaults (greedy, 128 new tokens, one anchor, chunks of 16).
    fn default() -> Self {
        let d = bapo_anchors::AnchorSettings::default();
        AnchorSection {
            max_new_tokens: d.max_new_tokens,
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            seed: d.seed,
            num_anchors: d.num_anchors,
            chunk_size: d.chunk_size,
            decode_batch: d.decode_batch,
            cache_dir: PathBuf::from(".cache/anchors"),
        }
    }
}

impl AnchorSection {
    /// The generation and chunking settings, with `num_anchors` base responses per prompt (0:
    /// reference log-probs only).
    pub fn settings(&self, num_anchors: usize) -> bapo_anchors::AnchorSettings {
        bapo_anchors::AnchorSettings {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            num_anchors,
            chunk_size: self.chunk_size,
            decode_batch: self.decode_batch,
        }
    }
}

/// `[training]`.
/// `training.precision`: only f32, on every backend (the cross-backend agreement is measured
/// in f32, docs/backends.md); another value is refused when the config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightPrecision {
    #[serde(rename = "f32")]
    F32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    /// `cpu` (Flex, default), `tch-cpu`, `cuda`, `wgpu`, `wgpu-cpu` (docs/backends.md).
    pub backend: Backend,
    /// CUDA / GPU index for `cuda` and `wgpu`.
    pub device_index: usize,
    /// The float type of weights and computation.
    pub precision: WeightPrecision,
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
}

impl TrainingSection {
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
            precision: WeightPrecision::F32,
            seed: 0,
            batch_size: 4,
            gradient_accumulation_steps: 1,
            max_grad_norm: 1.0,
            max_steps: None,
            epochs: 1,
            logging_steps: 1,
            share_prompts: true,
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

/// `[lora]`: adapters (PEFT's convention) or, with `enabled = false`, full fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub enabled: bool,
    pub rank: usize,
    pub alpha: f64,
    /// Regular expression over parameter paths such as `layers.3.attention.q_proj.weight`.
    pub target: String,
}

impl Default for LoraSection {
    fn default() -> Self {
        let d = bapo_model::LoraSettings::default();
        LoraSection {
            enabled: true,
            rank: d.rank,
            alpha: d.alpha,
            target: d.target,
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
    /// Prompts per evaluation forward, each with all its responses (a preference example's
    /// chosen, rejected and base response; a question's choices) after it, computed once.
    pub batch_size: usize,
    /// Token positions per evaluation forward once rows are padded to the longest (a longer
    /// row goes alone).
    pub batch_tokens: usize,
}

impl EvalSection {
    /// The batching limits of an evaluation forward.
    pub fn limits(&self) -> crate::eval::BatchLimits {
        crate::eval::BatchLimits {
            rows: self.batch_size,
            tokens: self.batch_tokens,
        }
    }
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            interval: 0,
            at_start: true,
            examples_per_user: 32,
            bigbench_dir: PathBuf::from(".cache/assets/bigbench"),
            hhh_alignment: 64,
            general_knowledge: 70,
            misconceptions: 64,
            facts: 64,
            knowledge_probe: PathBuf::from("data/personalised/knowledge.jsonl"),
            country_facts: 300,
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

fn enabled() -> bool {
    true
}

fn is_enabled(on: &bool) -> bool {
    *on
}

impl RunConfig {
    /// Reads `path`, applies `overrides` (`key=value`, dotted keys, TOML values; a bare word is
    /// a string) and checks every key and value.
    pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
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
    ) -> Result<RunConfig, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: PathBuf::from(source_name),
                    message: e.to_string(),
                })?;
        for arg in overrides {
            apply_override(&mut table, arg)?;
        }
        let config: RunConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Key {
                    source_name: source_name.to_string(),
                    key: if key == "." {
                        "(top level)".into()
                    } else {
                        key
                    },
                    message: plain_serde_message(e.into_inner().message()),
                }
            })?;
        config.validate(source_name)?;
        Ok(config)
    }

    /// The resolved config as TOML (written next to the run's metrics).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Key {
            source_name: source_name.to_string(),
            key: key.to_string(),
            message,
        };
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(key, format!("{v} must be a finite number > 0")))
            }
        };
        let at_least_one = |key: &str, v: usize| {
            if v >= 1 {
                Ok(())
            } else {
                Err(bad(key, "0 must be at least 1".into()))
            }
        };
        if self.model.path.as_os_str().is_empty() {
            return Err(bad(
                "model.path",
                "missing: a GGUF file or HF folder".into(),
            ));
        }
        if self.data.path.as_os_str().is_empty() {
            return Err(bad("data.path", "missing: a JSONL preference file".into()));
        }
        // LoRA's settings are checked here, before any model is loaded.
        if self.lora.enabled {
            let settings = bapo_model::LoraSettings {
                rank: self.lora.rank,
                alpha: self.lora.alpha,
                target: self.lora.target.clone(),
            };
            if let Err(e) = settings.check() {
                let key = match e {
                    bapo_model::LoraError::Rank => "lora.rank",
                    bapo_model::LoraError::Alpha(_) => "lora.alpha",
                    bapo_model::LoraError::Target { .. } => "lora.target",
                };
                return Err(bad(key, e.to_string()));
            }
        }
        if !(self.data.test_fraction >= 0.0 && self.data.test_fraction < 1.0) {
            return Err(bad(
                "data.test_fraction",
                format!("{} must be in [0, 1)", self.data.test_fraction),
            ));
        }
        at_least_one("data.max_length", self.data.max_length)?;
        if let Some(p) = self.data.max_prompt_length
            && (p == 0 || p >= self.data.max_length)
        {
            return Err(bad(
                "data.max_prompt_length",
                format!(
                    "{p} must be in [1, data.max_length = {})",
                    self.data.max_length
                ),
            ));
        }
        if self.data.max_train_examples == Some(0) {
            return Err(bad(
                "data.max_train_examples",
                "0 must be at least 1".into(),
            ));
        }
        if !self.objective.contains_key("name") {
            return Err(bad(
                "objective.name",
                "missing: which objective to train (see `bapo objectives`)".into(),
            ));
        }
        at_least_one("anchors.chunk_size", self.anchors.chunk_size)?;
        at_least_one("anchors.decode_batch", self.anchors.decode_batch)?;
        at_least_one("anchors.max_new_tokens", self.anchors.max_new_tokens)?;
        at_least_one("anchors.num_anchors", self.anchors.num_anchors)?;
        if !(self.anchors.temperature.is_finite() && self.anchors.temperature >= 0.0) {
            return Err(bad(
                "anchors.temperature",
                format!("{} must be >= 0 (0 is greedy)", self.anchors.temperature),
            ));
        }
        if !(self.anchors.top_p > 0.0 && self.anchors.top_p <= 1.0) {
            return Err(bad(
                "anchors.top_p",
                format!("{} must be in (0, 1]", self.anchors.top_p),
            ));
        }
        at_least_one("training.batch_size", self.training.batch_size)?;
        at_least_one(
            "training.gradient_accumulation_steps",
            self.training.gradient_accumulation_steps,
        )?;
        if !(self.training.max_grad_norm.is_finite() && self.training.max_grad_norm >= 0.0) {
            return Err(bad(
                "training.max_grad_norm",
                format!(
                    "{} must be >= 0 (0: no clipping)",
                    self.training.max_grad_norm
                ),
            ));
        }
        if self.training.max_steps == Some(0) {
            return Err(bad("training.max_steps", "0 must be at least 1".into()));
        }
        at_least_one("training.epochs", self.training.epochs)?;
        at_least_one("training.logging_steps", self.training.logging_steps)?;
        positive("optimizer.learning_rate", self.optimizer.learning_rate)?;
        for (key, v) in [
            ("optimizer.beta1", self.optimizer.beta1),
            ("optimizer.beta2", self.optimizer.beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(bad(key, format!("{v} must be in [0, 1)")));
            }
        }
        positive("optimizer.eps", self.optimizer.eps)?;
        if !(self.optimizer.weight_decay.is_finite() && self.optimizer.weight_decay >= 0.0) {
            return Err(bad(
                "optimizer.weight_decay",
                format!("{} must be >= 0", self.optimizer.weight_decay),
            ));
        }
        if self.lora.enabled {
            at_least_one("lora.rank", self.lora.rank)?;
            positive("lora.alpha", self.lora.alpha)?;
        }
        at_least_one("eval.batch_size", self.eval.batch_size)?;
        at_least_one("eval.batch_tokens", self.eval.batch_tokens)?;
        at_least_one("checkpoint.keep", self.checkpoint.keep)?;
        if self.output.dir.as_os_str().is_empty() {
            return Err(bad(
                "output.dir",
                "missing: where the run is written".into(),
            ));
        }
        Ok(())
    }
}

/// Sets `key` (dotted) to `value` in `table`.
/// serde's message with the Rust type names a config user never sees replaced
/// ("expected struct TrainingSection" → "expected a table of settings").
fn plain_serde_message(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find("struct ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "struct ".len()..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        out.push_str("a table of settings");
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

fn apply_override(table: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let fail = |message: String| ConfigError::Override {
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
