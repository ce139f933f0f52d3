//! The staged backward gives the gradients of one `loss.backward()`: every parameter's, to
//! float rounding, on each tiny transformers-made architecture, for full fine-tuning and
//! LoRA, both packings, and objectives with and without base responses and token-level KL.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bapo_data::{Packing, TokenizedExample};
use bapo_model::file_projections::FileProjections;
use bapo_model::file_tables::FileTables;
use bapo_model::gguf::BlockRows;
use bapo_model::walk::{ParamPath, PathVisitor, visit_with_paths};
use bapo_model::{CausalLm, LoraSettings, apply_lora};
use bapo_objective::{Objective, registry};
use bapo_objective_bapo as _;
use bapo_objective_dpo as _;
use bapo_objective_kl_dpo as _;
use burn::module::{Module, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor};

use crate::example::{AnchoredExample, ReferenceLogps};
use crate::step::{GradientSink, MemorySaving, StepSetup, micro_batch};

fn tiny_model(name: &str, device: &Device) -> CausalLm {
    // The package folder at run time (not the one the binary was built in).
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../model/tests/fixtures/hf")
        .join(name);
    CausalLm::from_hf_dir(&dir, device)
        .expect("tiny fixture loads")
        .0
}

/// Three examples of different lengths, with two base responses each and made-up reference
/// log-probs (the gradients do not care where those come from).
fn examples() -> Vec<AnchoredExample> {
    let tokens = |seed: u32, n: usize| -> Vec<u32> {
        (0..n as u32)
            .map(|i| (seed * 37 + i * 11) % 120 + 3)
            .collect()
    };
    (0..3u32)
        .map(|e| AnchoredExample {
            tokens: TokenizedExample {
                prompt: tokens(e + 1, 4 + e as usize),
                chosen: tokens(e + 10, 3 + e as usize),
                rejected: tokens(e + 20, 5 - e as usize),
                base: None,
                user: None,
                entity: None,
                line: e as usize + 1,
            },
            base: vec![tokens(e + 30, 2 + e as usize), tokens(e + 40, 4)],
            reference: ReferenceLogps {
                chosen: -20.0 - e as f32,
                rejected: -22.0 + e as f32,
                base: vec![-9.0, -15.0 - e as f32],
            },
            further_references: Vec::new(),
        })
        .collect()
}

fn objective(name: &str, settings: &str) -> Box<dyn Objective> {
    let table: toml::Table = toml::from_str(settings).expect("valid settings");
    registry::build(name, &table).expect("a registered objective")
}

/// Every trained parameter's gradient, by module path, and the loss.
fn gradients(
    policy: &CausalLm,
    reference: &CausalLm,
    objective: &dyn Objective,
    packing: Packing,
    memory: MemorySaving,
    device: &Device,
) -> (BTreeMap<String, Vec<f32>>, f64) {
    let examples = examples();
    let batch: Vec<&AnchoredExample> = examples.iter().collect();
    let needs = objective.needs();
    let mut accumulator = GradientsAccumulator::<CausalLm>::new();
    let mut sink = GradientSink {
        policy,
        accumulator: &mut accumulator,
        step_examples: batch.len(),
    };
    let setup = StepSetup {
        objective,
        needs: &needs,
        live_reference: Some(reference),
        packing,
        pad_token: 0,
        device,
        max_grad_norm: 0.0,
        memory,
    };
    let out = micro_batch(&setup, &batch, &mut sink)
        .unwrap_or_else(|e| panic!("the micro-batch runs: {e}"));
    let loss = out.output.losses.sum().into_scalar::<f64>();
    let grads = accumulator.grads();
    let mut collect = Collect {
        grads: &grads,
        found: BTreeMap::new(),
    };
    visit_with_paths(policy, &mut collect);
    (collect.found, loss)
}

struct Collect<'a> {
    grads: &'a GradientsParams,
    found: BTreeMap<String, Vec<f32>>,
}

impl PathVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, path: &ParamPath, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let values = grad
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32");
            self.found.insert(path.dotted(), values);
        }
    }
}

