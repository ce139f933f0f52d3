//! The report's verdict: one sentence per question, each decided by fixed rules from the
//! intervals — a setting retains more than DPO when its retention difference's item interval
//! lies above 0, it is matched when its personalisation difference's interval reaches 0, a
//! trend with heterogeneity is a slope whose interval excludes 0.

use std::collections::BTreeMap;

use super::{PERSONALISATION, Pooled, RETENTION, SettingResult, Study, matched, show, show_items};

impl Study<'_> {
    /// The verdict, one sentence per question, each from the intervals above.
    pub(super) fn verdict(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let column = |s: &SettingResult, metric: &str| s.columns[Self::column(metric)];
        let Some(dpo) = self.setting("dpo") else {
            lines.push("No DPO runs: nothing to compare with.".into());
            return lines;
        };
        let dpo_forgets = match (column(dpo, PERSONALISATION), column(dpo, RETENTION)) {
            (Some(p), Some(r)) => {
                let forgets = r.items.high < 0.0;
                lines.push(format!(
                    "**DPO {}.** It raises the trained user's held-out accuracy by {} points and changes the country probe by {} points.",
                    if forgets {
                        "forgets measurably in this regime"
                    } else {
                        "does not forget measurably in this regime"
                    },
                    show(&p, 100.0),
                    show(&r, 100.0)
                ));
                forgets
            }
            _ => false,
        };
        // Each objective's best setting among those matched with DPO.
        let mut best: BTreeMap<String, String> = BTreeMap::new();
        let mut objectives: Vec<&str> = Vec::new();
        for s in &self.settings {
            if s.objective != "dpo" && !objectives.contains(&s.objective.as_str()) {
                objectives.push(&s.objective);
            }
        }
        for objective in objectives {
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
            let Some(top) = matched_ones.iter().copied().max_by(|a, b| {
                let r = |s: &SettingResult| {
                    s.versus_dpo
                        .as_ref()
                        .map_or(f64::MIN, |v| v.1.items.estimate)
                };
                r(a).total_cmp(&r(b))
            }) else {
                let closest = candidates.iter().copied().max_by(|a, b| {
                    let p = |s: &SettingResult| {
                        s.versus_dpo
                            .as_ref()
                            .map_or(f64::MIN, |v| v.0.items.estimate)
                    };
                    p(a).total_cmp(&p(b))
                });
                if let Some((c, (p, r, _))) =
                    closest.and_then(|c| Some((c, c.versus_dpo.as_ref()?)))
                {
                    lines.push(format!(
                        "**{}: no setting personalises as much as DPO.** The closest, `{}`, differs from DPO's held-out accuracy by {} points, and keeps {} points more of the country probe.",
                        display(objective),
                        c.name,
                        show(p, 100.0),
                        show(r, 100.0)
                    ));
                }
                continue;
            };
            let Some((p, r, f)) = top.versus_dpo.as_ref() else {
                continue;
            };
            let outcome = if r.items.low > 0.0 {
                "retains more than DPO at matched personalisation"
            } else if r.items.high < 0.0 {
                "retains less than DPO at matched personalisation"
            } else {
                "retains no measurably different share than DPO at matched personalisation"
            };
            lines.push(format!(
                "**{} {outcome}.** Its best matched setting, `{}` (matched: {}), keeps {} points more of the country probe than DPO{}, with a personalisation difference of {} points.",
                display(objective),
                top.name,
                matched_ones.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", "),
                show(r, 100.0),
                f.map(|f| format!(" and {} nats/token more of qa_wikidata", show(&f, 1.0))).unwrap_or_default(),
                show(p, 100.0)
            ));
            best.insert(objective.to_string(), top.name.clone());
        }
        if let Some(bapo) = best.get("bapo") {
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
        }
        // Heterogeneity.
        for (setting, slope) in &self.slopes {
            let trend = if slope.high < 0.0 {
                "grows with heterogeneity"
            } else if slope.low > 0.0 {
                "shrinks as heterogeneity grows"
            } else {
                "shows no measurable trend with heterogeneity"
            };
            lines.push(format!(
                "**Heterogeneity, `{setting}`:** forgetting {trend} (slope {} points per nat, over {} users).",
                show_items(slope, 100.0),
                self.users.len()
            ));
        }
        let kl_settings: Vec<&String> = self
            .plan
            .heterogeneity_settings
            .iter()
            .filter(|s| self.setting(s).is_some_and(|r| r.objective == "kl-dpo"))
            .collect();
        for setting in kl_settings {
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
            lines.push(if forgetting.is_empty() {
                format!("**KL-DPO (`{setting}`) prevents measurable forgetting** on every user of the heterogeneity grid (its seeds only).")
            } else {
                format!(
                    "**KL-DPO (`{setting}`) does not prevent forgetting:** the country probe falls measurably for {}.",
                    forgetting.join(", ")
                )
            });
        }
        // The paper's claims, each with the numbers that decide it.
        lines.push(format!(
            "**Claim: personalisation makes the model forget** — {}",
            match column(dpo, RETENTION) {
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
        ));
        lines.push(format!(
            "**Claim: the loss varies with heterogeneity** — {}",
            match self.slopes.get("dpo") {
                Some(slope) if slope.excludes_zero() => format!(
                    "agrees that it varies: DPO's slope is {} points per nat over {} users, so the loss is {} for users further from what the reference prefers.",
                    show_items(slope, 100.0),
                    self.users.len(),
                    if slope.estimate > 0.0 { "smaller" } else { "larger" }
                ),
                Some(slope) => format!(
                    "not confirmed here: DPO's slope is {} points per nat over {} users.",
                    show_items(slope, 100.0),
                    self.users.len()
                ),
                None => "not tested (fewer than two users).".into(),
            }
        ));
        let kl: Vec<(&str, Pooled)> = self
            .settings
            .iter()
            .filter(|s| s.objective == "kl-dpo")
            .filter_map(|s| Some((s.name.as_str(), column(s, RETENTION)?)))
            .collect();
        let listed = kl
            .iter()
            .map(|(name, r)| format!("`{name}` {}", show(r, 100.0)))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!(
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
        ));
        let bapo = best
            .get("bapo")
            .and_then(|b| self.setting(b))
            .and_then(|s| Some((s.name.as_str(), s.versus_dpo.as_ref()?)));
        lines.push(format!(
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
        ));
        lines
    }
}

/// An objective's name as the papers write it.
fn display(objective: &str) -> String {
    objective.to_uppercase()
}
