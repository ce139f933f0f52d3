//! The report's verdict: one sentence per question, each decided by fixed rules from the
//! intervals — a setting retains more than DPO when its retention difference's item interval
//! lies above 0, it is matched when its personalisation difference's interval reaches 0, a
//! trend with heterogeneity is a slope whose interval excludes 0.

use std::collections::BTreeMap;

use super::{
    PERSONALISATION, Pooled, RETENTION, SettingResult, Study, VersusDpo, matched, show, show_items,
};

impl SettingResult {
    /// This setting's pooled change of `metric` (one of the report's columns).
    fn metric(&self, metric: &str) -> Option<Pooled> {
        self.columns[Study::column(metric)]
    }
}

impl Study<'_> {
    /// The verdict, one sentence per question, each from the intervals above.
    pub(super) fn verdict(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(dpo) = self.setting("dpo") else {
            lines.push("No DPO runs: nothing to compare with.".into());
            return lines;
        };
        let (dpo_line, dpo_forgets) = dpo_summary(dpo);
        lines.extend(dpo_line);
        let best = self.objectives_against_dpo(&mut lines);
        lines.extend(self.bapo_against_other_objectives(&best));
        lines.extend(self.heterogeneity_trends());
        lines.extend(self.kl_dpo_forgetting_by_user());
        // The paper's claims, each with the numbers that decide it.
        lines.push(forgetting_claim(dpo, dpo_forgets));
        lines.push(self.heterogeneity_claim());
        lines.push(self.kl_constraint_claim());
        lines.push(self.bapo_claim(&best));
        lines
    }

    /// Pushes one line per objective other than DPO (its best matched setting against DPO,
    /// or its closest setting when none is matched); returns each objective's best matched
    /// setting, by objective.
    fn objectives_against_dpo(&self, lines: &mut Vec<String>) -> BTreeMap<String, String> {
        let mut best: BTreeMap<String, String> = BTreeMap::new();
        for objective in self.objectives_besides_dpo() {
            let candidates: Vec<&SettingResult> = self
                .settings
                .iter()
                .filter(|s| s.objective == objective && s.versus_dpo.is_some())
                .collect();
            let matched_ones: Vec<&SettingResult> = candidates
                .iter()
                .copied()
                .filter(|s| s.versus_dpo.as_ref().is_some_and(|v| matched(&v.0)))
                .collect();
            // Each objective's best setting among those matched with DPO.
            let Some(top) = highest(&matched_ones, |v| v.1.items.estimate) else {
                lines.extend(closest_unmatched_line(objective, &candidates));
                continue;
            };
            let Some(line) = best_matched_line(objective, top, &matched_ones) else {
                continue;
            };
            lines.push(line);
            best.insert(objective.to_string(), top.name.clone());
        }
        best
    }

    /// The objectives other than DPO, in the order of their first setting.
    fn objectives_besides_dpo(&self) -> Vec<&str> {
        let mut objectives: Vec<&str> = Vec::new();
        for s in &self.settings {
            if s.objective != "dpo" && !objectives.contains(&s.objective.as_str()) {
                objectives.push(&s.objective);
            }
        }
        objectives
    }

    /// BAPO's best matched setting against every other objective's, on the country probe
    /// (nothing without a matched BAPO setting).
    fn bapo_against_other_objectives(&self, best: &BTreeMap<String, String>) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(bapo) = best.get("bapo") else {
            return lines;
        };
        for (objective, other) in best.iter().filter(|(o, _)| o.as_str() != "bapo") {
            if let Some(d) = self.between(other, bapo, RETENTION, 51) {
                lines.push(format!(
                    "**BAPO against {}**, both at their best matched setting: `{bapo}` keeps {} points more of the country probe than `{other}`{}.",
                    display(objective),
                    show(&d, 100.0),
                    if d.items.low > 0.0 {
                        ""
                    } else if d.items.high < 0.0 {
                        " (it keeps less)"
                    } else {
                        " (no measurable difference)"
                    }
                ));
            }
        }
        lines
    }

    /// One line per heterogeneity setting: how its forgetting trends with heterogeneity.
    fn heterogeneity_trends(&self) -> Vec<String> {
        self.slopes
            .iter()
            .map(|(setting, slope)| {
                let trend = if slope.high < 0.0 {
                    "grows with heterogeneity"
                } else if slope.low > 0.0 {
                    "shrinks as heterogeneity grows"
                } else {
                    "shows no measurable trend with heterogeneity"
                };
                format!(
                    "**Heterogeneity, `{setting}`:** forgetting {trend} (slope {} points per nat, over {} users).",
                    show_items(slope, 100.0),
                    self.users.len()
                )
            })
            .collect()
    }

    /// One line per KL-DPO setting of the heterogeneity grid: the users on which the country
    /// probe falls measurably, if any.
    fn kl_dpo_forgetting_by_user(&self) -> Vec<String> {
        let kl_settings: Vec<&String> = self
            .plan
            .heterogeneity_settings
            .iter()
            .filter(|s| self.setting(s).is_some_and(|r| r.objective == "kl-dpo"))
            .collect();
        kl_settings
            .into_iter()
            .map(|setting| {
                let forgetting: Vec<&str> = self
                    .users
                    .iter()
                    .filter(|u| {
                        u.by_setting
                            .get(setting)
                            .and_then(|on| on.retention)
                            .is_some_and(|r| r.items.high < 0.0)
                    })
                    .map(|u| u.user.as_str())
                    .collect();
                if forgetting.is_empty() {
                    format!("**KL-DPO (`{setting}`) prevents measurable forgetting** on every user of the heterogeneity grid (its seeds only).")
                } else {
                    format!(
                        "**KL-DPO (`{setting}`) does not prevent forgetting:** the country probe falls measurably for {}.",
                        forgetting.join(", ")
                    )
                }
            })
            .collect()
    }

    /// The claim that the loss varies with heterogeneity, decided by DPO's slope.
    fn heterogeneity_claim(&self) -> String {
        format!(
            "**Claim: the loss varies with heterogeneity** — {}",
            match self.slopes.get("dpo") {
                Some(slope) if slope.excludes_zero() => format!(
                    "agrees that it varies: DPO's slope is {} points per nat over {} users, so the loss is {} for users further from what the reference prefers.",
                    show_items(slope, 100.0),
                    self.users.len(),
                    if slope.estimate > 0.0 {
                        "smaller"
                    } else {
                        "larger"
                    }
                ),
                Some(slope) => format!(
                    "not confirmed here: DPO's slope is {} points per nat over {} users.",
                    show_items(slope, 100.0),
                    self.users.len()
                ),
                None => "not tested (fewer than two users).".into(),
            }
        )
    }

    /// The claim that a KL constraint does not prevent forgetting, decided by every KL-DPO
    /// setting's change of the country probe.
    fn kl_constraint_claim(&self) -> String {
        let kl: Vec<(&str, Pooled)> = self
            .settings
            .iter()
            .filter(|s| s.objective == "kl-dpo")
            .filter_map(|s| Some((s.name.as_str(), s.metric(RETENTION)?)))
            .collect();
        let listed = kl
            .iter()
            .map(|(name, r)| format!("`{name}` {}", show(r, 100.0)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "**Claim: a KL constraint does not prevent it** — {}",
            if kl.is_empty() {
                "not tested (no KL-DPO runs).".to_string()
            } else if kl.iter().any(|(_, r)| r.items.high < 0.0) {
                format!(
                    "agrees, in part: KL-DPO loses less than DPO but a measurable loss remains in at least one setting ({listed} points)."
                )
            } else {
                format!(
                    "disagrees: every KL-DPO setting keeps the country probe within its interval ({listed} points)."
                )
            }
        )
    }

    /// The claim that BAPO keeps the knowledge at matched personalisation, decided by BAPO's
    /// best matched setting (`best["bapo"]`) against DPO.
    fn bapo_claim(&self, best: &BTreeMap<String, String>) -> String {
        let bapo = best
            .get("bapo")
            .and_then(|b| self.setting(b))
            .and_then(|s| Some((s.name.as_str(), s.versus_dpo.as_ref()?)));
        format!(
            "**Claim: BAPO keeps the knowledge at matched personalisation** — {}",
            match bapo {
                Some((name, v)) if v.1.items.low > 0.0 => format!(
                    "agrees: `{name}` keeps {} points more of the country probe than DPO.",
                    show(&v.1, 100.0)
                ),
                Some((name, v)) => format!(
                    "not confirmed here: `{name}` keeps {} points more of the country probe than DPO.",
                    show(&v.1, 100.0)
                ),
                None if self.settings.iter().any(|s| s.objective == "bapo") => {
                    "not confirmed here: no BAPO setting personalises as much as DPO.".into()
                }
                None => "not tested (no BAPO runs).".into(),
            }
        )
    }
}