fn norm(values: impl Iterator<Item = f64>) -> f64 {
    values.map(|x| x * x).sum::<f64>().sqrt()
}

/// `‖a − b‖ / max(‖a‖, 1e-3)`: the issue's relative measure (≤ 1e-6 in f32), with a floor
/// for gradients that cancel to almost nothing (Qwen2's k-projection bias, which the softmax
/// all but ignores, has norm ~3e-5 here): their rounding is that of their terms, which are
/// not smaller than ~1e-3.
fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    let difference = norm(a.iter().zip(b).map(|(x, y)| f64::from(*x) - f64::from(*y)));
    difference / norm(a.iter().map(|x| f64::from(*x))).max(1e-3)
}

fn check_same_gradients(
    what: &str,
    expected: &(BTreeMap<String, Vec<f32>>, f64),
    found: &(BTreeMap<String, Vec<f32>>, f64),
) {
    assert_eq!(
        expected.0.keys().collect::<Vec<_>>(),
        found.0.keys().collect::<Vec<_>>(),
        "{what}: the same parameters have gradients"
    );
    assert!(!expected.0.is_empty(), "{what}: something trains");
    for (path, a) in &expected.0 {
        let difference = relative_difference(a, &found.0[path]);
        assert!(
            difference <= 1e-6,
            "{what}: the gradient of {path} differs by {difference:e} (relative)"
        );
    }
    assert!(
        (expected.1 - found.1).abs() <= 1e-6 * expected.1.abs().max(1.0),
        "{what}: loss {} instead of {}",
        found.1,
        expected.1
    );
}

const SAVINGS: [(&str, MemorySaving); 7] = [
    (
        "recomputed blocks",
        MemorySaving {
            gradient_checkpointing: true,
            lm_head_chunk_tokens: 0,
            recompute_chunk_rows: 0,
        },
    ),
    (
        "recomputed blocks a row at a time",
        MemorySaving {
            gradient_checkpointing: true,
            recompute_chunk_rows: 1,
            lm_head_chunk_tokens: 0,
        },
    ),
    (
        "recomputed blocks two rows at a time, with the LM head in chunks",
        MemorySaving {
            gradient_checkpointing: true,
            recompute_chunk_rows: 2,
            lm_head_chunk_tokens: 3,
        },
    ),
    (
        "LM head in chunks of 4",
        MemorySaving {
            gradient_checkpointing: false,
            recompute_chunk_rows: 0,
            lm_head_chunk_tokens: 4,
        },
    ),
    (
        "both",
        MemorySaving {
            gradient_checkpointing: true,
            recompute_chunk_rows: 0,
            lm_head_chunk_tokens: 5,
        },
    ),
    (
        "LM head one token at a time",
        MemorySaving {
            gradient_checkpointing: false,
            recompute_chunk_rows: 0,
            lm_head_chunk_tokens: 1,
        },
    ),
    (
        "LM head in one chunk larger than the batch",
        MemorySaving {
            gradient_checkpointing: false,
            recompute_chunk_rows: 0,
            lm_head_chunk_tokens: 100_000,
        },
    ),
];

fn check_architecture(name: &str) {
    let device = bapo_testkit::device();
    let full = tiny_model(name, &device);
    let reference = full.valid();
    let lora = apply_lora(
        tiny_model(name, &device),
        &LoraSettings {
            // Adapters on every projection of both families, the LM head included when it is
            // a separate matrix, so that LoRA's gradients reach each stage.
            target: r"(proj|c_attn|c_fc|lm_head)\.weight$".into(),
            ..LoraSettings::default()
        },
    )
    .expect("valid LoRA settings");
    let bapo = objective("bapo", "num_anchors = 2");
    let dpo = objective("dpo", "");
    for (policy, training) in [(&full, "full"), (&lora, "LoRA")] {
        for (objective, packing) in [(&bapo, Packing::SharedPrompt), (&dpo, Packing::Unshared)] {
            let plain = gradients(
                policy,
                &reference,
                objective.as_ref(),
                packing,
                MemorySaving::default(),
                &device,
            );
            for (saving, memory) in SAVINGS {
                let what = format!(
                    "{name}, {training}, {}, {packing:?}, {saving}",
                    objective.name()
                );
                let staged = gradients(
                    policy,
                    &reference,
                    objective.as_ref(),
                    packing,
                    memory,
                    &device,
                );
                check_same_gradients(&what, &plain, &staged);
            }
        }
    }
}

