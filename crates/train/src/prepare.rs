//! Everything before the first step: device, objective, model, data (validated, tokenised,
//! split by entity), anchors for the training and held-out examples, evaluation sets.
//! `bapo anchors` runs exactly this and stops.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bapo_anchors::{
    AnchorProgress, AnchorSet, AnchorSettings, Decoding, ExampleAnchors, FingerprintInputs,
    Reference, check_same_tokenizer, compute_anchor_sets, examples_sha256, file_sha256,
    model_sha256,
};
use bapo_data::{
    BUILT_IN_PROBE_PATH, Dataset, DroppedRow, ProbeItem, Tokenization, TokenizedExample,
    TruncationSettings, built_in_knowledge_probe, load_fact_sample, load_hhh_alignment,
    load_knowledge_probe, load_multiple_choice, load_preference_files, split_by_entity,
    tokenize_dataset, unavailable_reason,
};
use bapo_model::{CausalLm, LoadedModel, Precision};
use bapo_objective::{Needs, Objective, registry};
use burn::module::Module;
use burn::tensor::Device;
use sha2::{Digest, Sha256};

use crate::TrainError;
use crate::backend::BackendDevice;
use crate::config::RunConfig;
use crate::eval::EvalSets;
use crate::example::AnchoredExample;
use crate::progress::{Progress, WARNING};

/// A run, ready to train.
pub struct Prepared {
    /// The plain device and its autodiff twin (the policy's).
    pub device: Device,
    pub train_device: Device,
    /// The policy before any adapter, on the autodiff device, with its tokenizer.
    pub model: LoadedModel,
    /// Reference 0: the model before training, without autodiff.
    pub reference: CausalLm,
    pub objective: Box<dyn Objective>,
    pub needs: Needs,
    pub train: Vec<AnchoredExample>,
    pub eval: EvalSets,
    /// What `bapo anchors` reports.
    pub summary: Vec<String>,
    /// sha256 of the data file and of the policy's model (what a checkpoint records, so
    /// that a resume on changed inputs is refused).
    pub data_sha256: String,
    pub model_sha256: String,
}

/// `model` as the run computes with it — the anchors, the reference's log-probs, the training
/// steps and the evaluation alike: in `training.precision`, its matrices held in bf16 when
/// `lora.base_dtype` says so (a quantized base, `lora.base_quantization`, is quantized by
/// [`LoadedModel::open_quantized`]).
fn as_configured(model: CausalLm, config: &RunConfig) -> CausalLm {
    let model = model.with_precision(config.training.precision);
    if config.lora.base_dtype == Precision::Bf16 {
        model.with_bf16_matrices()
    } else {
        model
    }
}

/// Tokenises `dataset` with `model`'s tokenizer and chat template and the config's
/// truncation; returns the examples and every dropped row (the file's and truncation's).
pub fn tokenize(
    config: &RunConfig,
    model: &LoadedModel,
    dataset: &Dataset,
) -> Result<(Vec<TokenizedExample>, Vec<DroppedRow>), TrainError> {
    let tokenization = Tokenization {
        tokenizer: &model.tokenizer,
        chat_template: model.chat_template.as_ref(),
        eos_token: model.eos_token,
    };
    let limits = TruncationSettings {
        max_length: config.data.max_length,
        max_prompt_length: config.data.max_prompt_length,
    };
    Ok(tokenize_dataset(dataset, &tokenization, &limits)?)
}

/// Refuses lengths the model has no positions for: the longest scored sequence
/// (`data.max_length`) and the longest generated one (a prompt, at most
/// `data.max_prompt_length`, plus `anchors.max_new_tokens` new tokens: base responses are
/// generated for the held-out evaluation of every objective). Sequences are cut to these
/// lengths, so no longer one reaches the model.
fn check_lengths(config: &RunConfig, model: &LoadedModel) -> Result<(), TrainError> {
    let data = &config.data;
    model.check_length(data.max_length, "data.max_length")?;
    let generated = data
        .max_prompt_length
        .unwrap_or(data.max_length)
        .saturating_add(config.anchors.settings.max_new_tokens);
    let what = if data.max_prompt_length.is_some() {
        "data.max_prompt_length + anchors.max_new_tokens"
    } else {
        "data.max_length + anchors.max_new_tokens (no data.max_prompt_length)"
    };
    model.check_length(generated, what)?;
    Ok(())
}

