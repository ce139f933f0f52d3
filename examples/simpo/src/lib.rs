//! SimPO, Simple Preference Optimization with a reference-free reward (Meng, Xia and Chen,
//! NeurIPS 2024), as an objective crate of its own: it depends on `bapo-objective` only and
//! registers itself with one line at the bottom.
//!
//! Per example, with each response's log-prob averaged over its tokens:
//! `loss = −log σ(β·(pc/|yc| − pr/|yr|) − γ)`: no reference model, and a target reward margin
//! γ. TRL's `CPOTrainer(loss_type="simpo", cpo_alpha=0)` computes the same loss (its
//! `simpo_gamma` is γ). Defaults β = 2.0 and γ = 1.0 (γ/β = 0.5), the paper's recommended
//! range; TRL's are β = 0.1 and γ = 0.5.

use bapo_objective::preference::{PreferencePair, sigmoid_loss};
use bapo_objective::{
    Metrics, Needs, Objective, ObjectiveConfig, ObjectiveConfigError, ObjectiveError,
    ObjectiveOutput, ObjectivePlugin, Quantities, Quantity, Response, check,
};
use serde::{Deserialize, Serialize};

/// `[objective]` settings of `simpo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimpoConfig {
    /// β, the scale of the length-normalised reward (> 0).
    pub beta: f64,
    /// γ, the target reward margin (≥ 0).
    pub gamma: f64,
}

impl Default for SimpoConfig {
    fn default() -> Self {
        SimpoConfig {
            beta: 2.0,
            gamma: 1.0,
        }
    }
}

impl ObjectiveConfig for SimpoConfig {
    fn validate(&self, objective: &str) -> Result<(), ObjectiveConfigError> {
        check::positive(objective, "beta", self.beta)?;
        check::non_negative(objective, "gamma", self.gamma)
    }
}

/// The SimPO objective.
#[derive(Debug, Clone)]
pub struct Simpo {
    pub config: SimpoConfig,
}

/// What SimPO reads: the policy's log-probs and the responses' lengths, no reference.
const NEEDS: [Quantity; 4] = [
    Quantity::PolicyLogp(Response::Chosen),
    Quantity::PolicyLogp(Response::Rejected),
    Quantity::TokenCount(Response::Chosen),
    Quantity::TokenCount(Response::Rejected),
];

impl Objective for Simpo {
    fn needs(&self) -> Needs {
        NEEDS.into_iter().collect()
    }

    fn compute(&self, q: &Quantities) -> Result<ObjectiveOutput, ObjectiveError> {
        let length = |response| -> Result<_, ObjectiveError> {
            Ok(q.per_example(Quantity::TokenCount(response))?
                .clamp_min(1.0))
        };
        let pair = PreferencePair::reference_free(q)?;
        let averaged = PreferencePair {
            pc: pair.pc / length(Response::Chosen)?,
            pr: pair.pr / length(Response::Rejected)?,
            rc: pair.rc,
            rr: pair.rr,
        };
        let SimpoConfig { beta, gamma } = self.config;
        // −log σ(β·z − γ) = −log σ(β·(z − γ/β)).
        let losses = sigmoid_loss(averaged.z().sub_scalar(gamma / beta), beta, 0.0);
        let mut metrics = Metrics::new();
        averaged.record_metrics(&mut metrics, beta);
        Ok(ObjectiveOutput { losses, metrics })
    }
}

impl ObjectivePlugin for Simpo {
    const NAME: &'static str = "simpo";
    const SUMMARY: &'static str =
        "SimPO: length-normalised, reference-free, with a target margin (an outside crate)";
    type Config = SimpoConfig;

    fn new(config: SimpoConfig) -> Self {
        Simpo { config }
    }
}

// The one registration line.
bapo_objective::register_objective!(Simpo);
