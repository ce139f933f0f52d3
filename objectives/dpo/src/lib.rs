//! DPO (Rafailov et al. 2023): the sigmoid preference loss on policy/reference log-ratios,
//! with label smoothing (conservative DPO) and a reference-free mode.
//!
//! `z = (pc − pr) − (rc − rr)`, loss `−(1−ε)·logσ(βz) − ε·logσ(−βz)`; with `reference_free`
//! the reference terms are zero. Matches TRL's `loss_type="sigmoid"` (checked against TRL in
//! the workspace's `trl_parity` test).

use bapo_objective::preference::PreferencePair;
use bapo_objective::{
    Metrics, Needs, Objective, ObjectiveConfig, ObjectiveConfigError, ObjectiveError,
    ObjectiveOutput, ObjectivePlugin, Quantities, Quantity, Response, check,
};
use serde::{Deserialize, Serialize};

/// `[objective]` settings of `dpo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpoConfig {
    /// Inverse temperature β of the implicit reward (> 0).
    pub beta: f64,
    /// Label smoothing ε ∈ [0, 0.5]: the assumed probability that a preference label is
    /// flipped (cDPO). 0 is plain DPO.
    pub label_smoothing: f64,
    /// Ignore the reference model (`rc = rr = 0`).
    pub reference_free: bool,
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig {
            beta: 0.1,
            label_smoothing: 0.0,
            reference_free: false,
        }
    }
}

impl ObjectiveConfig for DpoConfig {
    fn validate(&self, objective: &str) -> Result<(), ObjectiveConfigError> {
        check::positive(objective, "beta", self.beta)?;
        check::in_range(objective, "label_smoothing", self.label_smoothing, 0.0, 0.5)
    }
}

/// The DPO objective.
#[derive(Debug, Clone)]
pub struct Dpo {
    pub config: DpoConfig,
}

impl Objective for Dpo {
    fn needs(&self) -> Needs {
        let quantities = if self.config.reference_free {
            vec![
                Quantity::PolicyLogp(Response::Chosen),
                Quantity::PolicyLogp(Response::Rejected),
            ]
        } else {
            PreferencePair::quantities(0).to_vec()
        };
        quantities.into_iter().collect()
    }

    fn compute(&self, q: &Quantities) -> Result<ObjectiveOutput, ObjectiveError> {
        let pair = if self.config.reference_free {
            PreferencePair::reference_free(q)?
        } else {
            PreferencePair::from_quantities(q, 0)?
        };
        let losses = pair.dpo_losses(self.config.beta, self.config.label_smoothing);
        let mut metrics = Metrics::new();
        pair.record_metrics(&mut metrics, self.config.beta);
        Ok(ObjectiveOutput { losses, metrics })
    }
}

impl ObjectivePlugin for Dpo {
    const NAME: &'static str = "dpo";
    const SUMMARY: &'static str =
        "Direct Preference Optimization (sigmoid loss; label smoothing, reference-free)";
    type Config = DpoConfig;

    fn new(config: DpoConfig) -> Self {
        Dpo { config }
    }
}

bapo_objective::register_objective!(Dpo);