#[test]
fn staged_gradients_equal_one_backward_on_llama() {
    check_architecture("tiny-llama");
}

#[test]
fn staged_gradients_equal_one_backward_on_tied_llama() {
    check_architecture("tiny-llama-tied");
}

#[test]
fn staged_gradients_equal_one_backward_on_qwen2() {
    check_architecture("tiny-qwen2");
}

#[test]
fn staged_gradients_equal_one_backward_on_gpt2() {
    check_architecture("tiny-gpt2");
}

/// Token-level KL needs the policy's logits: recomputed blocks keep them (the LM head runs
/// whole), and give its gradients too.
#[test]
fn recomputed_blocks_keep_token_level_kl() {
    let device = bapo_testkit::device();
    let policy = tiny_model("tiny-llama", &device);
    // A reference other than the policy, so that the KL and its gradient are not zero.
    let reference = tiny_model("tiny-llama-tied", &device).valid();
    let kl_dpo = objective("kl-dpo", "lambda_kl = 0.5\non = [\"chosen\"]");
    let plain = gradients(
        &policy,
        &reference,
        kl_dpo.as_ref(),
        Packing::SharedPrompt,
        MemorySaving::default(),
        &device,
    );
    let recomputed = gradients(
        &policy,
        &reference,
        kl_dpo.as_ref(),
        Packing::SharedPrompt,
        SAVINGS[0].1,
        &device,
    );
    check_same_gradients("kl-dpo, recomputed blocks", &plain, &recomputed);
}

/// [`gradients`] of DPO on the shared-prompt packing, the objective the tests below train.
fn dpo_gradients(
    policy: &CausalLm,
    reference: &CausalLm,
    memory: MemorySaving,
    device: &Device,
) -> (BTreeMap<String, Vec<f32>>, f64) {
    let dpo = objective("dpo", "");
    gradients(
        policy,
        reference,
        dpo.as_ref(),
        Packing::SharedPrompt,
        memory,
        device,
    )
}

/// LoRA on the LM head alone: nothing below the head trains, so the trunk's graph is not
/// tracked and its stage is skipped; the head's adapters still get one backward's gradients.
#[test]
fn a_head_only_adapter_gets_the_same_gradients() {
    let device = bapo_testkit::device();
    let policy = apply_lora(
        tiny_model("tiny-llama", &device),
        &LoraSettings {
            target: r"lm_head\.weight$".into(),
            ..LoraSettings::default()
        },
    )
    .expect("valid LoRA settings");
    let reference = tiny_model("tiny-llama", &device).valid();
    let plain = dpo_gradients(&policy, &reference, MemorySaving::default(), &device);
    for (saving, memory) in SAVINGS {
        let staged = dpo_gradients(&policy, &reference, memory, &device);
        check_same_gradients(&format!("head-only LoRA, {saving}"), &plain, &staged);
    }
}

/// `model` with its embedding and LM head moved out of its parameters into tables held as
/// rows (as a quantized GGUF base holds them), applied 7 rows of the vocabulary at a time.
fn with_tables(model: &CausalLm) -> CausalLm {
    let CausalLm::Llama(llama) = model else {
        unreachable!("a Llama")
    };
    let rows = |t: Tensor<2>| {
        let [vocab, width] = t.dims();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32");
        BlockRows::from_f32([vocab, width], &values)
    };
    let mut moved = llama.clone();
    let embedding = rows(llama.embedding_weight());
    let head = llama
        .lm_head
        .as_ref()
        .map(|head| rows(head.weight.val().transpose()));
    moved.tables = Some(FileTables::new(embedding, head).with_slice_rows(7));
    moved.embed_tokens = None;
    moved.lm_head = None;
    CausalLm::Llama(moved)
}

