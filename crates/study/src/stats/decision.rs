//! p-values read off a bootstrap's resampled values, and the decision they support.
//!
//! Each tail is a Monte Carlo p-value, `(1 + #{resamples in the tail}) / (B + 1)` with B the
//! resamples where the statistic was defined: never 0 (B resamples cannot show a probability
//! below 1/(B + 1)), and 1 when nothing was defined.
//!
//! How p-values and intervals correspond (up to the `+1` and the interpolation between order
//! statistics): "differs from 0 at α" (`p_differs ≤ α`) is the `1 − α` percentile interval
//! excluding 0 (the 95% interval at α = 0.05); "equivalent within ±m at α" (TOST,
//! `p_equivalent(m) ≤ α`) is the `1 − 2α` interval lying inside (−m, +m) (the 90% interval at
//! α = 0.05). The decisions here are made on the p-values, so that Holm-adjusted ones
//! ([`super::holm`]) can be passed to [`decide`] as well.

use super::{Bootstrap, StatsError};

/// The side of zero a difference lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    Negative,
    Positive,
}

/// What a comparison shows at a given α against a margin `m` declared in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within ±m (TOST rejects both "≤ −m" and "≥ +m"), and no difference from 0 shown.
    Equivalent,
    /// A difference from 0 is shown, but it lies within ±m: real, and too small to matter.
    WithinMargin { sign: Sign },
    /// A difference from 0 is shown, and it is not shown to lie within ±m.
    Differs { sign: Sign },
    /// Neither a difference nor equivalence is shown.
    Inconclusive,
}

/// The decision of a difference test (`p_differs`, two-sided) and an equivalence test
/// (`p_equivalent`, TOST) at `alpha`; `sign` is the side the difference lies on. The
/// p-values may be Holm-adjusted.
pub fn decide(
    p_differs: f64,
    p_equivalent: f64,
    sign: Sign,
    alpha: f64,
) -> Result<Decision, StatsError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::Alpha(alpha));
    }
    for p in [p_differs, p_equivalent] {
        if !(0.0..=1.0).contains(&p) {
            return Err(StatsError::PValue(p));
        }
    }
    Ok(match (p_differs <= alpha, p_equivalent <= alpha) {
        (false, true) => Decision::Equivalent,
        (true, true) => Decision::WithinMargin { sign },
        (true, false) => Decision::Differs { sign },
        (false, false) => Decision::Inconclusive,
    })
}

impl Bootstrap {
    /// A tail's Monte Carlo p-value, `(1 + count) / (B + 1)`.
    fn tail_p(&self, count: usize) -> f64 {
        (1 + count) as f64 / (self.defined() + 1) as f64
    }

    /// One-sided p-value against "≤ 0", for the alternative "> 0": the resamples `≤ 0`.
    pub fn p_greater(&self) -> f64 {
        self.tail_p(self.count_at_most(0.0))
    }

    /// One-sided p-value against "≥ 0", for the alternative "< 0": the resamples `≥ 0`.
    pub fn p_less(&self) -> f64 {
        self.tail_p(self.count_at_least(0.0))
    }

    /// Two-sided p-value for "differs from 0": twice the smaller tail, at most 1.
    pub fn p_differs(&self) -> f64 {
        (2.0 * self.p_greater().min(self.p_less())).min(1.0)
    }

    /// TOST p-value for "within ±margin": the larger of the tails `≤ −margin` and `≥ +margin`
    /// (both one-sided nulls must be rejected).
    pub fn p_equivalent(&self, margin: f64) -> Result<f64, StatsError> {
        if !(margin > 0.0 && margin.is_finite()) {
            return Err(StatsError::Margin(margin));
        }
        let below = self.tail_p(self.count_at_most(-margin));
        let above = self.tail_p(self.count_at_least(margin));
        Ok(below.max(above))
    }

    /// The side of zero holding more of the resamples (Positive on a tie).
    pub fn sign(&self) -> Sign {
        if self.p_greater() <= self.p_less() {
            Sign::Positive
        } else {
            Sign::Negative
        }
    }

    /// [`decide`] on this bootstrap's own (unadjusted) p-values.
    pub fn decision(&self, margin: f64, alpha: f64) -> Result<Decision, StatsError> {
        decide(
            self.p_differs(),
            self.p_equivalent(margin)?,
            self.sign(),
            alpha,
        )
    }
}
