//! MRPO, Multi-Reference Preference Optimization (Le et al. 2024).
//!
//! References `k = 0..K-1`: `k = 0` is the primary (the initial policy), the others auxiliary
//! models with the same tokenizer. Per example:
//! 1. **CTRO clipping**: each auxiliary log-prob is clamped into a band around the primary's,
//!    `r_k ← clamp(r_k, (1+ε_y)·r_0, (1−ε_y)·r_0)`, with `ε_c = ε·s`, `ε_r = ε·(1−s)`,
//!    `s = |b_c| / (|b_c| + |b_r|)`, `b_·` the mean over all references of the unclipped
//!    log-probs of that response. `ε < 0` means a fixed rate `|ε|` for both responses.
//! 2. **Weights**: for K = 2 the adaptive ARWC rule of the authors' code,
//!    `α = |Δ_1| / (|Δ_1| + |Δ_0| + 1e-6)` with `Δ_k = r_k(y_w) − r_k(y_l)` (unclipped), `α`
//!    the weight on the primary; or a fixed `alpha`. For K > 2 fixed `weights` (uniform by
//!    default).
//! 3. **Virtual reference**: `log π̃(y) = −log Σ_k w_k·exp(−r_k(y))` (a weighted harmonic mean
//!    of probabilities), via logsumexp.
//! 4. **DPO** on it: `z̃ = (pc − pr) − (log π̃(y_w) − log π̃(y_l))`.
//!
//! `naive = true` is the Multi-DPO baseline as the authors' code runs it
//! (`trainer_mref.py`, `losses = losses2*alpha + losses*(1-alpha)`):
//! `α·L_DPO(clip(ref_1)) + (1−α)·L_DPO(ref_0)` for K = 2 — the same α as above, here on the
//! auxiliary, whose log-probs are CTRO-clipped as in the main path — and
//! `Σ_k w_k·L_DPO(clip(ref_k))` for K > 2.

use bapo_objective::preference::{PreferencePair, logsumexp, sigmoid_loss};
use bapo_objective::{
    Metrics, Needs, Objective, ObjectiveConfig, ObjectiveConfigError, ObjectiveError,
    ObjectiveOutput, ObjectivePlugin, Quantities, check,
};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The K = 2 weight on the primary reference: adaptive (ARWC) or fixed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Alpha {
    /// A fixed weight in [0, 1].
    Fixed(f64),
    /// `"adaptive"`: ARWC, per example.
    Rule(AlphaRule),
}

/// The named α rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlphaRule {
    Adaptive,
}

/// `[objective]` settings of `mrpo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MrpoConfig {
    /// Inverse temperature β (> 0).
    pub beta: f64,
    /// Number of references K (≥ 1); the run config must name that many reference models.
    pub references: usize,
    /// CTRO clipping rate ε ∈ [−1, 1]: ≥ 0 adaptive split between chosen and rejected,
    /// < 0 a fixed rate |ε|.
    pub epsilon: f64,
    /// K = 2 only: "adaptive" (default, ARWC) or a fixed α in [0, 1]: the weight on the
    /// primary in the virtual reference, on the auxiliary's DPO loss in naive mode.
    pub alpha: Alpha,
    /// K > 2 only: fixed weights, one per reference (non-negative, normalised to sum 1);
    /// empty means uniform.
    pub weights: Vec<f64>,
    /// The naive Multi-DPO baseline (weighted sum of per-reference DPO losses, auxiliaries
    /// clipped).
    pub naive: bool,
}

impl Default for MrpoConfig {
    fn default() -> Self {
        MrpoConfig {
            beta: 0.1,
            references: 2,
            epsilon: 0.1,
            alpha: Alpha::Rule(AlphaRule::Adaptive),
            weights: Vec::new(),
            naive: false,
        }
    }
}