/// The objective the config names, built from its `[objective]` table, and what it needs;
/// refused when the config lists too few references for it.
pub(crate) fn build_objective(
    config: &RunConfig,
) -> Result<(Box<dyn Objective>, Needs), TrainError> {
    let objective = registry::build_from_table(&config.objective)?;
    let needs = objective.needs();
    if needs.num_references() > 1 + config.model.references.len() {
        return Err(TrainError::TooFewReferences {
            needed: needs.num_references(),
            listed: config.model.references.len(),
        });
    }
    if needs.needs_live_reference() && config.training.lm_head_chunk_tokens > 0 {
        return Err(TrainError::ChunkedHeadWithTokenKl {
            objective: objective.name().to_string(),
            chunk: config.training.lm_head_chunk_tokens,
        });
    }
    Ok((objective, needs))
}

/// The data of a run, tokenised and split.
struct DataSplit {
    /// The training examples (of `data.user` when set).
    train_rows: Vec<TokenizedExample>,
    /// Each user's held-out examples (at most `eval.examples_per_user`; "all" without users).
    held_out: Vec<(String, Vec<TokenizedExample>)>,
    /// What was dropped and kept, for the run's log.
    summary: Vec<String>,
}

/// The files `data.path` names.
pub(crate) struct DataFiles {
    pub files: Vec<PathBuf>,
}

impl DataFiles {
    /// The file `data.path` is (JSONL or Parquet), or the Parquet files of split `data.split`
    /// of the Hugging Face dataset it names (from the hub cache, downloaded unless offline). A
    /// path that exists is a path, and so is one named like a data file (`.jsonl`, `.json`,
    /// `.parquet`): its read then says it is missing.
    pub fn of(config: &RunConfig) -> Result<DataFiles, TrainError> {
        let path = &config.data.path;
        let named_like_a_file = path.extension().is_some_and(|e| {
            ["jsonl", "json", "parquet"]
                .iter()
                .any(|known| e.eq_ignore_ascii_case(known))
        });
        let dataset = (!path.exists() && !named_like_a_file)
            .then(|| path.to_str())
            .flatten()
            .and_then(|spec| bapo_model::hub::resolve_dataset(spec, &config.data.split));
        let files = match dataset {
            Some(files) => files?,
            None => vec![path.clone()],
        };
        Ok(DataFiles { files })
    }

    /// Their hash, what checkpoints and anchor caches record: one file's is its own (as
    /// before datasets by id); several files' is the hash of their hashes in order.
    pub fn sha256(&self) -> Result<String, TrainError> {
        Ok(match self.files.as_slice() {
            [one] => file_sha256(one)?,
            many => {
                let mut hasher = Sha256::new();
                for file in many {
                    hasher.update(file_sha256(file)?.as_bytes());
                }
                format!("{:x}", hasher.finalize())
            }
        })
    }

    /// The preference examples of the files (`data.path` names them in later messages).
    pub fn load(&self, config: &RunConfig) -> Result<bapo_data::Dataset, TrainError> {
        Ok(load_preference_files(&self.files, &config.data.path)?)
    }
}

