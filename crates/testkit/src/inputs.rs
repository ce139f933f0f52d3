//! Objective inputs as plain numbers, turned into [`Quantities`] on demand: the same batch can
//! be evaluated in f32 or f64, with or without autodiff, permuted, split into single examples,
//! or perturbed for finite differences.

use bapo_objective::{Needs, Objective, Quantities, Quantity, Response};
use burn::tensor::{Device, Tensor};
use proptest::prelude::*;

use crate::{Precision, tensor_2d, values};

/// One batch of objective inputs: each quantity is `batch × cols` row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub batch: usize,
    pub entries: Vec<(Quantity, Vec<f64>, usize)>,
}

impl Inputs {
    /// An empty batch of `batch` examples.
    pub fn new(batch: usize) -> Self {
        Inputs {
            batch,
            entries: Vec::new(),
        }
    }

    /// A DPO batch: policy `pc`, `pr` and primary-reference `rc`, `rr` log-probs.
    pub fn preference(pc: Vec<f64>, pr: Vec<f64>, rc: Vec<f64>, rr: Vec<f64>) -> Self {
        Inputs::new(pc.len())
            .set(Quantity::PolicyLogp(Response::Chosen), pc)
            .set(Quantity::PolicyLogp(Response::Rejected), pr)
            .with_reference(0, rc, rr)
    }

    /// Sets reference `k`'s log-probs of chosen and rejected.
    pub fn with_reference(self, k: usize, rc: Vec<f64>, rr: Vec<f64>) -> Self {
        self.set(
            Quantity::ReferenceLogp {
                reference: k,
                response: Response::Chosen,
            },
            rc,
        )
        .set(
            Quantity::ReferenceLogp {
                reference: k,
                response: Response::Rejected,
            },
            rr,
        )
    }

    /// Sets a one-value-per-example quantity.
    pub fn set(self, q: Quantity, values: Vec<f64>) -> Self {
        self.set_2d(q, values, 1)
    }

    /// Sets a quantity with `cols` values per example (anchors).
    pub fn set_2d(mut self, q: Quantity, values: Vec<f64>, cols: usize) -> Self {
        assert_eq!(
            values.len(),
            self.batch * cols,
            "{q}: wrong number of values"
        );
        self.entries.retain(|(k, _, _)| *k != q);
        self.entries.push((q, values, cols));
        self
    }

    /// The values of a quantity.
    pub fn get(&self, q: Quantity) -> &[f64] {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == q)
            .map(|(_, v, _)| v.as_slice())
            .unwrap_or_else(|| panic!("{q} not set"))
    }

    /// Tensors for every quantity on `device`; with `track`, each is a leaf that requires grad
    /// (returned alongside so gradients can be read).
    pub fn tensors(
        &self,
        precision: Precision,
        device: &Device,
        track: bool,
    ) -> (Quantities, Vec<(Quantity, Tensor<2>)>) {
        let mut q = Quantities::new();
        let mut leaves = Vec::new();
        for (k, v, cols) in &self.entries {
            let mut t = tensor_2d(v, self.batch, *cols, precision, device);
            if track {
                t = t.require_grad();
            }
            leaves.push((*k, t.clone()));
            q.insert(*k, t);
        }
        (q, leaves)
    }

    /// Per-example losses.
    pub fn losses(&self, objective: &dyn Objective, precision: Precision) -> Vec<f64> {
        let device = Device::flex();
        let (q, _) = self.tensors(precision, &device, false);
        let out = objective
            .compute(&q)
            .expect("objective computes on complete inputs");
        values(&out.losses)
    }

    /// The sum of the per-example losses, in f64 without autodiff.
    pub fn loss_sum(&self, objective: &dyn Objective) -> f64 {
        self.losses(objective, Precision::F64).iter().sum()
    }

    /// Autodiff gradients of the summed loss w.r.t. every quantity (`None`: no gradient
    /// reached it), in f64.
    pub fn gradients(&self, objective: &dyn Objective) -> Vec<(Quantity, Option<Vec<f64>>)> {
        let device = crate::device();
        let (q, leaves) = self.tensors(Precision::F64, &device, true);
        let out = objective
            .compute(&q)
            .expect("objective computes on complete inputs");
        let grads = out.losses.sum().backward();
        leaves
            .into_iter()
            .map(|(k, t)| (k, t.grad(&grads).map(|g| values(&g))))
            .collect()
    }

    /// Central finite differences of the summed loss w.r.t. quantity `q`, in f64.
    pub fn finite_differences(&self, objective: &dyn Objective, q: Quantity, h: f64) -> Vec<f64> {
        let x = self.get(q).to_vec();
        let cols = x.len() / self.batch;
        crate::central_difference(&x, h, |point| {
            self.clone()
                .set_2d(q, point.to_vec(), cols)
                .loss_sum(objective)
        })
    }

    /// The batch reordered: example `i` of the result is example `order[i]` of this one.
    pub fn permuted(&self, order: &[usize]) -> Self {
        let entries = self
            .entries
            .iter()
            .map(|(k, v, cols)| {
                let rows = order
                    .iter()
                    .flat_map(|&i| v[i * cols..(i + 1) * cols].to_vec())
                    .collect();
                (*k, rows, *cols)
            })
            .collect();
        Inputs {
            batch: order.len(),
            entries,
        }
    }

    /// Example `i` alone.
    pub fn example(&self, i: usize) -> Self {
        self.permuted(&[i])
    }
}

