//! bf16 mixed precision against an eager PyTorch loop of the same math under
//! `torch.autocast(dtype=torch.bfloat16)` with f32 master weights
//! (`tests/fixtures/autocast/make_autocast_parity.py`): DPO full fine-tuning of the tiny Llama
//! fixture, the same examples, initial weights and AdamW. bapo's f32 and bf16 runs are
//! compared with torch's f32 and autocast runs, side by side.

use std::path::PathBuf;

use bapo_data::{Packing, TokenizedExample};
use bapo_model::{CausalLm, Precision, TokenBatch, sequence_logprobs};
use bapo_objective::registry;
use bapo_objective_dpo as _;
use burn::module::Module;
use burn::tensor::Device;
use serde::Deserialize;

use crate::backend::{Backend, BackendDevice};
use crate::config::OptimizerSection;
use crate::example::{AnchoredExample, ReferenceLogps};
use crate::optimizer::AdamW;
use crate::optimizer_step::optimizer_step;
use crate::step::StepSetup;

#[derive(Deserialize)]
struct Fixture {
    beta: f64,
    learning_rate: f64,
    examples: Vec<Example>,
    f32: Run,
    bf16: Run,
}

#[derive(Deserialize)]
struct Example {
    prompt: Vec<u32>,
    chosen: Vec<u32>,
    rejected: Vec<u32>,
}

/// The initial model's (chosen, rejected) log-probs per example and each step's loss.
#[derive(Deserialize, Debug)]
struct Run {
    logps: Vec<[f64; 2]>,
    losses: Vec<f64>,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
}

fn fixture() -> Fixture {
    let path = manifest_dir().join("tests/fixtures/autocast/autocast_parity.json");
    let text = std::fs::read_to_string(&path).expect("the autocast fixture");
    serde_json::from_str(&text).expect("the autocast fixture parses")
}

/// The fixture's examples with the reference's log-probs of their responses.
fn anchored_examples(fixture: &Fixture, chosen: &[f64], rejected: &[f64]) -> Vec<AnchoredExample> {
    fixture
        .examples
        .iter()
        .enumerate()
        .map(|(i, e)| AnchoredExample {
            tokens: TokenizedExample {
                prompt: e.prompt.clone(),
                chosen: e.chosen.clone(),
                rejected: e.rejected.clone(),
                base: None,
                user: None,
                entity: None,
                line: i + 1,
            },
            base: Vec::new(),
            reference: ReferenceLogps {
                chosen: chosen[i] as f32,
                rejected: rejected[i] as f32,
                base: Vec::new(),
            },
            further_references: Vec::new(),
        })
        .collect()
}

/// bapo's run of the fixture's steps in `precision` on `device` (an autodiff one).
fn bapo_run(fixture: &Fixture, precision: Precision, device: &Device) -> Run {
    let dir = manifest_dir().join("../model/tests/fixtures/hf/tiny-llama");
    let policy = CausalLm::from_hf_dir(&dir, device)
        .expect("tiny fixture loads")
        .0
        .with_precision(precision);
    let reference = policy.valid();
    let plain = device.clone().inner();
    let score = |pick: fn(&Example) -> &Vec<u32>| -> Vec<f64> {
        let batch = TokenBatch::from_pairs(
            fixture
                .examples
                .iter()
                .map(|e| (e.prompt.as_slice(), pick(e).as_slice())),
            0,
        );
        let total = sequence_logprobs(&reference, &batch, &plain)
            .expect("scores")
            .total;
        total
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("f64")
    };
    let (chosen, rejected) = (score(|e| &e.chosen), score(|e| &e.rejected));
    let examples = anchored_examples(fixture, &chosen, &rejected);
    let settings: toml::Table = toml::from_str(&format!("beta = {}", fixture.beta)).unwrap();
    let objective = registry::build("dpo", &settings).expect("dpo");
    let needs = objective.needs();
    let setup = StepSetup {
        objective: objective.as_ref(),
        needs: &needs,
        live_reference: None,
        packing: Packing::Unshared,
        pad_token: 0,
        device,
        max_grad_norm: 0.0,
        memory: Default::default(),
    };
    let mut optimizer = AdamW::new(OptimizerSection {
        learning_rate: fixture.learning_rate,
        weight_decay: 0.0,
        ..OptimizerSection::default()
    });
    let batch: Vec<&AnchoredExample> = examples.iter().collect();
    let mut policy = policy;
    let mut losses = Vec::new();
    for _ in 0..fixture.f32.losses.len() {
        let step = optimizer_step(
            policy,
            &mut optimizer,
            &setup,
            std::slice::from_ref(&batch),
            fixture.learning_rate,
        );
        let Ok((next, report)) = step else {
            panic!("a step failed")
        };
        policy = next;
        losses.push(report.sums["loss"] / examples.len() as f64);
    }
    Run {
        logps: chosen
            .into_iter()
            .zip(rejected)
            .map(|(c, r)| [c, r])
            .collect(),
        losses,
    }
}