/// Reads, validates and tokenises the data, splits it by entity (the split covers every
/// user, so no entity seen in training is ever evaluated), then restricts training to the
/// chosen user.
fn split_data(
    config: &RunConfig,
    data: &DataFiles,
    model: &LoadedModel,
) -> Result<DataSplit, TrainError> {
    let dataset = data.load(config)?;
    let mut summary = Vec::new();
    for (reason, count) in dataset.drop_counts() {
        summary.push(format!("dropped {count} rows: {}", reason.describe()));
    }
    let (examples, dropped) = tokenize(config, model, &dataset)?;
    let extra = dropped.len() - dataset.dropped.len();
    if extra > 0 {
        summary.push(format!(
            "dropped {extra} rows: prompt alone over the length budget"
        ));
    }
    let users = dataset.users();
    if let Some(unknown) = config.eval.users.iter().find(|u| !users.contains(u)) {
        return Err(TrainError::UnknownEvalUser {
            user: unknown.clone(),
            path: config.data.path.clone(),
            users,
        });
    }
    let (train_rows, test_rows) =
        split_by_entity(&examples, config.data.test_fraction, config.data.split_seed);
    let mut train_rows: Vec<TokenizedExample> = match &config.data.user {
        None => train_rows,
        Some(user) => {
            if !examples.iter().any(|e| e.user.as_deref() == Some(user)) {
                return Err(no_rows_left(config, user, &dataset, &dropped));
            }
            train_rows
                .into_iter()
                .filter(|e| e.user.as_deref() == Some(user))
                .collect()
        }
    };
    if let Some(max) = config.data.max_train_examples {
        train_rows.truncate(max);
    }
    if train_rows.is_empty() {
        return Err(TrainError::NoTrainingExamples(config.data.path.clone()));
    }
    let identical = train_rows.iter().filter(|e| e.chosen == e.rejected).count();
    if identical == train_rows.len() {
        summary.push(format!(
            "{WARNING} in all {identical} training examples the chosen and rejected responses are the same tokens: the preference loss has nothing to learn from (check `chosen`/`rejected` in {})",
            config.data.path.display()
        ));
    }
    summary.push(format!(
        "{} training examples{}, {} held out",
        train_rows.len(),
        config
            .data
            .user
            .as_ref()
            .map(|u| format!(" of user {u:?}"))
            .unwrap_or_default(),
        test_rows.len()
    ));
    let held_out = held_out_per_user(config, test_rows);
    if held_out.is_empty() {
        summary.push(format!(
            "{WARNING} no pair is held out (`data.test_fraction` = {}, `eval.examples_per_user` = {}): the evaluations have no preference metrics, and without knowledge sets they score nothing",
            config.data.test_fraction, config.eval.examples_per_user
        ));
    }
    Ok(DataSplit {
        train_rows,
        held_out: held_out.into_iter().collect(),
        summary,
    })
}

/// Held out: the first `eval.examples_per_user` test rows of each evaluated user (all rows
/// under "all" if the data has no users).
fn held_out_per_user(
    config: &RunConfig,
    test_rows: Vec<TokenizedExample>,
) -> std::collections::BTreeMap<String, Vec<TokenizedExample>> {
    let mut held_out: std::collections::BTreeMap<String, Vec<TokenizedExample>> =
        Default::default();
    let wanted = |user: &str| {
        config.eval.users.is_empty()
            || config.eval.users.iter().any(|u| u == user)
            || config.data.user.as_deref() == Some(user)
    };
    for e in test_rows {
        let user = e.user.clone().unwrap_or_else(|| "all".into());
        if !wanted(&user) {
            continue;
        }
        let rows = held_out.entry(user).or_default();
        if rows.len() < config.eval.examples_per_user {
            rows.push(e);
        }
    }
    held_out
}

/// How a run computes (or reuses) its anchors: what every set's fingerprint shares, and
/// where and how the cache is kept (docs/anchors.md).
struct AnchorJob<'a> {
    config: &'a RunConfig,
    data_sha: &'a str,
    chat_template: String,
    vocab_size: usize,
    /// The reference's EOS and padding tokens, and rows decoded together.
    decoding: Decoding,
    /// Recompute cached anchors (`--force-anchors`).
    force: bool,
    device: &'a Device,
    progress: &'a Progress,
}

