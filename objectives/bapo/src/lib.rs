//! BAPO, Base-Anchored Preference Optimization (Lee et al., EMNLP Findings 2024).
//!
//! `L = L_DPO + λ · A`, where the anchor term `A` keeps the policy's likelihood of the base
//! responses `y_b` — the reference model's own answers to the training prompts, generated
//! before training — from falling below the reference's:
//!
//! | `form` | `A` per anchor, `v = rb − pb` |
//! |---|---|
//! | `huber` (default) | with `w = v − κ/1000`: `0` for `w ≤ 0`, `w²/(2κ)` for `0 ≤ w ≤ κ`, `w − κ/2` above |
//! | `hinge` | `max(0, v)` |
//! | `squared_hinge` | `max(0, v)²` |
//! | `abs` | `|v|` |
//! | `squared` | `v²` |
//! | `nll` | `−pb` |
//!
//! With `normalize = "mean"` both `rb` and `pb` are divided by the base response's token count
//! `n_b`. With several anchors per prompt (`num_anchors`), `A` is their mean.
//!
//! Why `huber` is the default: at the first step the policy *is* the reference, so `v` is float
//! noise (the cached `rb` and the training forward come from different batch shapes). The plain
//! hinge's gradient jumps from 0 to −λ at `v = 0`, so that noise decides which examples get the
//! full anchor gradient. The Huber-ised hinge is one-sided like the hinge, zero in value and
//! gradient at `v = 0`, and its gradient grows linearly to −λ over the first `κ` nats of a drop.
//! Drops below a floor of κ/1000 (1e-3 nats with "sum") cost nothing at all: Adam divides each
//! parameter's step by that parameter's own gradient scale, so even a 1e-7 gradient, if it is
//! the only one a parameter gets (embeddings of tokens that only base responses contain),
//! becomes a full-size step whose sign is decided by float noise.
//!
//! Provenance: the anchor's form ("policy likelihood of the base response kept at the
//! reference's") is from the paper's abstract and secondary summaries; the paper's body could
//! not be read here, so every switch is kept and the defaults are provisional.

use bapo_objective::preference::PreferencePair;
use bapo_objective::{
    Metrics, Needs, Objective, ObjectiveConfig, ObjectiveConfigError, ObjectiveError,
    ObjectiveOutput, ObjectivePlugin, Quantities, Quantity, Response, check,
};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// How the anchor term penalises the base responses' log-probs (`v = rb − pb`, the drop of
/// the policy's log-prob below the reference's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorForm {
    /// The Huber-ised hinge of `w = v − κ/1000`: 0 for `w ≤ 0`, `w²/(2κ)` up to `κ`, `w − κ/2`
    /// above. One-sided and smooth: zero in value and gradient where the policy equals the
    /// reference and for drops below the noise floor κ/1000.
    Huber,
    /// `max(0, v)`: only a drop below the reference is penalised; the gradient jumps from 0 to
    /// −λ at `v = 0`.
    Hinge,
    /// `max(0, v)²`: one-sided and smooth, with a gradient that grows without bound.
    SquaredHinge,
    /// `|rb − pb|`: any change is penalised.
    Abs,
    /// `(rb − pb)²`.
    Squared,
    /// `−pb`: plain likelihood on the base responses (no reference).
    Nll,
}

/// The width `κ` of the Huber-ised hinge's quadratic zone, in the units of the anchor term:
/// nats for `normalize = "sum"`, nats per token for `"mean"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Kappa {
    /// A fixed width (> 0).
    Fixed(f64),
    /// `"auto"`: [`KAPPA_SUM`] nats with `normalize = "sum"`, [`KAPPA_MEAN`] nats per token
    /// with `"mean"`.
    Rule(KappaRule),
}

impl<'de> Deserialize<'de> for Kappa {
    /// A number or `"auto"`, with an error that says so (serde's untagged enums only say
    /// that no variant matched).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Number(kappa)) => Ok(Kappa::Fixed(kappa)),
            Ok(Raw::Text(text)) if text == "auto" => Ok(Kappa::Rule(KappaRule::Auto)),
            _ => Err(serde::de::Error::custom(
                "expected a number > 0 or \"auto\"",
            )),
        }
    }
}

/// The named κ rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KappaRule {
    Auto,
}

