//! A two-level bootstrap: seeds (runs) first, then clusters of items.
//!
//! Why two levels: a setting's result varies with the seed it was trained with *and* with the
//! items it was scored on; an interval over items alone (as `intervals::paired_bootstrap`)
//! says nothing of the first, and one over seeds alone nothing of the second. Why clusters:
//! items about one country share what the model knows of that country, so they are not
//! independent; resampling them one by one understates the spread.
//!
//! One resample is a [`Draw`]: seed indices drawn with replacement, then, for each item set,
//! cluster indices drawn with replacement (every item of a drawn cluster enters; a cluster
//! drawn twice counts twice). The statistic sees only the draw, so every setting compared in a
//! resample is evaluated on the SAME clusters and the SAME seed positions: differences are
//! paired by item and by seed.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{StatsError, check_level, percentile_bounds, zero_width};

/// Which cluster each item belongs to. Cluster ids are arbitrary `usize`s; they are numbered
/// densely (0, 1, …, in order of first appearance) and a [`Draw`] holds those numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    of_item: Vec<usize>,
    sizes: Vec<usize>,
}

impl Clusters {
    /// The clusters of items whose cluster ids are `ids` (one per item).
    pub fn new(ids: &[usize]) -> Result<Self, StatsError> {
        if ids.is_empty() {
            return Err(StatsError::NoItems);
        }
        let mut dense: HashMap<usize, usize> = HashMap::new();
        let of_item: Vec<usize> = ids
            .iter()
            .map(|id| {
                let next = dense.len();
                *dense.entry(*id).or_insert(next)
            })
            .collect();
        let mut sizes = vec![0; dense.len()];
        for &c in &of_item {
            sizes[c] += 1;
        }
        Ok(Clusters { of_item, sizes })
    }

    /// `items` items, each its own cluster: the ordinary item bootstrap.
    pub fn independent(items: usize) -> Result<Self, StatsError> {
        Self::new(&(0..items).collect::<Vec<_>>())
    }

    /// The number of items.
    pub fn items(&self) -> usize {
        self.of_item.len()
    }

    /// The number of clusters.
    pub fn count(&self) -> usize {
        self.sizes.len()
    }

    /// Each item's dense cluster number.
    pub fn of_item(&self) -> &[usize] {
        &self.of_item
    }
}

/// One resample: drawn seed (run) indices, and for each item set the drawn cluster numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    pub seeds: Vec<usize>,
    pub clusters: Vec<Vec<usize>>,
}

impl Draw {
    /// Every seed once and every cluster once: the statistic on this is the point estimate.
    pub fn identity(n_seeds: usize, sets: &[&Clusters]) -> Draw {
        Draw {
            seeds: (0..n_seeds).collect(),
            clusters: sets.iter().map(|c| (0..c.count()).collect()).collect(),
        }
    }

    /// Seeds first, then each set's clusters, all with replacement. With one seed the seed
    /// level is degenerate and draws nothing from the generator.
    fn random(rng: &mut StdRng, n_seeds: usize, sets: &[&Clusters]) -> Draw {
        let seeds = if n_seeds == 1 {
            vec![0]
        } else {
            (0..n_seeds).map(|_| rng.random_range(0..n_seeds)).collect()
        };
        let clusters = sets
            .iter()
            .map(|c| {
                (0..c.count())
                    .map(|_| rng.random_range(0..c.count()))
                    .collect()
            })
            .collect();
        Draw { seeds, clusters }
    }
}

/// A bootstrap's result: the point estimate, the percentile interval, and the resampled
/// values themselves (sorted) for p-values (see `decision`).
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    /// The statistic on the data as observed (None: undefined there, e.g. a level not reached).
    pub estimate: Option<f64>,
    /// The `(1 ∓ level)/2` quantiles of the resamples where the statistic was defined; None
    /// when it never was.
    pub bounds: Option<(f64, f64)>,
    pub level: f64,
    /// Resamples drawn, defined or not.
    pub resamples: usize,
    /// One seed only: the interval carries item (cluster) noise only, not seed noise.
    pub items_only: bool,
    sorted: Vec<f64>,
}