impl<'a> AnchorJob<'a> {
    /// The job of `config`'s run with the policy `model` as the reference, on `device`;
    /// `force` recomputes cached anchors.
    fn new(
        config: &'a RunConfig,
        data_sha: &'a str,
        model: &LoadedModel,
        device: &'a Device,
        (force, progress): (bool, &'a Progress),
    ) -> AnchorJob<'a> {
        AnchorJob {
            config,
            data_sha,
            chat_template: model
                .chat_template
                .as_ref()
                .map(|c| c.source.clone())
                .unwrap_or_default(),
            vocab_size: model.vocab_size(),
            decoding: Decoding {
                eos_token: model.eos_token,
                pad_token: model.pad_token,
                batch: config.anchors.decode_batch,
            },
            force,
            device,
            progress,
        }
    }

    /// Everything the anchors of `examples` depend on, for the reference of hash `model_sha`.
    fn inputs(
        &self,
        model_sha: &str,
        examples: &[TokenizedExample],
        settings: AnchorSettings,
    ) -> FingerprintInputs {
        let data = &self.config.data;
        FingerprintInputs {
            model: model_sha.to_string(),
            data: self.data_sha.to_string(),
            chat_template: self.chat_template.clone(),
            vocab_size: self.vocab_size,
            max_length: data.max_length,
            max_prompt_length: data.max_prompt_length,
            user: data.user.clone(),
            examples: examples_sha256(examples),
            settings,
            precision: self.config.training.precision,
            base_dtype: self.config.lora.base_dtype,
            base_quantization: self.config.lora.base_quantization,
        }
    }

    /// The anchors of several sets (examples, anchors per prompt, label) with one reference
    /// model, in one generation; a line per set.
    fn run(
        &self,
        reference: &CausalLm,
        model_sha: &str,
        sets: &[(&[TokenizedExample], usize, String)],
    ) -> Result<Vec<Vec<bapo_anchors::ExampleAnchors>>, TrainError> {
        let a = &self.config.anchors;
        let inputs: Vec<FingerprintInputs> = sets
            .iter()
            .map(|(examples, num_anchors, _)| {
                self.inputs(model_sha, examples, a.settings(*num_anchors))
            })
            .collect();
        for i in &inputs {
            let dir = a.cache_dir.join(i.fingerprint());
            if self.force && dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
            }
        }
        let anchor_sets: Vec<AnchorSet<'_>> = sets
            .iter()
            .zip(&inputs)
            .map(|((examples, _, _), inputs)| AnchorSet { examples, inputs })
            .collect();
        let total = sets.iter().map(|(e, ..)| e.len()).sum::<usize>();
        let bar = self.progress.bar(total as u64, "anchors");
        let start = Instant::now();
        let reference = Reference {
            model: reference,
            decoding: self.decoding,
            head_chunk_tokens: self.config.training.lm_head_chunk_tokens,
            device: self.device,
        };
        let results = compute_anchor_sets(
            &reference,
            &anchor_sets,
            &a.cache_dir,
            &mut |p: AnchorProgress| {
                bar.set_position(p.done as u64);
                let seconds = start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "{:.1} tokens/s",
                    p.generated_tokens as f64 / seconds
                ));
            },
        )?;
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        let generated: usize = results.iter().map(|(_, r)| r.generated_tokens).sum();
        for ((examples, _, label), ((_, report), inputs)) in
            sets.iter().zip(results.iter().zip(&inputs))
        {
            self.progress.line(format!(
                "{label}: {} examples, {} chunks reused, {} computed, {} tokens generated → {}",
                examples.len(),
                report.reused_chunks,
                report.computed_chunks,
                report.generated_tokens,
                a.cache_dir.join(inputs.fingerprint()).display()
            ));
        }
        if generated > 0 {
            self.progress.line(format!(
                "anchors: {generated} tokens generated in {seconds:.1} s ({:.1} tokens/s)",
                generated as f64 / seconds.max(1e-9)
            ));
        }
        Ok(results.into_iter().map(|(anchors, _)| anchors).collect())
    }
}

/// Whether the config asks for any BIG-bench set.
fn bigbench_wanted(config: &RunConfig) -> bool {
    let e = &config.eval;
    !e.bigbench_dir.as_os_str().is_empty()
        && e.hhh_alignment + e.general_knowledge + e.misconceptions + e.facts > 0
}

