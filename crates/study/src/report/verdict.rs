//! The verdict: the paper's claims, fixed before looking, each tested on the confirmation half
//! with a bootstrap p-value, Holm-adjusted over the whole family (every claim of the list,
//! whatever its result).
//!
//! - (a) DPO forgets, (b) KL-DPO forgets: per learning rate and retention measure, the end
//!   change. p: two-sided "differs from 0". Agrees when, with the Holm-adjusted p, the
//!   decision is "differs" on the worse side (a change shown to lie within the margin by the
//!   unadjusted TOST is "not shown": real but too small to matter); "disagrees" when it
//!   differs on the better side.
//! - (c) BAPO keeps: per learning rate, level and measure, the change at the level. p: TOST
//!   within ± the measure's margin. Agrees when the adjusted p ≤ α; it has no sign, so it is
//!   never "disagrees".
//! - (d) BAPO retains more than DPO, and more than KL-DPO: per learning rate, level and
//!   measure, the paired difference at the level. p: two-sided "differs from 0" (so that a
//!   difference on the other side can be shown too); agrees or disagrees by the side.
//! - (e) DPO's forgetting grows with heterogeneity: the slope of the first measure's end
//!   change on the reference's win rate, expected positive when higher is better (less
//!   retained where the reference agrees less). p: two-sided, as (d).

use super::text::{header, interval, p_value, rate, row};
use super::{COMPARISONS, Report};
use crate::stats::{Bootstrap, Decision, Sign, decide, holm};

/// How a claim is tested and read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A change shown on the paper's side, beyond what the margin makes negligible.
    Forgets,
    /// Equivalent to 0 within the margin.
    Keeps,
    /// A difference or slope shown on the paper's side.
    Direction,
}

struct Claim {
    text: String,
    kind: Kind,
    bootstrap: Option<Bootstrap>,
    /// The measure's margin in its raw units, and the display scale and decimals.
    margin: f64,
    scale: f64,
    decimals: usize,
    /// The side the paper expects.
    paper: Sign,
}

impl Claim {
    fn p(&self) -> f64 {
        let Some(b) = self.bootstrap.as_ref().filter(|b| b.estimate.is_some()) else {
            return 1.0;
        };
        match self.kind {
            Kind::Keeps => b.p_equivalent(self.margin).unwrap_or(1.0),
            Kind::Forgets | Kind::Direction => b.p_differs(),
        }
    }

    /// The result with the Holm-adjusted p-value `adjusted`.
    fn result(&self, adjusted: f64, alpha: f64) -> &'static str {
        let Some(b) = self.bootstrap.as_ref().filter(|b| b.estimate.is_some()) else {
            return "not shown (no estimate)";
        };
        let side = |s: Sign| {
            if s == self.paper {
                "agrees"
            } else {
                "disagrees"
            }
        };
        match self.kind {
            Kind::Keeps if adjusted <= alpha => "agrees",
            Kind::Keeps => "not shown",
            Kind::Direction if adjusted <= alpha => side(b.sign()),
            Kind::Direction => "not shown",
            Kind::Forgets => {
                let equivalent = b.p_equivalent(self.margin).unwrap_or(1.0);
                match decide(adjusted, equivalent, b.sign(), alpha) {
                    Ok(Decision::Differs { sign }) => side(sign),
                    Ok(Decision::WithinMargin { .. }) => "not shown (within the margin)",
                    _ => "not shown",
                }
            }
        }
    }
}

