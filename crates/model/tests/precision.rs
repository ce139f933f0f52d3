//! bf16 mixed precision (`Precision::Bf16`): the matrix products run in bf16 and what follows
//! the LM head stays f32, on every tiny architecture. The training curve against an eager
//! PyTorch autocast loop is bapo-train's `precision_tests`.

use std::path::PathBuf;

use bapo_model::{
    CausalLm, LoraSettings, Precision, PromptGroup, SharedPromptBatch, TokenBatch, apply_lora,
    scored_logits, sequence_logprobs, shared_sequence_logprobs,
};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

const ARCHITECTURES: [&str; 4] = ["tiny-llama", "tiny-llama-tied", "tiny-qwen2", "tiny-gpt2"];

fn load(name: &str, device: &Device) -> CausalLm {
    CausalLm::from_hf_dir(&fixtures().join(name), device)
        .unwrap()
        .0
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn batch() -> TokenBatch {
    let prompts: [&[u32]; 3] = [&[3, 17, 42, 99, 7], &[5, 6], &[61, 62, 63, 64]];
    let completions: [&[u32]; 3] = [&[8, 1, 4, 120], &[77], &[30, 2, 9, 11, 12, 13]];
    TokenBatch::from_pairs(prompts.into_iter().zip(completions), 0)
}

/// Under bf16 the LM head's product is bf16 (every logit is a bf16 value), but the logits
/// come out as f32 and the log-softmax of the log-probs runs in f32: each scored token's
/// log-prob is the f64 log-softmax of those logits to f32 rounding. A log-softmax computed in
/// bf16 is off by ~1e-2 here (planted in tests/planted-mutations.toml).
#[test]
fn bf16_products_feed_an_f32_log_softmax_on_every_architecture() {
    let device = Device::flex();
    for name in ARCHITECTURES {
        let model = load(name, &device).with_precision(Precision::Bf16);
        let scored = scored_logits(&model, &batch(), &device).unwrap();
        let logits = scored.logits.clone().expect("scored tokens");
        assert_eq!(logits.dtype(), DType::F32, "{name}: logits are f32");
        let [rows, vocab] = logits.dims();
        let logits = values(logits);
        for &x in &logits {
            assert_eq!(
                x,
                half::bf16::from_f32(x).to_f32(),
                "{name}: a logit that is no bf16 value"
            );
        }
        let logprobs = scored.logprobs(&device);
        assert_eq!(logprobs.per_token.dtype(), DType::F32, "{name}");
        let per_token = values(logprobs.per_token);
        for row in 0..rows {
            let z = &logits[row * vocab..(row + 1) * vocab];
            let max = z.iter().fold(f64::MIN, |m, &x| m.max(f64::from(x)));
            let lse = max
                + z.iter()
                    .map(|&x| (f64::from(x) - max).exp())
                    .sum::<f64>()
                    .ln();
            let expected = f64::from(z[scored.targets[row] as usize]) - lse;
            let got = f64::from(per_token[scored.slots[row]]);
            assert!(
                (got - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "{name}: token {row}: {got} vs f64 log-softmax {expected}"
            );
        }
    }
}

/// bf16 scores are the f32 ones to bf16's precision: per token within 0.05 nats (a bf16
/// logit is off by up to 2⁻⁹ of its size, a few ulps compound through two blocks), and not
/// equal to them (the products did run in bf16). The masked path (a shared prompt) agrees
/// with one row per completion in bf16 too.
#[test]
fn bf16_scores_are_the_f32_scores_to_bf16_precision() {
    let device = Device::flex();
    for name in ARCHITECTURES {
        let f32_model = load(name, &device);
        let bf16_model = load(name, &device).with_precision(Precision::Bf16);
        let exact = values(
            sequence_logprobs(&f32_model, &batch(), &device)
                .unwrap()
                .per_token,
        );
        let mixed = values(
            sequence_logprobs(&bf16_model, &batch(), &device)
                .unwrap()
                .per_token,
        );
        let worst = exact
            .iter()
            .zip(&mixed)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.05, "{name}: bf16 is {worst} nats from f32");
        assert!(worst > 0.0, "{name}: bf16 scores equal f32's bit for bit");

        let shared = SharedPromptBatch {
            groups: vec![PromptGroup {
                prompt: vec![3, 17, 42, 99, 7],
                completions: vec![vec![8, 1, 4], vec![77, 5]],
            }],
            pad_id: 0,
        };
        let packed = values(
            shared_sequence_logprobs(&bf16_model, &shared, &device)
                .unwrap()
                .total,
        );
        let rows = values(
            sequence_logprobs(&bf16_model, &shared.unshared(), &device)
                .unwrap()
                .total,
        );
        for (a, b) in packed.iter().zip(&rows) {
            assert!((a - b).abs() < 0.05, "{name}: shared {a} vs rows {b}");
        }
    }
}

/// A base held in bf16 (`lora.base_dtype`): the matrices are bf16 and frozen, norms and
/// LoRA's factors f32; a bf16 forward gives the logits it gives over the f32 base to bf16
/// precision (the projections round the same way, once when loading instead of at every
/// product; the embedding rows, which autocast leaves f32, are rounded too, as in a PEFT model
/// loaded in bf16), and the adapters get f32 gradients.
#[test]
fn a_bf16_base_under_f32_adapters_computes_as_the_f32_base_does() {
    let device = Device::flex().autodiff();
    let settings = LoraSettings {
        target: r"(q_proj|c_attn)\.weight$".into(),
        ..LoraSettings::default()
    };
    for name in ARCHITECTURES {
        let over_f32 = load(name, &device).with_precision(Precision::Bf16);
        let over_bf16 = load(name, &device)
            .with_precision(Precision::Bf16)
            .with_bf16_matrices();
        let adapted = |model: CausalLm| -> CausalLm {
            device.seed(7);
            match model {
                CausalLm::Llama(m) => CausalLm::Llama(apply_lora(m, &settings).unwrap()),
                CausalLm::Gpt2(m) => CausalLm::Gpt2(apply_lora(m, &settings).unwrap()),
            }
        };
        let (over_f32, over_bf16) = (adapted(over_f32), adapted(over_bf16));
        let mut dtypes = Dtypes::default();
        over_bf16.visit(&mut dtypes);
        assert!(dtypes.adapters > 0, "{name}: adapters attached");
        assert!(
            dtypes.wrong.is_empty(),
            "{name}: parameters of the wrong dtype: {:?}",
            dtypes.wrong
        );

        let logits = |model: &CausalLm| {
            let scored = scored_logits(model, &batch(), &device).unwrap();
            scored.logits.unwrap()
        };
        let (a, b) = (values(logits(&over_f32)), values(logits(&over_bf16)));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        let largest = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(
            worst <= largest / 64.0,
            "{name}: logits {worst} apart over a bf16 base (largest {largest})"
        );
        let grads = logits(&over_bf16).sum().backward();
        let mut found = 0;
        over_bf16.visit(&mut AdapterGradients {
            grads: &grads,
            found: &mut found,
        });
        assert!(found > 0, "{name}: no adapter got an f32 gradient");
    }
}

/// Records parameters whose dtype is not the one a bf16 base under LoRA should have.
#[derive(Default)]
struct Dtypes {
    adapters: usize,
    wrong: Vec<String>,
}

impl ModuleVisitor for Dtypes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let is_adapter = param.is_require_grad();
        let expected = if is_adapter || D == 1 {
            DType::F32
        } else {
            DType::BF16
        };
        self.adapters += usize::from(is_adapter);
        let dtype = param.base().dtype();
        if dtype != expected {
            self.wrong
                .push(format!("{:?} {dtype:?}", param.lazy_shape()));
        }
    }
}