/// The forgetting side of the evaluation: the BIG-bench sets (HHH alignment, general
/// knowledge, misconceptions, facts) and the country-knowledge probe, without any country the
/// run trains on, each as many items as the config asks for, with their items' labels.
fn add_knowledge_sets(
    config: &RunConfig,
    model: &LoadedModel,
    train: &[AnchoredExample],
    eval: &mut EvalSets,
) -> Result<(), TrainError> {
    let e = &config.eval;
    if bigbench_wanted(config) && unavailable_reason(&e.bigbench_dir).is_none() {
        let dir = &e.bigbench_dir;
        if e.hhh_alignment > 0 {
            let items = load_hhh_alignment(dir)?;
            let items = spread(&items, e.hhh_alignment);
            eval.hhh = EvalSets::tokenize_hhh(model, &items)?;
            add_choice_labels(
                &mut eval.labels,
                "knowledge/hhh_alignment",
                &eval.hhh,
                &[],
                &[],
            );
        }
        for (name, count) in [
            ("general_knowledge", e.general_knowledge),
            ("misconceptions", e.misconceptions),
        ] {
            if count == 0 {
                continue;
            }
            let items = spread(&load_multiple_choice(dir, name)?, count);
            let tokens = EvalSets::tokenize_choices(model, &items, name)?;
            let metric = format!("knowledge/{name}");
            add_choice_labels(&mut eval.labels, &metric, &tokens, &[], &[]);
            match name {
                "general_knowledge" => eval.general_knowledge = tokens,
                _ => eval.misconceptions = tokens,
            }
        }
        if e.facts > 0 {
            let items = load_fact_sample(dir, e.facts, 0)?;
            eval.facts = EvalSets::tokenize_facts(model, &items)?;
        }
    }
    if !e.knowledge_probe.as_os_str().is_empty() && e.country_facts > 0 {
        add_country_probe(config, model, train, eval)?;
    }
    Ok(())
}

/// The probe `eval.knowledge_probe` names: its file, or, for the default path with no such
/// file in the working directory (a run configured outside the project), the copy built into
/// the binary.
pub(crate) fn knowledge_probe(path: &Path) -> Result<Vec<ProbeItem>, TrainError> {
    if path.exists() {
        Ok(load_knowledge_probe(path)?)
    } else if path == Path::new(BUILT_IN_PROBE_PATH) {
        Ok(built_in_knowledge_probe()?)
    } else {
        Err(TrainError::MissingKnowledgeProbe(path.to_path_buf()))
    }
}

/// The country-knowledge probe: `eval.country_facts` items spread over the file, never about a
/// country the run trains on, each labelled with its country (its cluster) and whether its
/// answer occurs in the training text anyway (a neighbour or a subregion named in a trained
/// country's answer).
fn add_country_probe(
    config: &RunConfig,
    model: &LoadedModel,
    train: &[AnchoredExample],
    eval: &mut EvalSets,
) -> Result<(), TrainError> {
    let trained: std::collections::BTreeSet<&str> = train
        .iter()
        .filter_map(|a| a.tokens.entity.as_deref())
        .collect();
    let items: Vec<ProbeItem> = knowledge_probe(&config.eval.knowledge_probe)?
        .into_iter()
        .filter(|p| !trained.contains(p.entity.as_str()))
        .collect();
    let items = spread(&items, config.eval.country_facts);
    let training_text = training_text(model, train)?;
    let seen: Vec<bool> = items
        .iter()
        .map(|p| {
            p.item
                .choices
                .get(p.item.correct)
                .is_some_and(|answer| occurs_as_words(&training_text, answer))
        })
        .collect();
    let clusters: Vec<String> = items.iter().map(|p| p.entity.clone()).collect();
    let choices: Vec<_> = items.iter().map(|p| p.item.clone()).collect();
    let tokens = EvalSets::tokenize_choices(model, &choices, "knowledge probe")?;
    add_choice_labels(
        &mut eval.labels,
        "knowledge/country_facts",
        &tokens,
        &clusters,
        &seen,
    );
    let kinds: std::collections::BTreeSet<&str> = items.iter().map(|p| p.kind.as_str()).collect();
    for kind in kinds {
        let of_kind: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].kind == kind)
            .collect();
        let pick = |i: &usize| tokens[*i].clone();
        add_choice_labels(
            &mut eval.labels,
            &format!("knowledge/country_{kind}"),
            &of_kind.iter().map(pick).collect::<Vec<_>>(),
            &of_kind
                .iter()
                .map(|&i| clusters[i].clone())
                .collect::<Vec<_>>(),
            &of_kind.iter().map(|&i| seen[i]).collect::<Vec<_>>(),
        );
    }
    eval.country_facts = items.into_iter().map(|p| p.kind).zip(tokens).collect();
    Ok(())
}