/// κ of `"auto"` for summed log-probs: one nat, four orders of magnitude above the float noise
/// between two f32 forwards of a ~50-token response (≈ 1e-5 to 1e-4 nats).
pub const KAPPA_SUM: f64 = 1.0;
/// κ of `"auto"` for per-token means: one nat spread over a 40-token base response.
pub const KAPPA_MEAN: f64 = 0.025;

/// The `huber` form's noise floor as a fraction of κ: drops of the base responses' log-probs
/// smaller than `κ · NOISE_FLOOR` are float noise and cost nothing (1e-3 nats with "sum",
/// 2.5e-5 nats per token with "mean").
pub const NOISE_FLOOR: f64 = 1e-3;

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
    /// "huber" (default), "hinge", "squared_hinge", "abs", "squared" or "nll".
    pub form: AnchorForm,
    /// Width of the `huber` form's quadratic zone (> 0), or "auto" (default): 1 nat for
    /// "sum", 0.025 nats per token for "mean". Only `huber` reads it.
    pub kappa: Kappa,
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
            form: AnchorForm::Huber,
            kappa: Kappa::Rule(KappaRule::Auto),
            normalize: Normalize::Sum,
            num_anchors: 1,
        }
    }
}

impl BapoConfig {
    /// The Huber width in effect: the fixed value, or `"auto"`'s for the normalisation.
    pub fn kappa(&self) -> f64 {
        match (self.kappa, self.normalize) {
            (Kappa::Fixed(kappa), _) => kappa,
            (Kappa::Rule(KappaRule::Auto), Normalize::Sum) => KAPPA_SUM,
            (Kappa::Rule(KappaRule::Auto), Normalize::Mean) => KAPPA_MEAN,
        }
    }
}

impl ObjectiveConfig for BapoConfig {
    fn validate(&self, objective: &str) -> Result<(), ObjectiveConfigError> {
        check::positive(objective, "beta", self.beta)?;
        check::non_negative(objective, "lambda", self.lambda)?;
        if let Kappa::Fixed(kappa) = self.kappa {
            check::positive(objective, "kappa", kappa)?;
            if self.form != AnchorForm::Huber {
                return Err(check::invalid(
                    objective,
                    "kappa",
                    "a fixed kappa applies to form = \"huber\" only",
                ));
            }
        }
        if self.num_anchors == 0 {
            return Err(ObjectiveConfigError::OutOfRange {
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
/// base responses (already normalised if `normalize = "mean"`); `kappa` is the `huber` width.
pub fn anchor_term(form: AnchorForm, kappa: f64, pb: Tensor<2>, rb: Tensor<2>) -> Tensor<2> {
    match form {
        AnchorForm::Huber => {
            // With w = v − floor: u²/(2κ), u = clamp(w, 0, κ), is the quadratic zone (constant
            // κ/2 above it), max(0, w − κ) the linear part above κ. Both are exactly 0 in value
            // and gradient for w ≤ 0, and the quadratic's gradient u/κ vanishes at w = 0
            // whatever the clamp's subgradient there.
            let w = (rb - pb).sub_scalar(kappa * NOISE_FLOOR);
            // mul_scalar, not div_scalar: burn-autodiff 0.22.1 differentiates div_scalar
            // through an f32 copy of the divisor, which is off by ~1e-8 in f64.
            let quadratic = w.clone().clamp(0.0, kappa).square().mul_scalar(0.5 / kappa);
            let linear = w.sub_scalar(kappa).clamp_min(0.0);
            quadratic + linear
        }
        // Masking (rather than relu) makes the gradient exactly 0 where pb ≥ rb, the boundary
        // included.
        AnchorForm::Hinge => {
            let satisfied = pb.clone().greater_equal(rb.clone());
            (rb - pb).mask_fill(satisfied, 0.0)
        }
        AnchorForm::SquaredHinge => (rb - pb).clamp_min(0.0).square(),
        AnchorForm::Abs => (rb - pb).abs(),
        AnchorForm::Squared => (rb - pb).square(),
        AnchorForm::Nll => pb.neg(),
    }
}

impl Objective for Bapo {
    fn needs(&self) -> Needs {
        let mut needs = PreferencePair::quantities(0).into_iter().collect::<Needs>();
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
        let anchor = anchor_term(self.config.form, self.config.kappa(), pb.clone(), rb)
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
