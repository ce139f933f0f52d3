//! BAPO, Base-Anchored Preference Optimization (Lee et al., EMNLP Findings 2024).
//!
//! `L = L_DPO + λ · A`, where the anchor term `A` keeps the policy's likelihood of the base
//! responses `y_b` — the reference model's own answers to the training prompts, generated
//! before training — from falling below the reference's:
//!
//! | `form` | `A` per anchor |
//! |---|---|
//! | `hinge` (default) | `max(0, rb − pb)` |
//! | `abs` | `|rb − pb|` |
//! | `squared` | `(rb − pb)²` |
//! | `nll` | `−pb` |
//!
//! With `normalize = "mean"` both `rb` and `pb` are divided by the base response's token count
//! `n_b`. With several anchors per prompt (`num_anchors`), `A` is their mean.
//!
//! Provenance: the anchor's form ("policy likelihood of the base response kept at the
//! reference's") is from the paper's abstract and secondary summaries; the paper's body could
//! not be read here, so every switch is kept and the defaults are provisional.

use bapo_objective::preference::PreferencePair;
use bapo_objective::{
    ConfigError, Metrics, Needs, Objective, ObjectiveConfig, ObjectiveError, ObjectiveOutput,
    ObjectivePlugin, Quantities, Quantity, Response, check,
};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// How the anchor term penalises the base responses' log-probs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnchorForm {
    /// `max(0, rb − pb)`: only a drop below the reference is penalised.
    Hinge,
    /// `|rb − pb|`: any change is penalised.
    Abs,
    /// `(rb − pb)²`.
    Squared,
    /// `−pb`: plain likelihood on the base responses (no reference).
    Nll,
}

/// Whether anchor log-probs are sums over tokens or per-token means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Summed log-probs (as the DPO term uses).
    Sum,
    /// Summed log-probs divided by the base response's token count.
    Mean,
}

/// `[objective]` settings of `bapo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BapoConfig {
    /// Inverse temperature β of the DPO term (> 0).
    pub beta: f64,
    /// Weight λ of the anchor term (≥ 0; 0 gives DPO).
    pub lambda: f64,
    /// "hinge" (default), "abs", "squared" or "nll".
    pub form: AnchorForm,
    /// "sum" (default) or "mean" (per-token).
    pub normalize: Normalize,
    /// Base responses per prompt (≥ 1); the anchor term averages over them.
    pub num_anchors: usize,
}

impl Default for BapoConfig {
    fn default() -> Self {
        BapoConfig {
            beta: 0.1,
            lambda: 1.0,
            form: AnchorForm::Hinge,
            normalize: Normalize::Sum,
            num_anchors: 1,
        }
    }
}

impl ObjectiveConfig for BapoConfig {
    fn validate(&self, objective: &str) -> Result<(), ConfigError> {
        check::positive(objective, "beta", self.beta)?;
        check::non_negative(objective, "lambda", self.lambda)?;
        if self.num_anchors == 0 {
            return Err(ConfigError::OutOfRange {
                objective: objective.to_string(),
                key: "num_anchors".to_string(),
                value: "0".to_string(),
                expected: "an integer >= 1".to_string(),
            });
        }
        Ok(())
    }
}

/// The BAPO objective.
#[derive(Debug, Clone)]
pub struct Bapo {
    pub config: BapoConfig,
}

const POLICY_BASE: Quantity = Quantity::PolicyLogp(Response::Base);
const REFERENCE_BASE: Quantity = Quantity::ReferenceLogp {
    reference: 0,
    response: Response::Base,
};
const BASE_TOKENS: Quantity = Quantity::TokenCount(Response::Base);

/// The anchor term per anchor, `[batch, anchors]`, from policy and reference log-probs of the
/// base responses (already normalised if `normalize = "mean"`).
pub fn anchor_term(form: AnchorForm, pb: Tensor<2>, rb: Tensor<2>) -> Tensor<2> {
    match form {
        // Masking (rather than relu) makes the gradient exactly 0 where pb ≥ rb, the boundary
        // included.
        AnchorForm::Hinge => {
            let satisfied = pb.clone().greater_equal(rb.clone());
            (rb - pb).mask_fill(satisfied, 0.0)
        }
        AnchorForm::Abs => (rb - pb).abs(),
        AnchorForm::Squared => (rb - pb).square(),
        AnchorForm::Nll => pb.neg(),
    }
}

impl Objective for Bapo {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn needs(&self) -> Needs {
        let mut needs = PreferencePair::quantities(0)
            .into_iter()
            .fold(Needs::new(), Needs::with);
        needs = needs.with(POLICY_BASE);
        if self.config.form != AnchorForm::Nll {
            needs = needs.with(REFERENCE_BASE);
        }
        if self.config.normalize == Normalize::Mean {
            needs = needs.with(BASE_TOKENS);
        }
        needs.anchors_per_prompt = self.config.num_anchors;
        needs
    }

    fn compute(&self, q: &Quantities) -> Result<ObjectiveOutput, ObjectiveError> {
        let pair = PreferencePair::from_quantities(q, 0)?;
        let mut pb = q.get(POLICY_BASE)?;
        let [batch, anchors] = pb.dims();
        let mut rb = if self.config.form == AnchorForm::Nll {
            pb.zeros_like()
        } else {
            q.get(REFERENCE_BASE)?
        };
        if rb.dims() != [batch, anchors] {
            return Err(ObjectiveError::Shape {
                quantity: REFERENCE_BASE,
                expected: format!("[{batch}, {anchors}]"),
                found: format!("{:?}", rb.dims()),
            });
        }
        if self.config.normalize == Normalize::Mean {
            let tokens = q.get(BASE_TOKENS)?.clamp_min(1.0);
            pb = pb / tokens.clone();
            rb = rb / tokens;
        }

        let violated = (self.config.form != AnchorForm::Nll).then(|| {
            pb.clone()
                .lower(rb.clone())
                .float()
                .mean_dim(1)
                .reshape([batch])
        });
        let anchor = anchor_term(self.config.form, pb.clone(), rb)
            .mean_dim(1)
            .reshape([batch]);

        let mut metrics = Metrics::new();
        pair.record_metrics(&mut metrics, self.config.beta);
        metrics.insert("logps/base", pb.mean_dim(1).reshape([batch]));
        metrics.insert("anchor/term", anchor.clone());
        if let Some(violated) = violated {
            // The fraction of anchors the policy made less likely than the reference did.
            metrics.insert("anchor/violation", violated);
        }

        let losses = pair.dpo_losses(self.config.beta, 0.0) + anchor.mul_scalar(self.config.lambda);
        Ok(ObjectiveOutput { losses, metrics })
    }
}

impl ObjectivePlugin for Bapo {
    const NAME: &'static str = "bapo";
    const SUMMARY: &'static str =
        "Base-Anchored Preference Optimization: DPO + keep the reference's own answers likely";
    type Config = BapoConfig;

    fn new(config: BapoConfig) -> Self {
        Bapo { config }
    }
}

bapo_objective::register_objective!(Bapo);