/// The labels of a multiple-choice set's items, for `metric` and its per-character twin
/// (`…_norm`): chance (1 / choices), whether the shortest choice is right, and, where given,
/// clusters and whether the answer was seen in training.
fn add_choice_labels(
    labels: &mut crate::items::ItemLabels,
    metric: &str,
    items: &[crate::eval::ChoiceTokens],
    clusters: &[String],
    seen: &[bool],
) {
    let these = crate::items::MetricLabels {
        cluster: clusters.to_vec(),
        chance: items
            .iter()
            .map(|i| 1.0 / i.choices.len().max(1) as f64)
            .collect(),
        seen: seen.to_vec(),
        shortest_correct: items.iter().map(|i| i.shortest_is_correct()).collect(),
    };
    labels.insert(format!("{metric}_norm"), these.clone());
    labels.insert(metric.to_string(), these);
}

/// The training examples' prompts and responses as text, one example per line.
fn training_text(model: &LoadedModel, train: &[AnchoredExample]) -> Result<String, TrainError> {
    let mut text = String::new();
    for a in train {
        let t = &a.tokens;
        for part in [&t.prompt, &t.chosen, &t.rejected] {
            let decoded = model.decode(part).map_err(|source| TrainError::EvalText {
                set: "training text".into(),
                source,
            })?;
            text.push_str(&decoded);
            text.push('\n');
        }
    }
    Ok(text)
}

/// Whether `needle` occurs in `haystack` as whole words (not inside a longer word: "Niger" is
/// not in "Nigeria").
pub(crate) fn occurs_as_words(haystack: &str, needle: &str) -> bool {
    let needle = needle.trim();
    if needle.is_empty() {
        return false;
    }
    let is_word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    haystack.match_indices(needle).any(|(start, _)| {
        let before = haystack[..start].chars().next_back();
        let after = haystack[start + needle.len()..].chars().next();
        !is_word(before) && !is_word(after)
    })
}