impl Bootstrap {
    /// A bootstrap from its resampled values (None where the statistic was undefined).
    pub fn from_resamples(
        estimate: Option<f64>,
        resampled: &[Option<f64>],
        level: f64,
    ) -> Result<Self, StatsError> {
        check_level(level)?;
        if resampled.is_empty() {
            return Err(StatsError::NoResamples);
        }
        let mut sorted: Vec<f64> = resampled.iter().flatten().copied().collect();
        if sorted.iter().chain(&estimate).any(|v| !v.is_finite()) {
            return Err(StatsError::NotFinite);
        }
        sorted.sort_by(f64::total_cmp);
        Ok(Bootstrap {
            estimate,
            bounds: (!sorted.is_empty()).then(|| percentile_bounds(&sorted, level)),
            level,
            resamples: resampled.len(),
            items_only: false,
            sorted,
        })
    }

    /// The defined resampled values, sorted.
    pub fn values(&self) -> &[f64] {
        &self.sorted
    }

    /// How many resamples the statistic was defined in.
    pub fn defined(&self) -> usize {
        self.sorted.len()
    }

    /// The share of resamples the statistic was defined in (e.g. that reached a level).
    pub fn defined_share(&self) -> f64 {
        self.defined() as f64 / self.resamples as f64
    }

    /// The share of defined resamples `≤ x`.
    pub fn share_at_most(&self, x: f64) -> f64 {
        self.count_at_most(x) as f64 / self.defined().max(1) as f64
    }

    /// The share of defined resamples `≥ x`.
    pub fn share_at_least(&self, x: f64) -> f64 {
        self.count_at_least(x) as f64 / self.defined().max(1) as f64
    }

    pub(crate) fn count_at_most(&self, x: f64) -> usize {
        self.sorted.partition_point(|v| *v <= x)
    }

    pub(crate) fn count_at_least(&self, x: f64) -> usize {
        self.sorted.len() - self.sorted.partition_point(|v| *v < x)
    }

    /// The percentile interval at another `level` from the same resamples (e.g. the 90% one
    /// that TOST at 5% corresponds to).
    pub fn bounds_at(&self, level: f64) -> Result<Option<(f64, f64)>, StatsError> {
        check_level(level)?;
        Ok((!self.sorted.is_empty()).then(|| percentile_bounds(&self.sorted, level)))
    }

    /// Whether the interval has no width (all seeds and items alike): to be printed as
    /// "all equal", not as a certainty.
    pub fn zero_width(&self) -> bool {
        self.bounds.is_some_and(|(low, high)| zero_width(low, high))
    }

    /// Whether the interval lies entirely on one side of zero.
    pub fn excludes_zero(&self) -> bool {
        self.bounds
            .is_some_and(|(low, high)| low > 0.0 || high < 0.0)
    }
}

/// The bootstrap of `statistic` over `n_seeds` runs and the item sets `sets`: its value on the
/// identity draw, and on `resamples` draws from a generator seeded with `rng_seed`, each
/// drawing seeds first and then the clusters of every set. `items_only` is set with one seed.
pub fn hierarchical_interval(
    n_seeds: usize,
    sets: &[&Clusters],
    resamples: usize,
    level: f64,
    rng_seed: u64,
    statistic: impl Fn(&Draw) -> Option<f64>,
) -> Result<Bootstrap, StatsError> {
    if n_seeds == 0 {
        return Err(StatsError::NoSeeds);
    }
    if resamples == 0 {
        return Err(StatsError::NoResamples);
    }
    check_level(level)?;
    let estimate = statistic(&Draw::identity(n_seeds, sets));
    let mut rng = StdRng::seed_from_u64(rng_seed);
    let resampled: Vec<Option<f64>> = (0..resamples)
        .map(|_| statistic(&Draw::random(&mut rng, n_seeds, sets)))
        .collect();
    let mut bootstrap = Bootstrap::from_resamples(estimate, &resampled, level)?;
    bootstrap.items_only = n_seeds == 1;
    Ok(bootstrap)
}

