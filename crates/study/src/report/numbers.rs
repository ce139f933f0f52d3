//! The report's numbers, each a two-level bootstrap (seeds, then clusters) from `stats`.
//!
//! Every bootstrap's generator is seeded by the FNV-1a hash of a key naming what it computes,
//! so a number does not depend on the order the report computes them in.

use super::select::{Table, fnv1a64};
use crate::stats::{
    Bootstrap, ClusterSums, Draw, Slope, StatsError, Unit, curve_under, hierarchical_interval,
    mean_interval, slope_interval, value_at_level,
};

/// The bootstrap's settings: resamples and interval level (`[rules]`).
#[derive(Debug, Clone, Copy)]
pub struct Boot {
    pub resamples: usize,
    pub level: f64,
}

impl Boot {
    /// The mean over seeds and items of `table` at step index `t`.
    pub fn mean_at(&self, table: &Table, t: usize, key: &str) -> Result<Bootstrap, StatsError> {
        let clusters = &table.items.clusters;
        mean_interval(
            &table.rows[t],
            clusters,
            self.resamples,
            self.level,
            fnv1a64(key),
        )
    }

    /// The mean change from step 0 to step index `t`.
    pub fn change_at(&self, table: &Table, t: usize, key: &str) -> Result<Bootstrap, StatsError> {
        let changes = table.changes(t);
        mean_interval(
            &changes,
            &table.items.clusters,
            self.resamples,
            self.level,
            fnv1a64(key),
        )
    }

    /// The mean change from step 0 to the last evaluation.
    pub fn end_change(&self, table: &Table, key: &str) -> Result<Bootstrap, StatsError> {
        self.change_at(table, table.last(), key)
    }

    /// The change of `y` where the curve (x: `x`'s mean, y: `y`'s mean change from step 0)
    /// first reaches the personalisation level `f` of the headroom above x at step 0,
    /// interpolated; undefined in the resamples (and estimate) where it never does.
    pub fn at_level(
        &self,
        x: &Table,
        y: &Table,
        f: f64,
        key: &str,
    ) -> Result<Bootstrap, StatsError> {
        let curve = Curve::new(x, y)?;
        let sets = [&x.items.clusters, &y.items.clusters];
        hierarchical_interval(
            x.seeds.len(),
            &sets,
            self.resamples,
            self.level,
            fnv1a64(key),
            |d| curve.at_level(d, f),
        )
    }

    /// `b − a` at level `f`, paired: both on the same drawn seeds (the seeds both have) and
    /// clusters. None when the two were scored on other items or share no seed.
    pub fn difference_at_level(
        &self,
        a: (&Table, &Table),
        b: (&Table, &Table),
        f: f64,
        key: &str,
    ) -> Option<Result<Bootstrap, StatsError>> {
        if a.0.labels != b.0.labels || a.1.labels != b.1.labels {
            return None;
        }
        let seeds = super::select::common_seeds(a.0, b.0);
        if seeds.is_empty() {
            return None;
        }
        let restrict = |t: &Table| t.with_seeds(&seeds);
        let (ax, ay, bx, by) = (
            restrict(a.0)?,
            restrict(a.1)?,
            restrict(b.0)?,
            restrict(b.1)?,
        );
        Some(self.paired_at_level(&ax, &ay, &bx, &by, f, key))
    }

    fn paired_at_level(
        &self,
        ax: &Table,
        ay: &Table,
        bx: &Table,
        by: &Table,
        f: f64,
        key: &str,
    ) -> Result<Bootstrap, StatsError> {
        let (a, b) = (Curve::new(ax, ay)?, Curve::new(bx, by)?);
        let sets = [&ax.items.clusters, &ay.items.clusters];
        hierarchical_interval(
            ax.seeds.len(),
            &sets,
            self.resamples,
            self.level,
            fnv1a64(key),
            |d| Some(b.at_level(d, f)? - a.at_level(d, f)?),
        )
    }

    /// The slope of the end change of `y` on the share of `x`'s items above 0, over units
    /// (users): each unit a (reference margins at step 0, retention table) pair whose
    /// retention items are the same questions for every unit.
    pub fn slope(&self, units: &[(Vec<f64>, Table)], key: &str) -> Result<Slope, StatsError> {
        let first = &units.first().ok_or(StatsError::NoSlope)?.1;
        let units: Vec<Unit> = units
            .iter()
            .map(|(x, y)| Unit {
                x_items: x.iter().map(|m| f64::from(u8::from(*m > 0.0))).collect(),
                y_runs: y.changes(y.last()),
            })
            .collect();
        slope_interval(
            &units,
            &first.items.clusters,
            self.resamples,
            self.level,
            fnv1a64(key),
        )
    }
}

/// A setting's personalisation (x) and retention change (y) at every evaluated step, as
/// cluster sums: x is item set 0 of the draws, y item set 1.
struct Curve {
    x: Vec<ClusterSums>,
    y: Vec<ClusterSums>,
}

impl Curve {
    fn new(x: &Table, y: &Table) -> Result<Curve, StatsError> {
        Ok(Curve {
            x: x.level_sums(0)?,
            y: y.change_sums(1)?,
        })
    }

    /// y where x first reaches `ref + f · (1 − ref)`, ref being x at step 0 under the draw.
    fn at_level(&self, draw: &Draw, f: f64) -> Option<f64> {
        let start = self.x.first()?.mean(draw);
        let level = start + f * (1.0 - start);
        value_at_level(&curve_under(draw, &self.x, &self.y), level)
    }
}