/// DPO's own line (None without both its personalisation and retention) and whether it
/// forgets measurably: its retention's item interval lies below 0.
fn dpo_summary(dpo: &SettingResult) -> (Option<String>, bool) {
    let (Some(p), Some(r)) = (dpo.metric(PERSONALISATION), dpo.metric(RETENTION)) else {
        return (None, false);
    };
    let forgets = r.items.high < 0.0;
    let line = format!(
        "**DPO {}.** It raises the trained user's held-out accuracy by {} points and changes the country probe by {} points.",
        if forgets {
            "forgets measurably in this regime"
        } else {
            "does not forget measurably in this regime"
        },
        show(&p, 100.0),
        show(&r, 100.0)
    );
    (Some(line), forgets)
}

/// The setting with the highest `estimate` of its difference with DPO (the last of equals;
/// settings without one rank lowest); None when `settings` is empty.
fn highest<'s>(
    settings: &[&'s SettingResult],
    estimate: fn(&VersusDpo) -> f64,
) -> Option<&'s SettingResult> {
    let key = |s: &SettingResult| s.versus_dpo.as_ref().map_or(f64::MIN, estimate);
    settings
        .iter()
        .copied()
        .max_by(|a, b| key(a).total_cmp(&key(b)))
}

/// The line of an objective none of whose settings is matched with DPO: its setting closest
/// to DPO's personalisation (None when it has no setting compared with DPO).
fn closest_unmatched_line(objective: &str, candidates: &[&SettingResult]) -> Option<String> {
    let closest = highest(candidates, |v| v.0.items.estimate)?;
    let (p, r, _) = closest.versus_dpo.as_ref()?;
    Some(format!(
        "**{}: no setting personalises as much as DPO.** The closest, `{}`, differs from DPO's held-out accuracy by {} points, and keeps {} points more of the country probe.",
        display(objective),
        closest.name,
        show(p, 100.0),
        show(r, 100.0)
    ))
}