fn largest_gap(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn flat(run: &Run) -> Vec<f64> {
    run.logps.iter().flatten().copied().collect()
}

/// On every backend with bf16 (Flex, and libtorch where compiled in):
/// - the initial model's log-probs (the forward alone) equal torch's autocast ones to well
///   within 1/20 of what bf16 changes in them (the same bf16 math differs only where f32
///   accumulation order flips a bf16 rounding, ~2⁻²⁴ / 2⁻⁹ of the time; measured: 1/400 on
///   Flex, 1e-15 on libtorch; the 1/20 was chosen after looking), and f32's equal torch's f32
///   ones to 1e-6 relative;
/// - each step's loss equals torch's within 2⁻⁸ of how far training has moved it (bf16 keeps 8
///   bits; every gradient passes through bf16 roundings that two implementations make
///   differently — torch rounds RoPE's gradient three times where bapo rounds it once — and
///   AdamW's first steps, lr · sign(g), turn a near-zero gradient's flipped sign into a full
///   step). Measured: at most 1.6e-4, where bf16 moves torch's curve by up to 2.6e-4.
#[test]
fn bf16_matches_an_eager_pytorch_autocast_loop() {
    let fixture = fixture();
    for backend in [Backend::Cpu, Backend::TchCpu] {
        if !backend.compiled_in() {
            continue;
        }
        let device = backend.device(0).expect("a CPU backend").autodiff();
        let f32_run = bapo_run(&fixture, Precision::F32, &device);
        let bf16_run = bapo_run(&fixture, Precision::Bf16, &device);
        println!("{backend}: loss per step");
        println!("step  torch f32   bapo f32    torch bf16  bapo bf16");
        for i in 0..fixture.f32.losses.len() {
            println!(
                "{i:>4}  {:.7}  {:.7}  {:.7}  {:.7}",
                fixture.f32.losses[i],
                f32_run.losses[i],
                fixture.bf16.losses[i],
                bf16_run.losses[i]
            );
        }

        let bf16_effect = largest_gap(flat(&fixture.f32), flat(&fixture.bf16));
        assert!(
            bf16_effect > 1e-4,
            "the fixture's bf16 changes its log-probs"
        );
        let gap = largest_gap(flat(&fixture.bf16), flat(&bf16_run));
        assert!(
            gap <= bf16_effect / 20.0,
            "{backend}: bf16 log-probs {gap} from torch's autocast ones (bf16 moves them {bf16_effect})"
        );
        let gap = largest_gap(flat(&fixture.f32), flat(&f32_run));
        let largest = flat(&fixture.f32)
            .iter()
            .fold(0.0, |m: f64, x| m.max(x.abs()));
        assert!(
            gap <= 1e-6 * largest,
            "{backend}: f32 log-probs {gap} from torch's"
        );

        let start = fixture.bf16.losses[0];
        for (step, (&ours, &theirs)) in bf16_run.losses.iter().zip(&fixture.bf16.losses).enumerate()
        {
            let tolerance = (start - theirs).abs() / 256.0 + 1e-6;
            assert!(
                (ours - theirs).abs() <= tolerance,
                "{backend}: step {step}: bf16 loss {ours} vs torch autocast {theirs} (tolerance {tolerance})"
            );
        }
        let gap = largest_gap(f32_run.losses.clone(), fixture.f32.losses.clone());
        assert!(gap <= 1e-5, "{backend}: f32 losses {gap} from torch's");
    }
}