/// Prepares `config`'s run; `force_anchors` recomputes cached anchors. In order: the device,
/// the objective ([`build_objective`]), the model, the data ([`split_data`]), the anchors of
/// the training and held-out examples and of every further reference ([`AnchorJob`]), and the
/// evaluation sets ([`add_knowledge_sets`]). Longer than 80 lines because those steps pass a
/// dozen values along (model, device, splits, hashes) that would otherwise travel as one
/// single-use struct.
pub fn prepare(
    config: &RunConfig,
    force_anchors: bool,
    progress: &Progress,
) -> Result<Prepared, TrainError> {
    let t = &config.training;
    let device = t.backend.device(t.device_index)?;
    device.seed(t.seed);
    let train_device = device.clone().autodiff();

    let (objective, needs) = build_objective(config)?;

    progress.line(format!(
        "loading {} on backend `{}`",
        config.model.path.display(),
        t.backend
    ));
    // A quantized base: a GGUF file's projections are quantized as each is read (its f32
    // model never exists whole), a checkpoint folder's once it is loaded.
    let quantization = config.lora.base_quantization;
    let mut model = LoadedModel::open_quantized(&config.model.path, &train_device, quantization)?;
    model.model = as_configured(model.model, config);
    let data = DataFiles::of(config)?;
    check_lengths(config, &model)?;
    let reference = model.model.valid();

    let DataSplit {
        train_rows,
        held_out,
        mut summary,
    } = split_data(config, &data, &model)?;

    let base_responses = base_responses_per_example(config, &needs)?;
    let data_sha = data.sha256()?;
    let policy_sha = model_sha256(&config.model.path)?;
    let job = AnchorJob::new(
        config,
        &data_sha,
        &model,
        &device,
        (force_anchors, progress),
    );

    // The training examples and every user's held-out examples: one generation.
    let mut sets: Vec<(&[TokenizedExample], usize, String)> =
        vec![(&train_rows, base_responses, "anchors (train)".into())];
    for (user, rows) in &held_out {
        sets.push((rows, 1, format!("anchors (held out, {user})")));
    }
    let mut results = job.run(&reference, &policy_sha, &sets)?;
    let primary = results.remove(0);
    let further = further_references(config, &needs, &job, (&model, &train_rows), &mut summary)?;
    let train: Vec<AnchoredExample> = train_rows
        .into_iter()
        .enumerate()
        .zip(primary)
        .map(|((i, tokens), reference)| {
            AnchoredExample::new(tokens, reference, further.iter().map(|r| &r[i]))
        })
        .collect();

    if let Some(why) = bigbench_wanted(config)
        .then(|| unavailable_reason(&config.eval.bigbench_dir))
        .flatten()
    {
        progress.line(format!(
            "{WARNING} the BIG-bench sets are not measured in this run: {why}"
        ));
    }
    let eval = eval_sets(config, &model, &train, held_out.into_iter().zip(results))?;

    Ok(Prepared {
        device,
        train_device,
        model,
        reference,
        objective,
        needs,
        train,
        eval,
        summary,
        data_sha256: data_sha,
        model_sha256: policy_sha,
    })
}

/// Base responses per training example: the objective's count, or more where
/// `anchors.num_anchors` asks for more (a cache shared with a run that uses more).
fn base_responses_per_example(config: &RunConfig, needs: &Needs) -> Result<usize, TrainError> {
    let asked = config.anchors.settings.num_anchors;
    let base_responses = if needs.needs_base_responses() {
        asked.max(needs.anchors_per_prompt)
    } else {
        0
    };
    // `anchors.num_anchors` is checked with the config; the objective's own count here.
    if base_responses > crate::config::MAX_ANCHORS {
        return Err(TrainError::TooManyAnchors {
            asked: base_responses,
            max: crate::config::MAX_ANCHORS,
        });
    }
    Ok(base_responses)
}

/// The further references' log-probs of the training examples (MRPO's), each model loaded,
/// checked against the policy's tokenizer and scored by `job`. Only the references the
/// objective uses are loaded; a note in `summary` says when the config lists more.
fn further_references(
    config: &RunConfig,
    needs: &Needs,
    job: &AnchorJob<'_>,
    (model, train_rows): (&LoadedModel, &[TokenizedExample]),
    summary: &mut Vec<String>,
) -> Result<Vec<Vec<ExampleAnchors>>, TrainError> {
    let used = needs.num_references().saturating_sub(1);
    let listed = config.model.references.len();
    if listed > used {
        summary.push(format!(
            "`model.references` lists {listed} model(s); the objective uses {used}: the rest are not loaded"
        ));
    }
    let mut further = Vec::new();
    for path in config.model.references.iter().take(used) {
        let mut other =
            LoadedModel::open_quantized(path, job.device, config.lora.base_quantization)?;
        other.model = as_configured(other.model, config);
        check_lengths(config, &other)?;
        check_same_tokenizer(
            &model.tokenizer,
            &other.tokenizer,
            &path.display().to_string(),
        )?;
        let sha = model_sha256(path)?;
        let label = format!("anchors ({})", path.display());
        further.push(
            job.run(&other.model, &sha, &[(train_rows, 0, label)])?
                .remove(0),
        );
    }
    Ok(further)
}