/// A log-probability of a response: negative, in `[-lo, -0.01]`.
pub fn logp(lo: f64) -> impl Strategy<Value = f64> {
    -lo..-0.01f64
}

/// Where base-response log-probs sit relative to the reference's (`pb − rb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kink {
    /// Mostly anywhere, but about a third of the anchors sit exactly on `pb = rb` or within
    /// float noise (±1e-6) of it: the regime of every run's first step, where the plain hinge
    /// and `abs` anchors have their kink.
    Include,
    /// At least 0.01 away from `pb = rb`: for finite-difference checks of anchor forms that
    /// are not differentiable there (`hinge`, `abs`).
    Avoid,
}

/// Random inputs for everything `objective` needs: log-probs in `[-range, -0.01]`, token
/// counts 1..=40, token-level KLs in `[0, 5]`; base-response log-probs placed as `kink` says.
pub fn inputs_for(
    objective: &dyn Objective,
    batch: usize,
    range: f64,
    kink: Kink,
) -> impl Strategy<Value = Inputs> + use<> {
    inputs_for_needs(objective.needs(), batch, range, kink)
}

/// [`inputs_for`] from an objective's [`Needs`].
pub fn inputs_for_needs(
    needs: Needs,
    batch: usize,
    range: f64,
    kink: Kink,
) -> impl Strategy<Value = Inputs> {
    let anchors = needs.anchors_per_prompt;
    let quantities: Vec<Quantity> = needs.quantities.into_iter().collect();
    let strategies: Vec<_> = quantities
        .iter()
        .map(|q| {
            let cols = if q.response() == Response::Base {
                anchors
            } else {
                1
            };
            let n = batch * cols;
            let values: BoxedStrategy<Vec<f64>> = match q {
                Quantity::TokenCount(_) => {
                    proptest::collection::vec((1u32..=40).prop_map(f64::from), n).boxed()
                }
                Quantity::TokenKl { .. } => proptest::collection::vec(0.0..5.0f64, n).boxed(),
                _ => proptest::collection::vec(logp(range), n).boxed(),
            };
            values.prop_map(move |v| (v, cols))
        })
        .collect();
    // Per anchor: None = leave rb as drawn, Some(δ) = put rb at pb + δ.
    let on_the_kink = prop_oneof![
        4 => Just(None),
        1 => Just(Some(0.0)),
        1 => (-1e-6..1e-6f64).prop_map(Some),
    ];
    let placements = proptest::collection::vec(on_the_kink, batch * anchors.max(1));
    (strategies, placements).prop_map(move |(columns, placements)| {
        let mut inputs = Inputs::new(batch);
        for (q, (v, cols)) in quantities.iter().zip(columns) {
            inputs = inputs.set_2d(*q, v, cols);
        }
        match kink {
            Kink::Include => place_on_the_kink(inputs, &placements),
            Kink::Avoid => keep_off_the_kink(inputs),
        }
    })
}

const POLICY_BASE: Quantity = Quantity::PolicyLogp(Response::Base);
const REFERENCE_BASE: Quantity = Quantity::ReferenceLogp {
    reference: 0,
    response: Response::Base,
};

/// Applies `f(rb, pb)` to every reference base log-prob, if both are present.
fn adjust_reference_base(mut inputs: Inputs, f: impl Fn(usize, &mut f64, f64)) -> Inputs {
    let Some(pb) = inputs
        .entries
        .iter()
        .find(|(k, _, _)| *k == POLICY_BASE)
        .map(|e| e.1.clone())
    else {
        return inputs;
    };
    for (k, v, _) in inputs.entries.iter_mut() {
        if *k == REFERENCE_BASE {
            for (i, (r, p)) in v.iter_mut().zip(&pb).enumerate() {
                f(i, r, *p);
            }
        }
    }
    inputs
}

fn place_on_the_kink(inputs: Inputs, placements: &[Option<f64>]) -> Inputs {
    adjust_reference_base(inputs, |i, r, p| {
        if let Some(Some(delta)) = placements.get(i) {
            *r = p + delta;
        }
    })
}

fn keep_off_the_kink(inputs: Inputs) -> Inputs {
    adjust_reference_base(inputs, |_, r, p| {
        if (*r - p).abs() < 0.01 {
            *r = p - 0.01;
        }
    })
}
