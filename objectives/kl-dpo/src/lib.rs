//! KL-DPO: DPO plus an explicit token-level KL penalty to the reference, the KL-constrained
//! baseline that BAPO argues is not enough to prevent forgetting.
//!
//! `L = L_DPO + λ_kl · KL`, where per example `KL` is the mean, over the sequences named in
//! `on`, of `KL_seq = (1/n) Σ_t Σ_v π_θ(v|ctx_t)(log π_θ(v|ctx_t) − log π_ref(v|ctx_t))`
//! (reverse; `direction = "forward"` swaps the roles). Averaged over examples by the loop, this
//! is the spec's `λ_kl · mean_over_examples(KL_seq)`.
//!
//! The KL needs full reference distributions per response token, so this objective declares
//! [`Quantity::TokenKl`] and the loop runs the reference model live.

use bapo_objective::preference::PreferencePair;
use bapo_objective::{
    KlDirection, Metrics, Needs, Objective, ObjectiveConfig, ObjectiveConfigError, ObjectiveError,
    ObjectiveOutput, ObjectivePlugin, Quantities, Quantity, Response, check,
};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// `[objective]` settings of `kl-dpo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KlDpoConfig {
    /// Inverse temperature β of the DPO term (> 0).
    pub beta: f64,
    /// Weight λ_kl of the KL penalty (≥ 0).
    pub lambda_kl: f64,
    /// The responses whose tokens the KL is measured on: any of "chosen", "rejected", "base"
    /// ("base" needs base responses from anchor generation).
    pub on: Vec<Response>,
    /// "reverse" (KL(π_θ‖π_ref), default) or "forward" (KL(π_ref‖π_θ)).
    pub direction: KlDirection,
}

impl Default for KlDpoConfig {
    fn default() -> Self {
        KlDpoConfig {
            beta: 0.1,
            lambda_kl: 0.1,
            on: vec![Response::Chosen, Response::Rejected],
            direction: KlDirection::Reverse,
        }
    }
}

impl ObjectiveConfig for KlDpoConfig {
    fn validate(&self, objective: &str) -> Result<(), ObjectiveConfigError> {
        check::positive(objective, "beta", self.beta)?;
        check::non_negative(objective, "lambda_kl", self.lambda_kl)?;
        if self.on.is_empty() {
            return Err(check::invalid(
                objective,
                "on",
                "name at least one response",
            ));
        }
        for (i, r) in self.on.iter().enumerate() {
            if self.on[..i].contains(r) {
                return Err(check::invalid(
                    objective,
                    "on",
                    format!("\"{r}\" is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

/// The KL-DPO objective.
#[derive(Debug, Clone)]
pub struct KlDpo {
    pub config: KlDpoConfig,
}

impl KlDpo {
    fn kl_quantity(&self, response: Response) -> Quantity {
        Quantity::TokenKl {
            response,
            direction: self.config.direction,
        }
    }
}

impl Objective for KlDpo {
    fn needs(&self) -> Needs {
        let needs = PreferencePair::quantities(0).into_iter().collect::<Needs>();
        self.config
            .on
            .iter()
            .fold(needs, |n, r| n.with(self.kl_quantity(*r)))
    }

    fn compute(&self, q: &Quantities) -> Result<ObjectiveOutput, ObjectiveError> {
        let pair = PreferencePair::from_quantities(q, 0)?;
        let mut metrics = Metrics::new();
        pair.record_metrics(&mut metrics, self.config.beta);

        // Mean over the named sequences of each example's per-token-averaged KL. A base
        // quantity may hold several anchors per prompt: average them first.
        let mut kl: Option<Tensor<1>> = None;
        for response in &self.config.on {
            let per_sequence = q.get(self.kl_quantity(*response))?;
            let [batch, _] = per_sequence.dims();
            let per_example = per_sequence.mean_dim(1).reshape([batch]);
            metrics.insert(format!("kl/{response}"), per_example.clone());
            kl = Some(match kl {
                None => per_example,
                Some(sum) => sum + per_example,
            });
        }
        // mul_scalar, not div_scalar: burn-autodiff 0.22.1 differentiates div_scalar through
        // an f32 copy of the divisor (1/3 is then off by ~1e-8 in f64).
        let kl = kl
            .ok_or(ObjectiveError::Empty)?
            .mul_scalar(1.0 / self.config.on.len() as f64);
        metrics.insert("kl/mean", kl.clone());

        let losses = pair.dpo_losses(self.config.beta, 0.0) + kl.mul_scalar(self.config.lambda_kl);
        Ok(ObjectiveOutput { losses, metrics })
    }
}

impl ObjectivePlugin for KlDpo {
    const NAME: &'static str = "kl-dpo";
    const SUMMARY: &'static str =
        "DPO plus a token-level KL penalty to the reference (the KL-constrained baseline)";
    type Config = KlDpoConfig;

    fn new(config: KlDpoConfig) -> Self {
        KlDpo { config }
    }
}

bapo_objective::register_objective!(KlDpo);