/// The evaluation sets: every user's held-out pairs with their anchors, their labels, the
/// answers to write where `eval.answer_tokens` asks for them, and the knowledge sets.
fn eval_sets(
    config: &RunConfig,
    model: &LoadedModel,
    train: &[AnchoredExample],
    held_out: impl Iterator<Item = ((String, Vec<TokenizedExample>), Vec<ExampleAnchors>)>,
) -> Result<EvalSets, TrainError> {
    let mut eval = EvalSets::default();
    for ((user, rows), anchors) in held_out {
        eval.preferences.insert(
            user,
            rows.into_iter()
                .zip(anchors)
                .map(|(tokens, a)| AnchoredExample::new(tokens, a, []))
                .collect(),
        );
    }
    add_preference_labels(&mut eval);
    if config.eval.answer_tokens > 0 {
        let (answers, labels) = crate::answers::AnswerSet::new(
            &eval.preferences,
            &model.tokenizer,
            config.eval.answer_tokens,
            (model.eos_token, model.pad_token),
        )?;
        eval.labels.extend(labels);
        eval.answers = Some(answers);
    }
    add_knowledge_sets(config, model, train, &mut eval)?;
    Ok(eval)
}

/// Each held-out preference item's entity as its cluster: a user's pairs about one country
/// are correlated (the same facts in other questions).
fn add_preference_labels(eval: &mut EvalSets) {
    for (user, examples) in &eval.preferences {
        let clusters: Vec<String> = examples
            .iter()
            .map(|e| e.tokens.entity.clone().unwrap_or_default())
            .collect();
        for metric in ["accuracy", "margin", "reference_margin"] {
            eval.labels
                .entry(format!("pref/{user}/{metric}"))
                .or_default()
                .cluster = clusters.clone();
        }
    }
    // The drift and KL items are every user's held-out pairs in turn (eval.rs).
    let all: Vec<String> = eval
        .preferences
        .values()
        .flatten()
        .filter(|e| !e.reference.base.is_empty())
        .map(|e| e.tokens.entity.clone().unwrap_or_default())
        .collect();
    for metric in ["anchor/drift", "kl/heldout"] {
        eval.labels.entry(metric.into()).or_default().cluster = all.clone();
    }
}

/// Why `data.user` = `user` has no rows: all of them dropped (how many, and why), or none in
/// the file (which users there are).
fn no_rows_left(
    config: &RunConfig,
    user: &str,
    dataset: &Dataset,
    dropped: &[DroppedRow],
) -> TrainError {
    let mut reasons: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for d in dropped.iter().filter(|d| d.user.as_deref() == Some(user)) {
        *reasons.entry(d.reason.describe()).or_default() += 1;
    }
    if reasons.is_empty() {
        return TrainError::UnknownUser {
            user: user.to_string(),
            path: config.data.path.clone(),
            users: dataset.users().iter().map(|u| u.to_string()).collect(),
        };
    }
    TrainError::UserRowsDropped {
        user: user.to_string(),
        path: config.data.path.clone(),
        dropped: reasons,
    }
}

/// `count` items spread evenly over `items` (every category of a task file is represented,
/// where its first `count` items might all come from one).
pub(crate) fn spread<T: Clone>(items: &[T], count: usize) -> Vec<T> {
    if count >= items.len() {
        return items.to_vec();
    }
    (0..count)
        .map(|i| items[i * items.len() / count].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::occurs_as_words;

    #[test]
    fn an_answer_occurs_only_as_whole_words() {
        let text = "Nigeria lies in Western Africa. Its neighbours include Chad and Niger.";
        assert!(occurs_as_words(text, "Niger"));
        assert!(occurs_as_words(text, "Western Africa"));
        assert!(!occurs_as_words("Nigeria lies in Africa.", "Niger"));
        assert!(!occurs_as_words("Chadian food", "Chad"));
        assert!(!occurs_as_words("Africa", "Western Africa"));
        assert!(!occurs_as_words(text, " "));
    }
}
