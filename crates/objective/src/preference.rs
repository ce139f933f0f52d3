//! Building blocks shared by preference objectives: a numerically stable log-sigmoid, the
//! DPO sigmoid loss of a log-ratio difference, and TRL's reward metrics. They live in the API
//! crate so that every objective crate can depend on this crate alone.

use burn::tensor::Tensor;

use crate::output::Metrics;
use crate::quantity::ObjectiveError;
use crate::quantity::{Quantities, Quantity, Response};

/// `log σ(x)`, stable for any finite `x` and with the exact derivative `σ(−x)` everywhere,
/// including `x = 0` (where a `min(x, 0) − log1p(e^{−|x|})` form picks a one-sided
/// derivative).
///
/// Two branches, each evaluated only on inputs where it cannot overflow:
/// `x ≥ 0: −log1p(e^{−x})` and `x < 0: x − log1p(e^{x})`. The inactive branch sees `0`, so its
/// (discarded) value and gradient stay finite and cannot poison the backward pass with NaN.
pub fn log_sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let negative = x.clone().lower_elem(0.0);
    let non_negative_part = x.clone().mask_fill(negative.clone(), 0.0);
    let negative_part = x.mask_fill(negative.clone().bool_not(), 0.0);
    let upper = non_negative_part.neg().exp().log1p().neg();
    let lower = negative_part.clone() - negative_part.exp().log1p();
    upper.mask_where(negative, lower)
}

/// The DPO sigmoid loss of `z = (pc − pr) − (rc − rr)` with label smoothing `ε`:
/// `−(1−ε)·logσ(βz) − ε·logσ(−βz)` per example. TRL's `loss_type="sigmoid"`.
pub fn sigmoid_loss(z: Tensor<1>, beta: f64, label_smoothing: f64) -> Tensor<1> {
    let scaled = z.mul_scalar(beta);
    let loss = log_sigmoid(scaled.clone()).mul_scalar(-(1.0 - label_smoothing));
    if label_smoothing == 0.0 {
        loss
    } else {
        loss - log_sigmoid(scaled.neg()).mul_scalar(label_smoothing)
    }
}

/// `log Σ exp(x)` along `dim`, stabilised by the maximum (Burn has no logsumexp op).
/// The maximum is detached: it cancels in value and derivative, so gradients are unchanged.
pub fn logsumexp<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let max = x.clone().max_dim(dim).detach();
    (x - max.clone()).exp().sum_dim(dim).log() + max
}

/// Records TRL's DPO metrics: `rewards/chosen = β(pc − ref_c)`, `rewards/rejected`,
/// `rewards/margins`, `rewards/accuracies` (1 where the chosen reward is larger, else 0),
/// `logps/chosen`, `logps/rejected`. `ref_c` and `ref_r` are the reference log-probs the
/// objective actually compares with (zero when reference-free, the virtual reference for
/// MRPO).
pub fn record_reward_metrics(
    metrics: &mut Metrics,
    beta: f64,
    pc: &Tensor<1>,
    pr: &Tensor<1>,
    ref_c: &Tensor<1>,
    ref_r: &Tensor<1>,
) {
    let chosen = (pc.clone() - ref_c.clone()).mul_scalar(beta).detach();
    let rejected = (pr.clone() - ref_r.clone()).mul_scalar(beta).detach();
    let margins = chosen.clone() - rejected.clone();
    let accuracies = chosen.clone().greater(rejected.clone()).float();
    metrics.insert("rewards/chosen", chosen);
    metrics.insert("rewards/rejected", rejected);
    metrics.insert("rewards/margins", margins);
    metrics.insert("rewards/accuracies", accuracies);
    metrics.insert("logps/chosen", pc.clone());
    metrics.insert("logps/rejected", pr.clone());
}

/// The four log-probs of a DPO-style comparison: policy `pc`, `pr` and reference `rc`, `rr`
/// for the chosen and rejected responses, each `[batch]`.
#[derive(Debug, Clone)]
pub struct PreferencePair {
    pub pc: Tensor<1>,
    pub pr: Tensor<1>,
    pub rc: Tensor<1>,
    pub rr: Tensor<1>,
}

impl PreferencePair {
    /// The quantities a pair against reference `reference` needs.
    pub fn quantities(reference: usize) -> [Quantity; 4] {
        [
            Quantity::PolicyLogp(Response::Chosen),
            Quantity::PolicyLogp(Response::Rejected),
            Quantity::ReferenceLogp {
                reference,
                response: Response::Chosen,
            },
            Quantity::ReferenceLogp {
                reference,
                response: Response::Rejected,
            },
        ]
    }

    /// Policy log-probs and those of reference `reference` from a batch.
    pub fn from_quantities(q: &Quantities, reference: usize) -> Result<Self, ObjectiveError> {
        Ok(PreferencePair {
            pc: q.per_example(Quantity::PolicyLogp(Response::Chosen))?,
            pr: q.per_example(Quantity::PolicyLogp(Response::Rejected))?,
            rc: q.per_example(Quantity::ReferenceLogp {
                reference,
                response: Response::Chosen,
            })?,
            rr: q.per_example(Quantity::ReferenceLogp {
                reference,
                response: Response::Rejected,
            })?,
        })
    }

    /// Policy log-probs with a zero reference (reference-free DPO).
    pub fn reference_free(q: &Quantities) -> Result<Self, ObjectiveError> {
        let pc = q.per_example(Quantity::PolicyLogp(Response::Chosen))?;
        let pr = q.per_example(Quantity::PolicyLogp(Response::Rejected))?;
        Ok(PreferencePair {
            rc: pc.zeros_like(),
            rr: pr.zeros_like(),
            pc,
            pr,
        })
    }

    /// The same policy log-probs against other reference values.
    pub fn with_reference(&self, rc: Tensor<1>, rr: Tensor<1>) -> Self {
        PreferencePair {
            pc: self.pc.clone(),
            pr: self.pr.clone(),
            rc,
            rr,
        }
    }

    /// `z = (pc − pr) − (rc − rr)`.
    pub fn z(&self) -> Tensor<1> {
        (self.pc.clone() - self.pr.clone()) - (self.rc.clone() - self.rr.clone())
    }

    /// Per-example DPO sigmoid loss of this pair.
    pub fn dpo_losses(&self, beta: f64, label_smoothing: f64) -> Tensor<1> {
        sigmoid_loss(self.z(), beta, label_smoothing)
    }

    /// Records TRL's reward and log-prob metrics of this pair.
    pub fn record_metrics(&self, metrics: &mut Metrics, beta: f64) {
        record_reward_metrics(metrics, beta, &self.pc, &self.pr, &self.rc, &self.rr);
    }
}
