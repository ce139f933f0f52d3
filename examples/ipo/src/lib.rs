//! IPO, Identity Preference Optimisation (Azar et al. 2023, "A General Theoretical Paradigm to
//! Understand Learning from Human Preferences"), written as a third-party objective: this crate
//! depends on `bapo-objective` only and registers itself with one line at the bottom.
//!
//! Per example: `h = (pc − rc) − (pr − rr)` and loss `(h − 1/(2τ))²`, a squared loss that
//! regresses the log-ratio gap onto a fixed target instead of pushing it to infinity. As in
//! TRL's `loss_type="ipo"`, log-probs are averaged over response tokens by default
//! (`length_normalize`), which is why this objective asks for token counts.

use bapo_objective::preference::PreferencePair;
use bapo_objective::{
    Metrics, Needs, Objective, ObjectiveConfig, ObjectiveConfigError, ObjectiveError,
    ObjectiveOutput, ObjectivePlugin, Quantities, Quantity, Response, check,
};
use serde::{Deserialize, Serialize};

/// `[objective]` settings of `ipo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpoConfig {
    /// τ (TRL calls it β): the target gap is `1/(2τ)`.
    pub tau: f64,
    /// Average log-probs over response tokens (TRL's behaviour for IPO).
    pub length_normalize: bool,
}

impl Default for IpoConfig {
    fn default() -> Self {
        IpoConfig {
            tau: 0.1,
            length_normalize: true,
        }
    }
}

impl ObjectiveConfig for IpoConfig {
    fn validate(&self, objective: &str) -> Result<(), ObjectiveConfigError> {
        check::positive(objective, "tau", self.tau)
    }
}

/// The IPO objective.
#[derive(Debug, Clone)]
pub struct Ipo {
    pub config: IpoConfig,
}

impl Objective for Ipo {
    fn needs(&self) -> Needs {
        let needs = PreferencePair::quantities(0).into_iter().collect::<Needs>();
        if self.config.length_normalize {
            needs
                .with(Quantity::TokenCount(Response::Chosen))
                .with(Quantity::TokenCount(Response::Rejected))
        } else {
            needs
        }
    }

    fn compute(&self, q: &Quantities) -> Result<ObjectiveOutput, ObjectiveError> {
        let mut pair = PreferencePair::from_quantities(q, 0)?;
        if self.config.length_normalize {
            let nc = q
                .per_example(Quantity::TokenCount(Response::Chosen))?
                .clamp_min(1.0);
            let nr = q
                .per_example(Quantity::TokenCount(Response::Rejected))?
                .clamp_min(1.0);
            pair = PreferencePair {
                pc: pair.pc / nc.clone(),
                pr: pair.pr / nr.clone(),
                rc: pair.rc / nc,
                rr: pair.rr / nr,
            };
        }
        let target = 1.0 / (2.0 * self.config.tau);
        let losses = pair.z().sub_scalar(target).square();
        let mut metrics = Metrics::new();
        pair.record_metrics(&mut metrics, self.config.tau);
        Ok(ObjectiveOutput { losses, metrics })
    }
}

impl ObjectivePlugin for Ipo {
    const NAME: &'static str = "ipo";
    const SUMMARY: &'static str = "Identity Preference Optimisation (example third-party plugin)";
    type Config = IpoConfig;

    fn new(config: IpoConfig) -> Self {
        Ipo { config }
    }
}

// The one registration line.
bapo_objective::register_objective!(Ipo);