/// A frozen head held in tables (a quantized GGUF base's): the staged backward writes its
/// input's gradient out slice by slice (`FileTables::head_gradient`) where autodiff computed
/// it; LoRA on the blocks gets the gradients of one backward through the same head held as
/// a parameter, tied and separate, with every saving.
#[test]
fn a_head_held_in_tables_gives_the_same_gradients() {
    let device = bapo_testkit::device();
    for name in ["tiny-llama", "tiny-llama-tied"] {
        let policy = apply_lora(
            tiny_model(name, &device),
            &LoraSettings {
                target: r"proj\.weight$".into(),
                ..LoraSettings::default()
            },
        )
        .expect("valid LoRA settings");
        let in_tables = with_tables(&policy);
        let reference = tiny_model(name, &device).valid();
        let plain = dpo_gradients(&policy, &reference, MemorySaving::default(), &device);
        for (saving, memory) in SAVINGS {
            let staged = dpo_gradients(&in_tables, &reference, memory, &device);
            check_same_gradients(&format!("{name}, tables, {saving}"), &plain, &staged);
        }
    }
}

/// `model` with every decoder projection's frozen weight moved into rows held beside it (as
/// `lora.base_quantization = "gguf"` holds a GGUF file's blocks), its weight parameter a zero
/// placeholder.
fn with_file_projections(model: &CausalLm, device: &Device) -> CausalLm {
    let CausalLm::Llama(llama) = model else {
        unreachable!("a Llama")
    };
    let mut moved = llama.clone();
    let held = |linear: &mut burn::nn::Linear| -> std::sync::Arc<BlockRows> {
        let weight = linear.weight.val().transpose();
        let [out, input] = weight.dims();
        let values = weight
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32");
        let zeros = Tensor::<2>::zeros([1, 1], device).expand([input, out]);
        linear.weight = Param::from_tensor(zeros).set_require_grad(false);
        std::sync::Arc::new(BlockRows::from_f32([out, input], &values))
    };
    for block in &mut moved.layers {
        let a = &mut block.attention;
        let weights = [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj].map(held);
        a.file_weights = Some(FileProjections(weights.to_vec()));
        let m = &mut block.mlp;
        let weights = [&mut m.gate_proj, &mut m.up_proj, &mut m.down_proj].map(held);
        m.file_weights = Some(FileProjections(weights.to_vec()));
    }
    CausalLm::Llama(moved)
}

/// Projections held in the file's blocks (`lora.base_quantization = "gguf"`): LoRA's factors
/// get the gradients they get over the same weights held as parameters, with every saving.
#[test]
fn projections_held_in_file_blocks_give_the_same_gradients() {
    let device = bapo_testkit::device();
    let settings = LoraSettings {
        target: r"proj\.weight$".into(),
        ..LoraSettings::default()
    };
    for name in ["tiny-llama", "tiny-qwen2"] {
        let dense = tiny_model(name, &device);
        let moved = with_file_projections(&dense, &device);
        // The same factors on both, copied: seeding the device's generator before each draw
        // is not enough while other tests draw from it on other threads.
        let dense = apply_lora(dense, &settings).expect("valid LoRA settings");
        let moved = apply_lora(moved, &settings).expect("valid LoRA settings");
        let factors = crate::params::trainable_parameters(&dense);
        let moved = crate::params::load_trainable(moved, &factors).expect("the same adapters");
        let reference = tiny_model(name, &device).valid();
        let plain = dpo_gradients(&dense, &reference, MemorySaving::default(), &device);
        let savings = [("no saving", MemorySaving::default())];
        for (saving, memory) in savings.into_iter().chain(SAVINGS) {
            let found = dpo_gradients(&moved, &reference, memory, &device);
            check_same_gradients(&format!("{name}, file blocks, {saving}"), &plain, &found);
        }
    }
}
