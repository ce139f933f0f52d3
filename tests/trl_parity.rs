//! Parity with TRL: bapo's `dpo` objective against `DPOTrainer.dpo_loss` (sigmoid loss, label
//! smoothing, reference-free) on 300 random examples, recorded by
//! `tests/fixtures/trl/make_dpo_parity.py` into `tests/fixtures/trl/dpo_parity.json`.

use bapo_objective::{Objective, Quantities, Quantity, Response, registry};
use bapo_objective_dpo as _;
use bapo_testkit::{Precision, assert_close, device, tensor, values};
use burn::tensor::Device;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    trl: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    beta: f64,
    label_smoothing: f64,
    reference_free: bool,
    pc: Vec<f64>,
    pr: Vec<f64>,
    rc: Vec<f64>,
    rr: Vec<f64>,
    loss: Vec<f64>,
    chosen_reward: Vec<f64>,
    rejected_reward: Vec<f64>,
    grad_chosen: Vec<f64>,
    grad_rejected: Vec<f64>,
}

fn fixture() -> Fixture {
    bapo_integration_tests::fixture("trl/dpo_parity.json")
}

impl Case {
    fn objective(&self) -> Box<dyn Objective> {
        let mut settings = toml::Table::new();
        settings.insert("beta".into(), self.beta.into());
        settings.insert("label_smoothing".into(), self.label_smoothing.into());
        settings.insert("reference_free".into(), self.reference_free.into());
        registry::build("dpo", &settings).expect("fixture settings are valid")
    }

    fn label(&self) -> String {
        format!(
            "beta {} label_smoothing {} reference_free {}",
            self.beta, self.label_smoothing, self.reference_free
        )
    }

    /// The case's quantities; the policy log-probs are tracked leaves when `device` has
    /// autodiff.
    fn quantities(
        &self,
        precision: Precision,
        device: &Device,
    ) -> (Quantities, [burn::tensor::Tensor<1>; 2]) {
        let t = |v: &[f64]| tensor(v, precision, device);
        let (pc, pr) = if device.is_autodiff() {
            (t(&self.pc).require_grad(), t(&self.pr).require_grad())
        } else {
            (t(&self.pc), t(&self.pr))
        };
        let q = Quantities::new()
            .with(Quantity::PolicyLogp(Response::Chosen), pc.clone())
            .with(Quantity::PolicyLogp(Response::Rejected), pr.clone())
            .with(
                Quantity::ReferenceLogp {
                    reference: 0,
                    response: Response::Chosen,
                },
                t(&self.rc),
            )
            .with(
                Quantity::ReferenceLogp {
                    reference: 0,
                    response: Response::Rejected,
                },
                t(&self.rr),
            );
        (q, [pc, pr])
    }
}

#[test]
fn dpo_matches_trl_in_f64_to_1e6_relative() {
    let fixture = fixture();
    assert_eq!(
        fixture.trl, "0.19.1",
        "fixture made with the documented TRL version"
    );
    let examples: usize = fixture.cases.iter().map(|c| c.loss.len()).sum();
    assert!(examples >= 300, "{examples} examples");

    for case in &fixture.cases {
        let label = case.label();
        let device = device();
        let (q, [pc, pr]) = case.quantities(Precision::F64, &device);
        let out = case.objective().compute(&q).unwrap();
        assert_close(
            &values(&out.losses),
            &case.loss,
            1e-6,
            1e-12,
            &format!("loss, {label}"),
        );

        // TRL's rewards always subtract the reference log-probs it is given, even when
        // reference-free; bapo's reference-free mode has no reference (rewards = β·p), so the
        // rewards are compared where both use the reference.
        if !case.reference_free {
            let chosen = values(out.metrics.get("rewards/chosen").unwrap());
            let rejected = values(out.metrics.get("rewards/rejected").unwrap());
            assert_close(
                &chosen,
                &case.chosen_reward,
                1e-6,
                1e-12,
                &format!("rewards/chosen, {label}"),
            );
            assert_close(
                &rejected,
                &case.rejected_reward,
                1e-6,
                1e-12,
                &format!("rewards/rejected, {label}"),
            );
            // TRL logs `rewards/margins` as chosen − rejected reward.
            let margins: Vec<f64> = case
                .chosen_reward
                .iter()
                .zip(&case.rejected_reward)
                .map(|(c, r)| c - r)
                .collect();
            assert_close(
                &values(out.metrics.get("rewards/margins").unwrap()),
                &margins,
                1e-6,
                1e-9,
                &format!("rewards/margins, {label}"),
            );
        }

        let grads = out.losses.sum().backward();
        let grad_chosen = values(&pc.grad(&grads).unwrap());
        let grad_rejected = values(&pr.grad(&grads).unwrap());
        assert_close(
            &grad_chosen,
            &case.grad_chosen,
            1e-6,
            1e-12,
            &format!("d/d pc, {label}"),
        );
        assert_close(
            &grad_rejected,
            &case.grad_rejected,
            1e-6,
            1e-12,
            &format!("d/d pr, {label}"),
        );
    }
}

#[test]
fn dpo_matches_trl_in_f32_within_f32_rounding() {
    // The production path runs in f32: the same values agree to f32 rounding of summed
    // log-probs of magnitude up to a few hundred.
    for case in &fixture().cases {
        let (q, _) = case.quantities(Precision::F32, &Device::flex());
        let out = case.objective().compute(&q).unwrap();
        assert_close(
            &values(&out.losses),
            &case.loss,
            1e-4,
            1e-5,
            &format!("f32 loss, {}", case.label()),
        );
    }
}