impl Report<'_> {
    pub(super) fn verdict_section(&self) -> String {
        let claims = self.claims();
        let alpha = self.plan.rules.alpha;
        let ps: Vec<f64> = claims.iter().map(Claim::p).collect();
        let adjusted = match holm(&ps, alpha) {
            Ok(h) => h.adjusted,
            Err(e) => return format!("## Verdict\n\nNo verdict: {e}.\n\n"),
        };
        let mut m = format!(
            "## Verdict\n\n\
             The paper's claims, listed before the runs, each tested on the confirmation half. \
             {} claims; p-values are Holm-adjusted over all of them at α = {alpha}. \"agrees\": \
             shown on the paper's side; \"disagrees\": shown on the other side; \"not shown\": \
             neither. (a, b) and (d, e) use the two-sided bootstrap p of \"differs from 0\"; (c) \
             the TOST p of \"within ± the margin\"; a change of (a, b) shown to lie within the \
             margin is not counted as forgetting. With {} resamples the smallest two-sided p \
             is {} (the smallest TOST p half that), and Holm multiplies the smallest by {}, so a \
             claim survives only when almost no resample falls on the other side.\n\n",
            claims.len(),
            self.plan.rules.resamples,
            p_value(2.0 / (self.plan.rules.resamples + 1) as f64),
            claims.len()
        );
        m += &header(&["claim", "estimate", "p", "Holm p", "result"]);
        let mut counts = [0usize; 3];
        for ((claim, p), adj) in claims.iter().zip(&ps).zip(&adjusted) {
            let result = claim.result(*adj, alpha);
            counts[match result {
                "agrees" => 0,
                "disagrees" => 1,
                _ => 2,
            }] += 1;
            let estimate = claim.bootstrap.as_ref().map_or("—".into(), |b| {
                interval(b, claim.scale, claim.decimals, true)
            });
            m += &row(&[
                claim.text.clone(),
                estimate,
                p_value(*p),
                p_value(*adj),
                result.into(),
            ]);
        }
        m + &format!(
            "\nAgrees: {}; disagrees: {}; not shown: {}.\n\n",
            counts[0], counts[1], counts[2]
        )
    }

    /// The family, in a fixed order: (a), (b), (c), (d), (e).
    fn claims(&self) -> Vec<Claim> {
        let mut claims = Vec::new();
        for (label, objective) in [("a", "dpo"), ("b", "kl-dpo")] {
            claims.extend(self.forgetting_claims(label, objective));
        }
        claims.extend(self.keeping_claims());
        claims.extend(self.more_claims());
        claims.extend(self.heterogeneity_claim());
        claims
    }

    /// A claim about measure `mi` (its margin, scale and decimals; `better`: the paper's side
    /// is the better one, else the worse one).
    fn claim(
        &self,
        text: String,
        kind: Kind,
        b: Option<&Bootstrap>,
        mi: usize,
        better: bool,
    ) -> Claim {
        let r = &self.plan.rules.retention[mi];
        let up = r.higher_is_better() == better;
        Claim {
            text,
            kind,
            bootstrap: b.cloned(),
            margin: r.margin / r.scale,
            scale: r.scale,
            decimals: self.decimals_of(mi),
            paper: if up { Sign::Positive } else { Sign::Negative },
        }
    }

    fn forgetting_claims(&self, label: &str, objective: &str) -> Vec<Claim> {
        let Some(setting) = self.primary(objective) else {
            return Vec::new();
        };
        let mut claims = Vec::new();
        for (li, lr) in self.plan.learning_rates.iter().enumerate() {
            for (mi, r) in self.plan.rules.retention.iter().enumerate() {
                let b = self.confirmation.end.get(&(li, setting.to_string(), mi));
                let text = format!(
                    "({label}) {setting} forgets at lr {}: {} at the end",
                    rate(*lr),
                    r.name
                );
                claims.push(self.claim(text, Kind::Forgets, b, mi, false));
            }
        }
        claims
    }

    fn keeping_claims(&self) -> Vec<Claim> {
        let Some(setting) = self.primary("bapo") else {
            return Vec::new();
        };
        let mut claims = Vec::new();
        for (li, lr) in self.plan.learning_rates.iter().enumerate() {
            for (fi, f) in self.plan.rules.levels.iter().enumerate() {
                for (mi, r) in self.plan.rules.retention.iter().enumerate() {
                    let b = self
                        .confirmation
                        .at_level
                        .get(&(li, fi, setting.to_string(), mi));
                    let text = format!(
                        "(c) {setting} keeps at lr {}, level {f}: {} within ±{}",
                        rate(*lr),
                        r.name,
                        r.margin
                    );
                    claims.push(self.claim(text, Kind::Keeps, b, mi, true));
                }
            }
        }
        claims
    }

    fn more_claims(&self) -> Vec<Claim> {
        let mut claims = Vec::new();
        for (ci, (b, a)) in COMPARISONS
            .iter()
            .enumerate()
            .filter(|(_, (b, _))| *b == "bapo")
        {
            let (Some(nb), Some(na)) = (self.primary(b), self.primary(a)) else {
                continue;
            };
            for (li, lr) in self.plan.learning_rates.iter().enumerate() {
                for (fi, f) in self.plan.rules.levels.iter().enumerate() {
                    for (mi, r) in self.plan.rules.retention.iter().enumerate() {
                        let d = self.confirmation.differences.get(&(li, fi, ci, mi));
                        let text = format!(
                            "(d) {nb} retains more than {na} at lr {}, level {f}: {}",
                            rate(*lr),
                            r.name
                        );
                        claims.push(self.claim(text, Kind::Direction, d, mi, true));
                    }
                }
            }
        }
        claims
    }

    fn heterogeneity_claim(&self) -> Option<Claim> {
        let setting = self
            .plan
            .heterogeneity_settings
            .iter()
            .find(|s| self.primary("dpo") == Some(s.as_str()))?;
        let result = self.confirmation.slopes.get(setting);
        let slope = result.and_then(|h| h.slope.as_ref());
        let r = &self.plan.rules.retention[0];
        let text = format!(
            "(e) {setting}'s forgetting grows with heterogeneity: slope of {} on the reference's win rate",
            r.name
        );
        Some(self.claim(text, Kind::Direction, slope.map(|s| &s.bootstrap), 0, true))
    }
}
