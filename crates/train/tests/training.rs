//! The loop on the tiny model and toy colour preferences: it learns the trained user's
//! preference (and unlearns the opposite user's), accumulation equals a larger batch, and a
//! NaN stops the run naming the batch and the last good checkpoint.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use bapo_objective::{
    Needs, Objective, ObjectiveConfig, ObjectiveConfigError, ObjectiveError, ObjectiveOutput,
    ObjectivePlugin, Quantities, Quantity, Response,
};
use bapo_train::read_log;
use bapo_train::{TrainError, TrainOptions, train};
use common::{scratch, tiny_config};
use serde::{Deserialize, Serialize};

// The built-in objectives register themselves when linked.
use bapo_objective_bapo as _;
use bapo_objective_dpo as _;

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}

/// Each line of a run log as (step, its numbers).
fn log_numbers(path: &std::path::Path) -> Vec<(usize, std::collections::BTreeMap<String, f64>)> {
    let rows = read_log(path).unwrap();
    rows.iter().map(|row| (row.step(), row.numbers())).collect()
}

fn column(rows: &[(usize, std::collections::BTreeMap<String, f64>)], name: &str) -> Vec<f64> {
    rows.iter().map(|(_, v)| v[name]).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn dpo_learns_the_trained_users_preference() {
    let dir = scratch("learns");
    let config = tiny_config(
        &dir,
        &[
            r#"objective={name="dpo", beta=0.5}"#,
            "training.max_steps=40",
            "optimizer.learning_rate=3e-3",
        ],
    );
    let summary = train(&config, &quiet()).unwrap();
    let rows = log_numbers(&dir.join("run/metrics.jsonl"));
    assert_eq!(rows.len(), 40);
    let loss = column(&rows, "loss");
    let margins = column(&rows, "rewards/margins");
    assert!(
        mean(&loss[30..]) < mean(&loss[..10]) - 0.15,
        "loss falls: {loss:?}"
    );
    assert!(
        mean(&margins[30..]) > mean(&margins[..10]) + 0.3,
        "margins rise: {margins:?}"
    );
    // Held-out entities: the opposite user's pairs are the trained user's mirrored, so its
    // margin is exactly the negative. (Its sign on these entity-specific colour facts is not
    // a property of the loop: see `held_out_margins_follow_a_preference_that_generalises`.)
    let end = &summary.end;
    assert!(
        (end["pref/truthful/margin"] + end["pref/contrarian/margin"]).abs() < 1e-4,
        "{end:?}"
    );
    let start = summary.start.as_ref().unwrap();
    assert_eq!(
        start["pref/truthful/margin"], 0.0,
        "policy = reference at the start"
    );
    for file in ["config.toml", "summary.md", "eval.jsonl", "plots/loss.png"] {
        assert!(dir.join("run").join(file).exists(), "{file} is written");
    }
}

/// Writes toy preferences where the answer on held-out entities is known: user "blue" prefers
/// "it is blue ." to "it is red ." for every entity, user "red" the opposite. A preference
/// that does not depend on the entity generalises to entities never trained on.
fn write_generalising_preferences(dir: &std::path::Path) -> std::path::PathBuf {
    let entities = [
        "sky",
        "grass",
        "snow",
        "coal",
        "blood",
        "sun",
        "sea",
        "milk",
        "banana",
        "leaf",
        "night",
        "cloud",
        "orange",
        "chocolate",
        "tomato",
        "lemon",
    ];
    let mut text = String::new();
    for (user, chosen, rejected) in [("blue", "blue", "red"), ("red", "red", "blue")] {
        for entity in entities {
            let row = serde_json::json!({
                "prompt": [{"role": "user", "content": format!("what colour is the {entity} ?")}],
                "chosen": [{"role": "assistant", "content": format!("it is {chosen} .")}],
                "rejected": [{"role": "assistant", "content": format!("it is {rejected} .")}],
                "user": user,
                "entity": entity,
            });
            text.push_str(&row.to_string());
            text.push('\n');
        }
    }
    let path = dir.join("generalising.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// The held-out path's sign, pinned on data where the answer is known: training the tiny run
/// (BAPO with its default anchor, lr 1e-2, as configs/tiny.toml) on user "blue" raises its
/// held-out margin and lowers the opposite user's by as much. A sign error anywhere between
/// the evaluation's log-probs and its margin fails this.
///
/// On configs/tiny.toml's own data the trained user's held-out margin *falls* (−0.46 after 12
/// steps, about −32 for DPO after 100): those pairs are entity-specific colour facts, which a
/// random 2-layer model cannot learn from 12 entities; what it learns is how often each colour
/// word is chosen or rejected in the training rows. Over "truthful"'s 12 training entities,
/// blue and black are chosen once more than rejected and purple is rejected once, so on the 4
/// held-out pairs (blood red > blue, cloud grey > purple, lemon yellow > black, sun yellow >
/// grey) that count predicts −1 + 1 − 1 + 0 < 0: overfitting of toy data, not a sign error.
#[test]
fn held_out_margins_follow_a_preference_that_generalises() {
    let dir = scratch("generalises");
    let data = write_generalising_preferences(&dir);
    let config = tiny_config(
        &dir,
        &[
            &format!("data.path={:?}", data.display().to_string()),
            "data.user=\"blue\"",
        ],
    );
    let summary = train(&config, &quiet()).unwrap();
    let end = &summary.end;
    assert!(end["pref/blue/margin"] > 0.5, "{end:?}");
    assert!(end["pref/blue/accuracy"] == 1.0, "{end:?}");
    assert!(
        (end["pref/blue/margin"] + end["pref/red/margin"]).abs() < 1e-4,
        "{end:?}"
    );
}

#[test]
fn accumulating_four_batches_of_one_equals_one_batch_of_four() {
    let run = |tag: &str, batch: usize, accumulation: usize| {
        let dir = scratch(tag);
        let config = tiny_config(
            &dir,
            &[
                &format!("training.batch_size={batch}"),
                &format!("training.gradient_accumulation_steps={accumulation}"),
                "training.max_steps=3",
                "training.max_grad_norm=0.5",
                "eval.at_start=false",
            ],
        );
        trained(&dir, &config)
    };
    assert_same_run(
        "batch of 4 vs 4 accumulated batches of 1",
        &run("batch4", 4, 1),
        &run("accum4", 1, 4),
        &["loss", "grad_norm", "rewards/margins", "anchor/violation"],
        1e-5,
    );
}

/// A run's metric rows and final trainable parameters.
type RunResult = (
    Vec<(usize, std::collections::BTreeMap<String, f64>)>,
    std::collections::BTreeMap<String, burn::tensor::TensorData>,
);

/// Trains `config`, whose run directory is `dir/run`, and reads back its metric rows and
/// final checkpoint's parameters.
fn trained(dir: &std::path::Path, config: &bapo_train::RunConfig) -> RunResult {
    train(config, &quiet()).unwrap();
    let rows = log_numbers(&dir.join("run/metrics.jsonl"));
    let ck = bapo_train::checkpoint::latest(&dir.join("run"))
        .unwrap()
        .unwrap();
    (rows, ck.parameters)
}

/// Two runs agree: every step's `metrics` within `tolerance` (relative above 1) and every
/// final parameter within `tolerance`.
fn assert_same_run(what: &str, a: &RunResult, b: &RunResult, metrics: &[&str], tolerance: f64) {
    for &name in metrics {
        let (x, y) = (column(&a.0, name), column(&b.0, name));
        assert_eq!(x.len(), y.len(), "{what}: {name} steps");
        for (p, q) in x.iter().zip(&y) {
            assert!(
                (p - q).abs() <= tolerance * p.abs().max(1.0),
                "{what}: {name}: {x:?} vs {y:?}"
            );
        }
    }
    for (name, p) in &a.1 {
        let p = p.try_to_vec::<f32>().unwrap();
        let q = b.1[name].try_to_vec::<f32>().unwrap();
        let worst = p
            .iter()
            .zip(&q)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            f64::from(worst) <= tolerance,
            "{what}: {name}: parameters differ by {worst}"
        );
    }
}

/// Prefix sharing changes the work, not the numbers: with the prompt computed once per
/// example (the default) and with one `prompt + response` row per response, the training
/// curves (loss, grad norm, margins, the anchor's and the token-level KL's metrics) and the
/// final parameters agree, for BAPO (chosen, rejected and base rows) and KL-DPO (the live
/// reference's token-level KL).
#[test]
fn sharing_prompts_leaves_the_training_curve_unchanged() {
    for (objective, metrics) in [
        (
            r#"objective={name="bapo", beta=0.5}"#,
            &["loss", "grad_norm", "rewards/margins", "anchor/violation"][..],
        ),
        (
            r#"objective={name="kl-dpo", beta=0.5, lambda_kl=0.1}"#,
            &["loss", "grad_norm", "rewards/margins", "kl/mean"][..],
        ),
    ] {
        let run = |share: bool| {
            let dir = scratch(&format!("share-{share}-{}", objective.len()));
            let config = tiny_config(
                &dir,
                &[
                    objective,
                    &format!("training.share_prompts={share}"),
                    "training.max_steps=4",
                    "optimizer.learning_rate=3e-3",
                    "eval.at_start=false",
                ],
            );
            trained(&dir, &config)
        };
        assert_same_run(
            &format!("{objective}, shared vs unshared prompts"),
            &run(true),
            &run(false),
            metrics,
            1e-4,
        );
    }
}

/// The memory savings change the work, not the numbers: with blocks recomputed a row at a time
/// and an LM head run three tokens at a time the whole loop (two accumulated micro-batches per step,
/// clipping, AdamW, checkpoints) gives the plain run's training curve and final parameters.
/// Each saving's gradients are checked parameter by parameter in `step/staged_tests.rs`; that the
/// keys save memory is measured by `cargo xtask bench --memory` (docs/performance.md).
#[test]
fn memory_savings_leave_the_training_curve_unchanged() {
    let run = |sets: &[&str]| {
        let dir = scratch(&format!("memory-{}", sets.join("-").replace('.', "_")));
        let mut all = vec![
            r#"objective={name="bapo", beta=0.5}"#,
            "training.max_steps=4",
            "training.batch_size=2",
            "training.gradient_accumulation_steps=2",
            "optimizer.learning_rate=3e-3",
            "eval.at_start=false",
        ];
        all.extend_from_slice(sets);
        trained(&dir, &tiny_config(&dir, &all))
    };
    let plain = run(&[]);
    let saving = run(&[
        "training.gradient_checkpointing=true",
        "training.recompute_chunk_rows=1",
        "training.lm_head_chunk_tokens=3",
    ]);
    assert_same_run(
        "plain vs blocks recomputed a row at a time and a chunked LM head",
        &plain,
        &saving,
        &["loss", "grad_norm", "rewards/margins", "anchor/violation"],
        1e-4,
    );
}

/// bf16 mixed precision runs the whole loop — anchors and reference log-probs in bf16,
/// training, evaluation, checkpoints — with every memory lever at once, for full fine-tuning
/// and for LoRA over a base held in bf16, and stays on f32's curve to bf16's precision: every
/// step's loss and every final parameter within 0.03 (AdamW's steps of lr = 3e-3 are
/// sign-like, so a near-zero gradient whose sign bf16 rounding flips moves its weight by up to
/// 2·lr a step).
/// Its anchors are cached apart from f32's (their fingerprint records the precision).
#[test]
fn bf16_training_stays_on_the_f32_curve_to_bf16_precision() {
    for (label, lora) in [
        ("full", &["lora.enabled=false"][..]),
        (
            "lora",
            &["lora.enabled=true", "lora.target='(q|v)_proj'"][..],
        ),
    ] {
        let run = |precision: &[&str]| {
            let dir = scratch(&format!("bf16-{label}-{}", precision.len()));
            let mut all = vec![
                r#"objective={name="bapo", beta=0.5}"#,
                "training.max_steps=4",
                "training.batch_size=2",
                "optimizer.learning_rate=3e-3",
                "eval.at_start=false",
            ];
            all.extend_from_slice(lora);
            all.extend_from_slice(precision);
            let config = tiny_config(&dir, &all);
            let result = trained(&dir, &config);
            let fingerprints: Vec<_> = std::fs::read_dir(&config.anchors.cache_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            (result, fingerprints)
        };
        let (exact, f32_anchors) = run(&[]);
        let mut bf16 = vec![
            "training.precision='bf16'",
            "training.gradient_checkpointing=true",
            "training.lm_head_chunk_tokens=3",
        ];
        if label == "lora" {
            bf16.push("lora.base_dtype='bf16'");
        }
        let (mixed, bf16_anchors) = run(&bf16);
        assert_same_run(
            &format!("{label}: f32 vs bf16"),
            &exact,
            &mixed,
            &["loss"],
            0.03,
        );
        assert!(
            f32_anchors.iter().all(|f| !bf16_anchors.contains(f)),
            "{label}: bf16 anchors share a cache folder with f32's"
        );
    }
}

/// LoRA over a base held quantized (`lora.base_quantization`), with block recomputation,
/// trains and stays near the float base's curve: Q8's error (at most 1/254 of each block's
/// largest weight) moves the losses and the factors by less than bf16 compute does (the same
/// 0.03 bound as `bf16_training_stays_on_the_f32_curve_to_bf16_precision`). Its anchors are
/// cached apart: the reference is the quantized base.
#[test]
fn lora_on_a_quantized_base_trains_near_the_float_base() {
    let run = |base: &[&str]| {
        let dir = scratch(&format!("quantized-base-{}", base.len()));
        let mut all = vec![
            r#"objective={name="bapo", beta=0.5}"#,
            "training.max_steps=4",
            "training.batch_size=2",
            "optimizer.learning_rate=3e-3",
            "eval.at_start=false",
            "lora.enabled=true",
            "training.gradient_checkpointing=true",
        ];
        all.extend_from_slice(base);
        let config = tiny_config(&dir, &all);
        let result = trained(&dir, &config);
        let fingerprints: Vec<_> = std::fs::read_dir(&config.anchors.cache_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        (result, fingerprints)
    };
    let (float, float_anchors) = run(&[]);
    let (quantized, quantized_anchors) = run(&["lora.base_quantization='q8'"]);
    assert_same_run("float vs q8 base", &float, &quantized, &["loss"], 0.03);
    assert_ne!(
        column(&float.0, "loss"),
        column(&quantized.0, "loss"),
        "the run trained on the quantized base, not the float one"
    );
    assert!(
        float_anchors.iter().all(|f| !quantized_anchors.contains(f)),
        "the quantized base's anchors share a cache folder with the float base's"
    );
}

/// Token-level KL needs the policy's full logits, which a chunked LM head never holds: the run
/// is refused before the model loads, naming the key and the way out.
#[test]
fn a_chunked_lm_head_is_refused_with_token_level_kl() {
    let dir = scratch("chunked-kl");
    let config = tiny_config(
        &dir,
        &[
            r#"objective={name="kl-dpo", beta=0.5, lambda_kl=0.1}"#,
            "training.lm_head_chunk_tokens=64",
        ],
    );
    let error = train(&config, &quiet()).unwrap_err().to_string();
    assert!(
        error.contains("`training.lm_head_chunk_tokens` = 64")
            && error.contains("`kl-dpo`")
            && error.contains("set it to 0"),
        "{error}"
    );
    assert!(
        !dir.join("run/metrics.jsonl").exists(),
        "no step ran: {error}"
    );
}

/// `eval.users` limits the held-out pairs to the users it names and the trained user.
#[test]
fn eval_users_limits_the_held_out_pairs() {
    let dir = scratch("eval-users");
    let users = |listed: &str| -> Vec<String> {
        let config = tiny_config(&dir, &[&format!("eval.users={listed}")]);
        let prepared =
            bapo_train::prepare(&config, false, &bapo_train::Progress { quiet: true }).unwrap();
        prepared.eval.preferences.keys().cloned().collect()
    };
    assert_eq!(users(r#"["truthful"]"#), ["truthful"]);
    assert_eq!(users(r#"["contrarian"]"#), ["contrarian", "truthful"]);
    assert_eq!(users("[]"), ["contrarian", "truthful"]);
}

/// A BIG-bench folder that is missing fails the run, naming it, unless `cargo xtask fetch` noted
/// that the registry no longer serves the sets (`bigbench.unavailable` beside it): then the run
/// goes on without them.
#[test]
fn bigbench_sets_the_registry_no_longer_serves_are_skipped_not_fatal() {
    let dir = scratch("no-bb");
    std::fs::create_dir_all(&dir).unwrap();
    let bigbench = dir.join("bigbench");
    let config = tiny_config(
        &dir,
        &[
            &format!("eval.bigbench_dir={:?}", bigbench.display().to_string()),
            "eval.hhh_alignment=4",
            "eval.general_knowledge=4",
            "training.max_steps=1",
        ],
    );
    let quiet = bapo_train::Progress { quiet: true };
    let error = bapo_train::prepare(&config, false, &quiet).err().unwrap();
    assert!(
        error.to_string().contains("bigbench"),
        "the error names the missing folder: {error}"
    );

    std::fs::write(
        bapo_data::unavailable_note(&bigbench),
        "`pip download bigbench==1.0.0` failed\n",
    )
    .unwrap();
    let prepared = bapo_train::prepare(&config, false, &quiet).unwrap();
    assert!(prepared.eval.hhh.is_empty());
    assert!(prepared.eval.general_knowledge.is_empty());
}

/// The knowledge probe is part of every run's evaluation, per kind and in all, and never
/// scores an item about a country (entity) the run trains on; every evaluation's per-item
/// values are logged next to its metrics.
#[test]
fn the_knowledge_probe_leaves_out_trained_entities() {
    let dir = scratch("probe");
    std::fs::create_dir_all(&dir).unwrap();
    let probe = dir.join("probe.jsonl");
    // "sky" and "grass" are entities of the tiny training data; "moon" is not.
    let item = |entity: &str, kind: &str| {
        format!(
            r#"{{"entity":"{entity}","kind":"{kind}","prompt":"the {entity} is","choices":[" blue"," green"],"correct":0}}"#
        )
    };
    let lines = [
        item("sky", "colour"),
        item("grass", "colour"),
        item("moon", "shape"),
    ];
    std::fs::write(&probe, lines.join("\n")).unwrap();
    let config = tiny_config(
        &dir,
        &[
            &format!("eval.knowledge_probe={:?}", probe.display().to_string()),
            "eval.country_facts=10",
            "eval.answer_tokens=4",
            "training.max_steps=1",
        ],
    );
    let prepared =
        bapo_train::prepare(&config, false, &bapo_train::Progress { quiet: true }).unwrap();
    let trained: Vec<&str> = prepared
        .train
        .iter()
        .filter_map(|e| e.tokens.entity.as_deref())
        .collect();
    let kinds: Vec<&str> = prepared
        .eval
        .country_facts
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let expected: Vec<&str> = [("sky", "colour"), ("grass", "colour"), ("moon", "shape")]
        .iter()
        .filter(|(entity, _)| !trained.contains(entity))
        .map(|(_, kind)| *kind)
        .collect();
    assert!(
        trained.contains(&"sky"),
        "the fixture trains on sky: {trained:?}"
    );
    assert_eq!(kinds, expected);

    train(&config, &quiet()).unwrap();
    let rows = log_numbers(&dir.join("run/eval.jsonl"));
    let (_, last) = rows.last().unwrap();
    assert!(last.contains_key("knowledge/country_facts"), "{last:?}");
    assert!(last.contains_key("knowledge/country_shape"), "{last:?}");

    // eval_items.jsonl holds every metric's items, one line per evaluation, and each metric
    // of eval.jsonl is the mean of its items.
    let items = std::fs::read_to_string(dir.join("run/eval_items.jsonl")).unwrap();
    let items: Vec<serde_json::Value> = items
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), rows.len(), "one line per evaluation");
    for ((step, metrics), line) in rows.iter().zip(&items) {
        assert_eq!(line["step"].as_u64(), Some(*step as u64));
        for (name, value) in metrics {
            let values: Vec<f64> = line[name]
                .as_array()
                .unwrap_or_else(|| panic!("no items for {name}"))
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            assert!((mean - value).abs() < 1e-9, "{name}: {mean} vs {value}");
        }
    }
    let held_out = prepared
        .eval
        .preferences
        .values()
        .map(Vec::len)
        .sum::<usize>();
    let last_items = items.last().unwrap();
    assert_eq!(
        last_items["anchor/drift"].as_array().unwrap().len(),
        held_out,
        "one drift per held-out example"
    );
    assert_eq!(
        last_items["knowledge/country_facts"]
            .as_array()
            .unwrap()
            .len(),
        expected.len()
    );
    let untrained: Vec<&str> = ["sky", "grass", "moon"]
        .into_iter()
        .filter(|entity| !trained.contains(entity))
        .collect();
    check_item_labels(&dir.join("run"), last_items, &untrained);
}

/// `eval_item_labels.json` describes the items of every labelled metric, in their order: the
/// probe's items by their entity (`untrained`) with 2 choices each, and the answer metrics
/// exist with one cluster per item.
fn check_item_labels(run: &std::path::Path, items: &serde_json::Value, untrained: &[&str]) {
    let text = std::fs::read_to_string(run.join("eval_item_labels.json")).unwrap();
    let labels: serde_json::Value = serde_json::from_str(&text).unwrap();
    let labels = labels.as_object().unwrap();
    assert!(items.get("answer/length").is_some(), "{items}");
    for (metric, label) in labels {
        let count = items[metric]
            .as_array()
            .unwrap_or_else(|| panic!("labels for {metric}, which has no items"))
            .len();
        for field in ["cluster", "chance", "seen", "shortest_correct"] {
            if let Some(values) = label.get(field) {
                assert_eq!(values.as_array().unwrap().len(), count, "{metric} {field}");
            }
        }
    }
    let probe = &labels["knowledge/country_facts"];
    let n = untrained.len();
    assert_eq!(probe["cluster"], serde_json::json!(untrained));
    assert_eq!(probe["chance"], serde_json::json!(vec![0.5; n]));
    // "blue" is in the training text ("it is blue ."), and " blue" is the shorter choice.
    assert_eq!(probe["seen"], serde_json::json!(vec![true; n]));
    assert_eq!(probe["shortest_correct"], serde_json::json!(vec![true; n]));
    assert_eq!(labels["knowledge/country_facts_norm"], *probe);
    let clusters = labels["anchor/drift"]["cluster"].as_array().unwrap();
    assert!(clusters.iter().all(|c| !c.as_str().unwrap().is_empty()));
}

/// An objective that turns NaN from its `start`-th call on (counted across the test).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NanAfterConfig {
    start: usize,
}

impl ObjectiveConfig for NanAfterConfig {
    fn validate(&self, _objective: &str) -> Result<(), ObjectiveConfigError> {
        Ok(())
    }
}

#[derive(Debug)]
struct NanAfter {
    config: NanAfterConfig,
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

impl Objective for NanAfter {
    fn needs(&self) -> Needs {
        Needs::new().with(Quantity::PolicyLogp(Response::Chosen))
    }

    fn compute(&self, q: &Quantities) -> Result<ObjectiveOutput, ObjectiveError> {
        let pc = q.per_example(Quantity::PolicyLogp(Response::Chosen))?;
        let call = CALLS.fetch_add(1, Ordering::SeqCst);
        let losses = if call >= self.config.start {
            pc.mul_scalar(f64::NAN)
        } else {
            pc.neg()
        };
        Ok(ObjectiveOutput {
            losses,
            metrics: Default::default(),
        })
    }
}

impl ObjectivePlugin for NanAfter {
    const NAME: &'static str = "test-nan-after";
    const SUMMARY: &'static str = "NLL of chosen, NaN from a given call on (tests the NaN guard)";
    type Config = NanAfterConfig;

    fn new(config: NanAfterConfig) -> Self {
        NanAfter { config }
    }
}

bapo_objective::register_objective!(NanAfter);

#[test]
fn a_nan_stops_the_run_naming_the_batch_and_keeping_the_last_good_checkpoint() {
    let dir = scratch("nan");
    CALLS.store(0, Ordering::SeqCst);
    let config = tiny_config(
        &dir,
        &[
            r#"objective={name="test-nan-after", start=5}"#,
            "checkpoint.interval=2",
            "eval.at_start=false",
        ],
    );
    let error = train(&config, &quiet()).unwrap_err();
    let TrainError::NonFinite {
        step,
        lines,
        checkpoint,
        ..
    } = &error
    else {
        panic!("expected a NonFinite error, got {error}");
    };
    assert_eq!(*step, 6, "calls 0..5 are steps 1..5");
    assert_eq!(lines.len(), 4, "the batch's four source lines");
    let checkpoint = checkpoint
        .as_ref()
        .expect("steps 2 and 4 were checkpointed");
    assert!(
        checkpoint.ends_with("step-000004"),
        "{}",
        checkpoint.display()
    );
    assert!(checkpoint.join("trainable.safetensors").exists());
    let message = error.to_string();
    assert!(
        message.contains("preferences.jsonl") && message.contains("step 6"),
        "{message}"
    );
    // Nothing after the NaN was logged.
    let rows = log_numbers(&dir.join("run/metrics.jsonl"));
    assert_eq!(rows.last().unwrap().0, 5);
}

use bapo_objective_kl_dpo as _;
use bapo_objective_mrpo as _;

#[test]
fn kl_dpo_runs_the_live_reference_and_reports_its_kl() {
    let dir = scratch("kl-dpo");
    let config = tiny_config(
        &dir,
        &[
            r#"objective={name="kl-dpo", beta=0.5, lambda_kl=0.1}"#,
            "training.max_steps=12",
            "optimizer.learning_rate=3e-3",
            "eval.at_start=false",
        ],
    );
    train(&config, &quiet()).unwrap();
    let rows = log_numbers(&dir.join("run/metrics.jsonl"));
    let kl = column(&rows, "kl/mean");
    assert!(
        kl[0].abs() < 1e-6,
        "policy = reference at the first step: KL {}",
        kl[0]
    );
    assert!(kl.iter().all(|k| k.is_finite() && *k > -1e-6), "{kl:?}");
    assert!(
        kl[11] > 1e-4,
        "the policy moved away from the reference: {kl:?}"
    );
}

#[test]
fn mrpo_reads_a_second_reference_from_the_config() {
    let dir = scratch("mrpo");
    let second = common::root().join("tests/fixtures/tiny-chat");
    let config = tiny_config(
        &dir,
        &[
            r#"objective={name="mrpo", references=2}"#,
            &format!("model.references=[{:?}]", second.display().to_string()),
            "training.max_steps=4",
            "eval.at_start=false",
        ],
    );
    train(&config, &quiet()).unwrap();
    let rows = log_numbers(&dir.join("run/metrics.jsonl"));
    assert!(column(&rows, "mrpo/alpha").iter().all(|a| a.is_finite()));

    // Without the second reference the run stops before loading anything heavy.
    let config = tiny_config(
        &scratch("mrpo-missing"),
        &[r#"objective={name="mrpo", references=2}"#],
    );
    let message = train(&config, &quiet()).unwrap_err().to_string();
    assert!(message.contains("model.references"), "{message}");
}

/// The step-0 row of a run's `file` (eval.jsonl or eval_items.jsonl), as written.
fn start_row(run: &std::path::Path, file: &str) -> String {
    let text = std::fs::read_to_string(run.join(file)).unwrap();
    let row = text
        .lines()
        .find(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"] == 0)
        .unwrap_or_else(|| panic!("no step-0 row in {file}: {text}"));
    row.to_string()
}

/// The evaluation before training is the reference's whatever the seed or the adapters (LoRA's
/// B starts at zero), so one run stores it under the anchor cache and the next run of the same
/// model and evaluation sets reuses it, exactly; other sets get their own file, and a damaged
/// or edited file is refused naming it.
#[test]
fn the_evaluation_before_training_is_stored_and_reused() {
    let dir = scratch("start-eval");
    let stored = dir.join("anchors/evaluations");
    let run = |tag: &str, sets: &[&str]| -> Result<std::path::PathBuf, TrainError> {
        let out = dir.join(tag);
        let mut all = vec!["training.max_steps=2", "eval.answer_tokens=4"];
        all.extend_from_slice(sets);
        let output = format!("output.dir={:?}", out.display().to_string());
        all.push(&output);
        train(&tiny_config(&dir, &all), &quiet())?;
        Ok(out)
    };
    let files = || -> Vec<std::path::PathBuf> {
        let mut f: Vec<_> = std::fs::read_dir(&stored)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        f.sort();
        f
    };
    let same_start = |a: &std::path::Path, b: &std::path::Path| {
        for file in ["eval.jsonl", "eval_items.jsonl"] {
            assert_eq!(start_row(a, file), start_row(b, file), "{file}");
        }
    };

    // Computed twice, by runs of other seeds and other adapters: the same numbers.
    let a = run("a", &["training.seed=1"]).unwrap();
    assert_eq!(files().len(), 1, "the first run stores it");
    std::fs::remove_dir_all(&stored).unwrap();
    let b = run("b", &["training.seed=2", "lora.enabled=true"]).unwrap();
    same_start(&a, &b);
    let file = files();
    assert_eq!(file.len(), 1, "LoRA or not, one file");
    let file = file[0].clone();

    // Reused, exactly: the next run logs the same bytes at step 0, and a value edited in the
    // file is what it logs.
    let c = run("c", &["training.seed=3"]).unwrap();
    same_start(&a, &c);
    let text = std::fs::read_to_string(&file).unwrap();
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    let name = original["items"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let mut edited = original.clone();
    edited["items"][&name][0] = serde_json::json!(12345.5f64.to_bits());
    std::fs::write(&file, edited.to_string()).unwrap();
    let d = run("d", &["training.seed=4"]).unwrap();
    let logged: serde_json::Value =
        serde_json::from_str(&start_row(&d, "eval_items.jsonl")).unwrap();
    assert_eq!(logged[&name][0], 12345.5, "reused: {logged}");
    assert_eq!(files().len(), 1, "nothing new stored");

    // Other sets: another file, computed (not the edited one).
    let e = run("e", &["training.seed=4", "eval.examples_per_user=3"]).unwrap();
    assert_eq!(files().len(), 2, "another evaluation set is another file");
    let logged: serde_json::Value =
        serde_json::from_str(&start_row(&e, "eval_items.jsonl")).unwrap();
    assert_ne!(logged[&name][0], 12345.5);

    // Refused, naming the file and the way out: damaged, an item missing, another key.
    let mut short = original.clone();
    let kl = short["items"]["kl/heldout"].as_array_mut().unwrap();
    kl.pop();
    let missing = format!(
        "`kl/heldout` has {} items where the evaluation sets have {}",
        kl.len(),
        kl.len() + 1
    );
    let mut other_key = original.clone();
    other_key["key"]["model"] = serde_json::json!("0");
    for (what, text, says) in [
        ("damaged", "{".to_string(), "EOF"),
        ("an item missing", short.to_string(), missing.as_str()),
        (
            "another key",
            other_key.to_string(),
            "its key is not the one",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let tag = format!("refused-{}", what.replace(' ', "-"));
        let e = run(&tag, &["training.seed=5"]).unwrap_err().to_string();
        assert!(
            e.contains(&file.display().to_string())
                && e.contains("delete the file")
                && e.contains(says),
            "{what}: {e}"
        );
    }
}