struct AdapterGradients<'a> {
    grads: &'a burn::tensor::Gradients,
    found: &'a mut usize,
}

impl ModuleVisitor for AdapterGradients<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad()
            && let Some(grad) = param.val().grad(self.grads)
        {
            assert_eq!(grad.dtype(), DType::F32);
            *self.found += 1;
        }
    }
}

/// LoRA under bf16 adds its update as PEFT does (`x·W + scale·(x·A)·B`): with an adapter
/// whose update moves the logits, bf16 logits are the f32 ones to bf16 precision (a merged
/// weight added to the update again would move them by the whole update once more).
#[test]
fn bf16_lora_projections_are_the_f32_ones_to_bf16_precision() {
    let device = Device::flex();
    let settings = LoraSettings {
        target: r"(q_proj|v_proj|c_attn|c_fc)\.weight$".into(),
        ..LoraSettings::default()
    };
    for name in ARCHITECTURES {
        device.seed(11);
        let plain = load(name, &device);
        let adapted = match plain {
            CausalLm::Llama(m) => CausalLm::Llama(apply_lora(m, &settings).unwrap()),
            CausalLm::Gpt2(m) => CausalLm::Gpt2(apply_lora(m, &settings).unwrap()),
        };
        let without = values(
            scored_logits(&adapted, &batch(), &device)
                .unwrap()
                .logits
                .unwrap(),
        );
        let trained = adapted.map(&mut FillUpFactors {
            value: 0.2,
            path: Vec::new(),
        });
        let logits = |model: &CausalLm| {
            values(
                scored_logits(model, &batch(), &device)
                    .unwrap()
                    .logits
                    .unwrap(),
            )
        };
        let exact = logits(&trained);
        let mixed = logits(&trained.clone().with_precision(Precision::Bf16));
        let gap = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
        };
        let largest = exact.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let update = gap(&exact, &without);
        let bf16 = gap(&exact, &mixed);
        assert!(
            update > largest / 4.0,
            "{name}: the adapter moves the logits ({update})"
        );
        // bf16 rounds each product to 2⁻⁹ of its size, through a few layers: 1/64 of the
        // logits' and the update's sizes (an update added twice is off by the whole update).
        assert!(
            bf16 <= (largest + update) / 64.0,
            "{name}: bf16 LoRA logits {bf16} from f32 (largest {largest}, update {update})"
        );
    }
}