impl ObjectiveConfig for MrpoConfig {
    fn validate(&self, objective: &str) -> Result<(), ObjectiveConfigError> {
        check::positive(objective, "beta", self.beta)?;
        check::in_range(objective, "epsilon", self.epsilon, -1.0, 1.0)?;
        if self.references == 0 {
            return Err(ObjectiveConfigError::OutOfRange {
                objective: objective.to_string(),
                key: "references".to_string(),
                value: "0".to_string(),
                expected: "an integer >= 1".to_string(),
            });
        }
        if let Alpha::Fixed(alpha) = self.alpha {
            check::in_range(objective, "alpha", alpha, 0.0, 1.0)?;
            if self.references != 2 {
                return Err(check::invalid(
                    objective,
                    "alpha",
                    "a fixed alpha applies to 2 references only; use `weights` for more",
                ));
            }
        }
        if !self.weights.is_empty() {
            if self.references <= 2 {
                return Err(check::invalid(
                    objective,
                    "weights",
                    "weights apply to 3 or more references; use `alpha` for 2",
                ));
            }
            if self.weights.len() != self.references {
                return Err(check::invalid(
                    objective,
                    "weights",
                    format!(
                        "{} weights for {} references",
                        self.weights.len(),
                        self.references
                    ),
                ));
            }
            for w in &self.weights {
                check::non_negative(objective, "weights", *w)?;
            }
            if self.weights.iter().sum::<f64>() <= 0.0 {
                return Err(check::invalid(objective, "weights", "the weights sum to 0"));
            }
        }
        Ok(())
    }
}

/// The MRPO objective.
#[derive(Debug, Clone)]
pub struct Mrpo {
    pub config: MrpoConfig,
}

/// The log-probs of one response under every reference, `[batch]` each, index = reference.
type PerReference = Vec<Tensor<1>>;

/// ARWC for K = 2: the per-example weight on the primary,
/// `α = |Δ_1| / (|Δ_1| + |Δ_0| + 1e-6)`, `Δ_k = r_k(y_w) − r_k(y_l)`.
pub fn adaptive_alpha(chosen: &[Tensor<1>], rejected: &[Tensor<1>]) -> Tensor<1> {
    let delta0 = (chosen[0].clone() - rejected[0].clone()).abs();
    let delta1 = (chosen[1].clone() - rejected[1].clone()).abs();
    delta1.clone() / (delta1 + delta0).add_scalar(1e-6)
}

/// CTRO: clamps every auxiliary reference (`k ≥ 1`) of one response into the band
/// `[(1+ε_y)·r_0, (1−ε_y)·r_0]` around the primary; `rate` is `ε_y` per example.
pub fn clip_to_primary(refs: &[Tensor<1>], rate: &Tensor<1>) -> PerReference {
    let primary = refs[0].clone();
    let low = primary.clone() * rate.clone().add_scalar(1.0);
    let high = primary.clone() * rate.clone().neg().add_scalar(1.0);
    let mut clipped = vec![primary];
    for r in &refs[1..] {
        clipped.push(r.clone().max_pair(low.clone()).min_pair(high.clone()));
    }
    clipped
}

/// The per-example clipping rates `(ε_c, ε_r)` of CTRO.
pub fn clipping_rates(
    epsilon: f64,
    chosen: &[Tensor<1>],
    rejected: &[Tensor<1>],
) -> (Tensor<1>, Tensor<1>) {
    let like = chosen[0].clone();
    if epsilon < 0.0 {
        let fixed = like.zeros_like().add_scalar(-epsilon);
        return (fixed.clone(), fixed);
    }
    let mean = |refs: &[Tensor<1>]| {
        refs.iter()
            .cloned()
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| like.zeros_like())
            .div_scalar(refs.len().max(1) as f64)
            .abs()
    };
    let (bc, br) = (mean(chosen), mean(rejected));
    // Both means 0 (probability 1 under every reference) would divide 0 by 0; s = 0 then.
    let s = bc.clone() / (bc + br).clamp_min(1e-30);
    (
        s.clone().mul_scalar(epsilon),
        s.neg().add_scalar(1.0).mul_scalar(epsilon),
    )
}

/// The virtual reference `log π̃ = −log Σ_k w_k·exp(−r_k)` per example. Weights of 0 drop
/// their reference (`ln 0 = −∞` contributes `exp(−∞) = 0` to the sum).
pub fn virtual_reference(refs: &[Tensor<1>], weights: &[Tensor<1>]) -> Tensor<1> {
    let terms: Vec<Tensor<1>> = refs
        .iter()
        .zip(weights)
        .map(|(r, w)| w.clone().log() - r.clone())
        .collect();
    let stacked: Tensor<2> = Tensor::stack(terms, 1);
    let [batch, _] = stacked.dims();
    logsumexp(stacked, 1).reshape([batch]).neg()
}

