//! Forgetting against heterogeneity: per heterogeneity setting, the end change of the first
//! retention measure against how often the reference already prefers the user's choice (its
//! win rate on the user's held-out pairs), with the slope across users.
//!
//! The slope's bootstrap (`stats::slope_interval`) resamples users, then within each user its
//! pairs (x) and seeds, with one draw of countries shared by all users: that needs the same
//! probe items for every user, so only items of countries every user was scored on are used.

use std::collections::{BTreeMap, BTreeSet};

use super::numbers::Boot;
use super::select::{Selector, Table, fnv1a64, runs_of};
use super::text::{header, interval, number, row};
use super::{Report, Results};
use crate::data::StudyData;
use crate::plan::Plan;
use crate::stats::{Bootstrap, Slope, cluster_bootstrap};

/// One user of a heterogeneity setting.
pub struct HetUnit {
    pub user: String,
    /// The reference's win rate on the user's held-out pairs.
    pub win: Bootstrap,
    /// The end change of the first retention measure.
    pub change: Bootstrap,
    pub seeds: usize,
}

/// A heterogeneity setting's users and slope.
pub struct HetResult {
    pub units: Vec<HetUnit>,
    pub slope: Option<Slope>,
}

/// Every heterogeneity setting's users and slope on the items `select` chooses.
pub fn slopes(
    plan: &Plan,
    data: &StudyData,
    boot: Boot,
    select: &Selector,
    notes: &mut Vec<String>,
) -> BTreeMap<String, HetResult> {
    let mut out = BTreeMap::new();
    for setting in &plan.heterogeneity_settings {
        let key = format!("{}/slope/{setting}", select.half.name());
        let pairs = unit_tables(plan, data, setting, select);
        let units = summarise(&pairs, boot, &key);
        let slope = aligned(&pairs).and_then(|aligned| {
            boot.slope(&aligned, &key)
                .map_err(|e| notes.push(format!("{key}: {e}")))
                .ok()
        });
        if slope.is_none() && pairs.len() >= 2 {
            notes.push(format!(
                "{key}: no slope (the users' probe items could not be aligned)"
            ));
        }
        out.insert(setting.clone(), HetResult { units, slope });
    }
    out
}

/// Per user with runs: its name, the reference margins at step 0 (first run) and the first
/// retention measure's table.
fn unit_tables(
    plan: &Plan,
    data: &StudyData,
    setting: &str,
    select: &Selector,
) -> Vec<(String, Table, Table)> {
    let personal = Selector {
        drop_seen: false,
        ..*select
    };
    let measure = &plan.rules.retention[0].metric;
    plan.heterogeneity_users
        .iter()
        .filter_map(|user| {
            let runs = runs_of(data, "heterogeneity", setting, user, None);
            let margins = Table::of(&runs, &format!("pref/{user}/reference_margin"), &personal)?;
            let y = Table::of(&runs, &measure.replace("<user>", user), select)?;
            Some((user.clone(), margins, y))
        })
        .collect()
}

/// The users' win rates and end changes, each with its own interval.
fn summarise(pairs: &[(String, Table, Table)], boot: Boot, key: &str) -> Vec<HetUnit> {
    pairs
        .iter()
        .filter_map(|(user, margins, y)| {
            let wins: Vec<f64> = margins.rows[0][0]
                .iter()
                .map(|m| f64::from(u8::from(*m > 0.0)))
                .collect();
            let clusters = &margins.items.clusters;
            let seed = fnv1a64(&format!("{key}/{user}/win"));
            let win = cluster_bootstrap(&wins, clusters, boot.resamples, boot.level, seed).ok()?;
            let change = boot.end_change(y, &format!("{key}/{user}/change")).ok()?;
            Some(HetUnit {
                user: user.clone(),
                win,
                change,
                seeds: y.seeds.len(),
            })
        })
        .collect()
}

/// The units on the probe items of countries every user was scored on, in the same order;
/// None when fewer than 2 users or their items differ.
fn aligned(pairs: &[(String, Table, Table)]) -> Option<Vec<(Vec<f64>, Table)>> {
    if pairs.len() < 2 {
        return None;
    }
    let mut common: BTreeSet<usize> = pairs[0].2.items.ids.iter().copied().collect();
    for (_, _, y) in &pairs[1..] {
        let ids: BTreeSet<usize> = y.items.ids.iter().copied().collect();
        common = common.intersection(&ids).copied().collect();
    }
    let units: Vec<(Vec<f64>, Table)> = pairs
        .iter()
        .map(|(_, x, y)| Some((x.rows[0][0].clone(), y.restrict_to(&common)?)))
        .collect::<Option<_>>()?;
    let first = &units[0].1.items.ids;
    units
        .iter()
        .all(|(_, y)| &y.items.ids == first)
        .then_some(units)
}

impl Report<'_> {
    /// The section, or nothing when the plan has no heterogeneity grid.
    pub(super) fn heterogeneity_section(&self, results: &Results) -> String {
        if !self.plan.has_heterogeneity() {
            return String::new();
        }
        let measure = &self.plan.rules.retention[0];
        let expected = if measure.higher_is_better() {
            "positive"
        } else {
            "negative"
        };
        let mut m = format!(
            "## Heterogeneity ({} half)\n\n\
             x: the reference's win rate on the user's held-out pairs (share with a positive \
             reference margin, step 0); y: the end change of {} ({}). The paper's claim, \
             forgetting grows with the user's distance from the reference, expects a {expected} \
             slope (less retained where the reference agrees less). The slope's interval \
             resamples users, then pairs and seeds within them, and countries; the t-interval \
             over the user points is a check that ignores that each point is an estimate.\n\n",
            results.half.name(),
            measure.name,
            measure.unit
        );
        for (setting, result) in &results.slopes {
            m += &format!("**{setting}**\n\n");
            m += &header(&["user", "reference win rate", "end change", "seeds"]);
            let d = self.decimals_of(0);
            for u in &result.units {
                m += &row(&[
                    u.user.clone(),
                    interval(&u.win, 1.0, 3, false),
                    interval(&u.change, measure.scale, d, true),
                    u.seeds.to_string(),
                ]);
            }
            m += "\n";
            m += &match &result.slope {
                Some(s) => self.slope_text(s),
                None => "Slope: not computed (fewer than 2 users with aligned items).\n\n".into(),
            };
        }
        m
    }

    fn slope_text(&self, s: &Slope) -> String {
        let measure = &self.plan.rules.retention[0];
        let d = self.decimals_of(0);
        let t = s.t_95.map_or("— (fewer than 3 users)".into(), |t| {
            let show = |v: f64| number(v * measure.scale, d, true);
            format!("{} [{}, {}]", show(t.estimate), show(t.low), show(t.high))
        });
        format!(
            "Slope ({} per unit of win rate): {} (defined in {:.0}% of resamples); OLS t 95%: {t}.\n\n",
            measure.unit,
            interval(&s.bootstrap, measure.scale, d, true),
            s.bootstrap.defined_share() * 100.0
        )
    }
}