/// Sets every LoRA up-projection factor (`…lora.b`, zero when attached) to a constant.
struct FillUpFactors {
    value: f32,
    path: Vec<String>,
}

impl burn::module::ModuleMapper for FillUpFactors {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.path.ends_with(&["lora".to_string(), "b".to_string()]) {
            let value = self.value;
            param.map(|t| t.zeros_like().add_scalar(value))
        } else {
            param
        }
    }
}

/// Decoding in bf16 with continuous batching: rows that end make room for waiting prompts,
/// whose cache is padded on the left to the running rows' length in the cache's own dtype
/// (zeros of another dtype made Flex's concatenation panic). A stop token that one prompt
/// produces early makes the rows end at different steps, on every architecture.
#[test]
fn bf16_generation_refills_its_batch() {
    let device = Device::flex();
    let prompts: Vec<Vec<u32>> = vec![
        vec![3, 17, 42, 99, 7],
        vec![8, 1],
        vec![77, 30, 2],
        vec![5; 9],
        vec![61],
        vec![12, 13, 14, 15],
    ];
    for name in ARCHITECTURES {
        let model = load(name, &device).with_precision(Precision::Bf16);
        let alone = bapo_model::GenerationConfig {
            max_new_tokens: 6,
            max_batch: 1,
            ..bapo_model::GenerationConfig::default()
        };
        let first = bapo_model::generate(&model, &prompts[..1], &alone, &device, |_, _| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let config = bapo_model::GenerationConfig {
            stop_tokens: vec![first[0][1]],
            max_batch: 2,
            ..alone
        };
        let out = bapo_model::generate(&model, &prompts, &config, &device, |_, _| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.len(), prompts.len(), "{name}");
        assert!(
            out.iter().all(|o| !o.is_empty() && o.len() <= 6),
            "{name}: {out:?}"
        );
        assert!(
            out.iter().any(|o| o.len() < 6),
            "{name}: no row stopped early: {out:?}"
        );
    }
}