impl Mrpo {
    fn reference_logps(
        &self,
        q: &Quantities,
    ) -> Result<(PerReference, PerReference), ObjectiveError> {
        let mut chosen = Vec::new();
        let mut rejected = Vec::new();
        for k in 0..self.config.references {
            let pair = PreferencePair::from_quantities(q, k)?;
            chosen.push(pair.rc);
            rejected.push(pair.rr);
        }
        Ok((chosen, rejected))
    }

    /// Per-example weights `w_k` on the references in the virtual reference.
    fn weights(&self, chosen: &[Tensor<1>], rejected: &[Tensor<1>]) -> PerReference {
        let like = chosen[0].zeros_like();
        let k = self.config.references;
        match (k, self.config.alpha) {
            (2, Alpha::Rule(AlphaRule::Adaptive)) => {
                let alpha = adaptive_alpha(chosen, rejected);
                vec![alpha.clone(), alpha.neg().add_scalar(1.0)]
            }
            (2, Alpha::Fixed(alpha)) => {
                vec![like.clone().add_scalar(alpha), like.add_scalar(1.0 - alpha)]
            }
            // K = 1 (weight 1) and K > 2: fixed weights, uniform unless configured.
            _ => {
                let raw = if self.config.weights.is_empty() {
                    vec![1.0; k]
                } else {
                    self.config.weights.clone()
                };
                let total: f64 = raw.iter().sum();
                raw.iter()
                    .map(|w| like.clone().add_scalar(w / total))
                    .collect()
            }
        }
    }
}

impl Objective for Mrpo {
    fn needs(&self) -> Needs {
        (0..self.config.references)
            .flat_map(PreferencePair::quantities)
            .collect()
    }

    fn compute(&self, q: &Quantities) -> Result<ObjectiveOutput, ObjectiveError> {
        let primary = PreferencePair::from_quantities(q, 0)?;
        let beta = self.config.beta;
        let (chosen, rejected) = self.reference_logps(q)?;
        let weights = self.weights(&chosen, &rejected);
        let mut metrics = Metrics::new();
        // α itself (K = 2; `weights[0]` otherwise): the weight on the primary in the virtual
        // reference, and on the auxiliary's DPO loss in naive mode (as the authors' code).
        metrics.insert("mrpo/alpha", weights[0].clone());

        let (rate_c, rate_r) = clipping_rates(self.config.epsilon, &chosen, &rejected);
        let clipped_c = clip_to_primary(&chosen, &rate_c);
        let clipped_r = clip_to_primary(&rejected, &rate_r);

        if self.config.naive {
            // Multi-DPO: α·L(clip(ref_1)) + (1−α)·L(ref_0) for K = 2, i.e. the weights of the
            // virtual reference applied in reverse order; for K ≠ 2 the weights apply to the
            // references in order.
            let mut order: Vec<usize> = (0..self.config.references).collect();
            if self.config.references == 2 {
                order.reverse();
            }
            let losses = order
                .iter()
                .zip(&weights)
                .map(|(&k, w)| {
                    let pair = primary.with_reference(clipped_c[k].clone(), clipped_r[k].clone());
                    pair.dpo_losses(beta, 0.0) * w.clone()
                })
                .reduce(|a, b| a + b)
                .ok_or(ObjectiveError::Empty)?;
            primary.record_metrics(&mut metrics, beta);
            return Ok(ObjectiveOutput { losses, metrics });
        }

        let pair = primary.with_reference(
            virtual_reference(&clipped_c, &weights),
            virtual_reference(&clipped_r, &weights),
        );
        let losses = sigmoid_loss(pair.z(), beta, 0.0);
        pair.record_metrics(&mut metrics, beta);
        Ok(ObjectiveOutput { losses, metrics })
    }
}

impl ObjectivePlugin for Mrpo {
    const NAME: &'static str = "mrpo";
    const SUMMARY: &'static str = "Multi-Reference Preference Optimization: DPO against a clipped, weighted virtual reference";
    type Config = MrpoConfig;

    fn new(config: MrpoConfig) -> Self {
        Mrpo { config }
    }
}

bapo_objective::register_objective!(Mrpo);