/// The line of an objective's best matched setting `top` against DPO, listing all its
/// matched settings (None when `top` has no difference with DPO).
fn best_matched_line(
    objective: &str,
    top: &SettingResult,
    matched_ones: &[&SettingResult],
) -> Option<String> {
    let (p, r, f) = top.versus_dpo.as_ref()?;
    let outcome = if r.items.low > 0.0 {
        "retains more than DPO at matched personalisation"
    } else if r.items.high < 0.0 {
        "retains less than DPO at matched personalisation"
    } else {
        "retains no measurably different share than DPO at matched personalisation"
    };
    Some(format!(
        "**{} {outcome}.** Its best matched setting, `{}` (matched: {}), keeps {} points more of the country probe than DPO{}, with a personalisation difference of {} points.",
        display(objective),
        top.name,
        matched_ones
            .iter()
            .map(|s| format!("`{}`", s.name))
            .collect::<Vec<_>>()
            .join(", "),
        show(r, 100.0),
        f.map(|f| format!(" and {} nats/token more of qa_wikidata", show(&f, 1.0)))
            .unwrap_or_default(),
        show(p, 100.0)
    ))
}

/// The claim that personalisation makes the model forget, decided by DPO's retention.
fn forgetting_claim(dpo: &SettingResult, dpo_forgets: bool) -> String {
    format!(
        "**Claim: personalisation makes the model forget** — {}",
        match dpo.metric(RETENTION) {
            Some(r) if dpo_forgets => format!(
                "agrees: DPO changes the country probe by {} points.",
                show(&r, 100.0)
            ),
            Some(r) => format!(
                "not confirmed here: DPO changes the country probe by {} points.",
                show(&r, 100.0)
            ),
            None => "not tested.".into(),
        }
    )
}

/// An objective's name as the papers write it.
fn display(objective: &str) -> String {
    objective.to_uppercase()
}