/// One metric of one setting, summed per run per cluster, so that its mean under a draw costs
/// (drawn seeds × drawn clusters) additions instead of a pass over the items.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSums {
    sums: Vec<Vec<f64>>,
    sizes: Vec<usize>,
    set: usize,
}

impl ClusterSums {
    /// `runs[s][i]`: the metric of item `i` in run `s`, items described by `clusters`, which
    /// is item set number `set` of the draws this will be evaluated under.
    pub fn new(runs: &[Vec<f64>], clusters: &Clusters, set: usize) -> Result<Self, StatsError> {
        if runs.is_empty() {
            return Err(StatsError::NoSeeds);
        }
        let mut sums = vec![vec![0.0; clusters.count()]; runs.len()];
        for (run, sum) in runs.iter().zip(&mut sums) {
            if run.len() != clusters.items() {
                return Err(StatsError::Items {
                    expected: clusters.items(),
                    got: run.len(),
                });
            }
            if run.iter().any(|v| !v.is_finite()) {
                return Err(StatsError::NotFinite);
            }
            for (value, &c) in run.iter().zip(clusters.of_item()) {
                sum[c] += value;
            }
        }
        Ok(ClusterSums {
            sums,
            sizes: clusters.sizes.clone(),
            set,
        })
    }

    /// The number of runs.
    pub fn runs(&self) -> usize {
        self.sums.len()
    }

    /// The mean over the draw's seeds and its clusters of this set, every drawn item weighing
    /// the same.
    pub fn mean(&self, draw: &Draw) -> f64 {
        self.mean_over(&draw.seeds, &draw.clusters[self.set])
    }

    /// The mean over runs `seeds` and clusters `clusters` (indices, repeats counting twice):
    /// Σ sum[s][c] / Σ count[c] over the drawn pairs.
    pub fn mean_over(&self, seeds: &[usize], clusters: &[usize]) -> f64 {
        let total: f64 = seeds
            .iter()
            .map(|&s| clusters.iter().map(|&c| self.sums[s][c]).sum::<f64>())
            .sum();
        let count: usize = clusters.iter().map(|&c| self.sizes[c]).sum();
        total / (count * seeds.len()) as f64
    }
}

/// The mean of one setting's metric (`runs[s][i]`, e.g. per-item changes) over seeds and
/// items, with its two-level interval.
pub fn mean_interval(
    runs: &[Vec<f64>],
    clusters: &Clusters,
    resamples: usize,
    level: f64,
    rng_seed: u64,
) -> Result<Bootstrap, StatsError> {
    let sums = ClusterSums::new(runs, clusters, 0)?;
    hierarchical_interval(sums.runs(), &[clusters], resamples, level, rng_seed, |d| {
        Some(sums.mean(d))
    })
}

/// `b − a` for two settings on the same items and seeds, with its two-level interval: each
/// resample evaluates both on the same drawn seed positions and the same drawn clusters.
pub fn difference_interval(
    a: &[Vec<f64>],
    b: &[Vec<f64>],
    clusters: &Clusters,
    resamples: usize,
    level: f64,
    rng_seed: u64,
) -> Result<Bootstrap, StatsError> {
    if a.len() != b.len() {
        return Err(StatsError::Seeds {
            a: a.len(),
            b: b.len(),
        });
    }
    let sets = [clusters];
    let a = ClusterSums::new(a, clusters, 0)?;
    let b = ClusterSums::new(b, clusters, 0)?;
    hierarchical_interval(a.runs(), &sets, resamples, level, rng_seed, |d| {
        Some(b.mean(d) - a.mean(d))
    })
}

/// The cluster bootstrap of the mean of one vector of items: the one-seed case of
/// [`hierarchical_interval`] (and flagged `items_only` as such).
pub fn cluster_bootstrap(
    values: &[f64],
    clusters: &Clusters,
    resamples: usize,
    level: f64,
    rng_seed: u64,
) -> Result<Bootstrap, StatsError> {
    mean_interval(&[values.to_vec()], clusters, resamples, level, rng_seed)
}
