//! Which runs and which items a number of the report is computed on.
//!
//! Items are split into a development and a confirmation half by their cluster (country): a
//! cluster is in the confirmation half when [`split_hash`] of its UTF-8 name (FNV-1a 64, then
//! MurmurHash3's 64-bit finaliser, so that the top bits depend on every byte: FNV-1a alone
//! leaves names that differ only in their last letters in the same half), read as an
//! unsigned integer, is below `confirmation_share · 2⁶⁴`. The hash is fixed (no seed, no
//! dependence on the data), so the halves were determined before any run. Items without a
//! cluster name are split by the name `#<item index>`. Items whose answer occurs in the
//! trained user's training text (`seen`) are left out of every retention number.

use crate::data::{Labels, RunData, StudyData};
use crate::stats::{ClusterSums, Clusters, StatsError};

/// FNV-1a, 64 bits: offset basis 0xcbf29ce484222325, prime 0x100000001b3.
pub fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// MurmurHash3's `fmix64` applied to FNV-1a 64 of `text`: every output bit depends on every
/// input byte.
pub fn split_hash(text: &str) -> u64 {
    let mut k = fnv1a64(text);
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Whether the cluster named `name` is in the confirmation half.
pub fn in_confirmation(name: &str, share: f64) -> bool {
    let threshold = share * 18_446_744_073_709_551_616.0; // 2^64
    (split_hash(name) as f64) < threshold
}

/// The half of the items a number uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// The verdict's items.
    Confirmation,
    /// Shown beside, as exploration.
    Development,
    /// Every item (the probe check, which describes the model before training).
    All,
}

impl Half {
    pub fn name(self) -> &'static str {
        match self {
            Half::Confirmation => "confirmation",
            Half::Development => "development",
            Half::All => "all",
        }
    }
}

/// How items are chosen: which half, and whether items seen in training are dropped.
#[derive(Debug, Clone, Copy)]
pub struct Selector<'d> {
    pub data: &'d StudyData,
    pub half: Half,
    pub share: f64,
    pub drop_seen: bool,
}

/// The chosen items of one labelling: their indices and clusters.
#[derive(Debug, Clone)]
pub struct Items {
    pub index: Vec<usize>,
    /// Each chosen item's cluster: its index in the data's cluster table, or (unnamed) the
    /// table's length plus the item index.
    pub ids: Vec<usize>,
    pub clusters: Clusters,
}

impl Selector<'_> {
    /// The name item `i` is split by.
    fn cluster_name(&self, labels: &Labels, i: usize) -> String {
        match labels.cluster.get(i) {
            Some(&c) => self.data.clusters[c].clone(),
            None => format!("#{i}"),
        }
    }

    /// Whether item `i` of `labels` is chosen.
    fn keeps(&self, labels: &Labels, i: usize) -> bool {
        if self.drop_seen && labels.seen.get(i).copied().unwrap_or(false) {
            return false;
        }
        let confirmation = || in_confirmation(&self.cluster_name(labels, i), self.share);
        match self.half {
            Half::All => true,
            Half::Confirmation => confirmation(),
            Half::Development => !confirmation(),
        }
    }

    /// The chosen items among `n` items labelled by labelling `labels`; None when none is.
    pub fn items(&self, labels: usize, n: usize) -> Option<Items> {
        let labels = self.data.labels.get(labels)?;
        let index: Vec<usize> = (0..n).filter(|&i| self.keeps(labels, i)).collect();
        let ids: Vec<usize> = index
            .iter()
            .map(|&i| match labels.cluster.get(i) {
                Some(&c) => c,
                None => self.data.clusters.len() + i,
            })
            .collect();
        let clusters = Clusters::new(&ids).ok()?;
        Some(Items {
            index,
            ids,
            clusters,
        })
    }
}

/// One metric of a set of runs (one per seed) on the chosen items, at the steps every run
/// evaluated: `rows[t][s]` is run s's chosen items at `steps[t]`.
#[derive(Debug, Clone)]
pub struct Table {
    pub steps: Vec<usize>,
    pub seeds: Vec<u64>,
    pub rows: Vec<Vec<Vec<f64>>>,
    pub items: Items,
    /// The labelling the items come from (runs compared item by item must share it).
    pub labels: usize,
}

impl Table {
    /// `metric` of `runs` (sorted by seed); None when a run lacks it, the runs label their
    /// items differently, or no item is chosen.
    pub fn of(runs: &[&RunData], metric: &str, select: &Selector) -> Option<Table> {
        let first = runs.first()?.metrics.get(metric)?;
        let labels = first.labels;
        let n = first.values[0].len();
        let metrics: Vec<_> = runs
            .iter()
            .map(|r| r.metrics.get(metric).filter(|m| m.labels == labels))
            .collect::<Option<_>>()?;
        let steps: Vec<usize> = runs[0]
            .steps
            .iter()
            .copied()
            .filter(|s| runs.iter().all(|r| r.steps.contains(s)))
            .collect();
        let items = select.items(labels, n)?;
        // Runs that share no evaluated step have no table (and no step 0 to change from).
        if steps.is_empty() {
            return None;
        }
        let rows = steps
            .iter()
            .map(|step| {
                runs.iter()
                    .zip(&metrics)
                    .map(|(run, m)| {
                        let t = run.steps.iter().position(|s| s == step).unwrap_or(0);
                        items.index.iter().map(|&i| m.values[t][i]).collect()
                    })
                    .collect()
            })
            .collect();
        Some(Table {
            steps,
            seeds: runs.iter().map(|r| r.seed).collect(),
            rows,
            items,
            labels,
        })
    }

    /// Every value passed through `f` (e.g. a margin turned into a tie-half accuracy).
    pub fn map(mut self, f: impl Fn(f64) -> f64) -> Table {
        for v in self.rows.iter_mut().flatten().flatten() {
            *v = f(*v);
        }
        self
    }

    /// Each run's items at step index `t`, less their values at step 0.
    pub fn changes(&self, t: usize) -> Vec<Vec<f64>> {
        self.rows[t]
            .iter()
            .zip(&self.rows[0])
            .map(|(after, before)| after.iter().zip(before).map(|(a, b)| a - b).collect())
            .collect()
    }

    /// The values at every step, as cluster sums of item set `set`.
    pub fn level_sums(&self, set: usize) -> Result<Vec<ClusterSums>, StatsError> {
        self.rows
            .iter()
            .map(|r| ClusterSums::new(r, &self.items.clusters, set))
            .collect()
    }

    /// The changes from step 0 at every step, as cluster sums of item set `set`.
    pub fn change_sums(&self, set: usize) -> Result<Vec<ClusterSums>, StatsError> {
        (0..self.rows.len())
            .map(|t| ClusterSums::new(&self.changes(t), &self.items.clusters, set))
            .collect()
    }

    /// The table restricted to the runs of `seeds` (in that order); None if one is missing.
    pub fn with_seeds(&self, seeds: &[u64]) -> Option<Table> {
        let at: Vec<usize> = seeds
            .iter()
            .map(|s| self.seeds.iter().position(|x| x == s))
            .collect::<Option<_>>()?;
        let rows = self
            .rows
            .iter()
            .map(|r| at.iter().map(|&i| r[i].clone()).collect())
            .collect();
        Some(Table {
            seeds: seeds.to_vec(),
            rows,
            ..self.clone()
        })
    }

    /// The table on the items whose cluster is in `keep` only; None when none is.
    pub fn restrict_to(&self, keep: &std::collections::BTreeSet<usize>) -> Option<Table> {
        let chosen: Vec<usize> = (0..self.items.ids.len())
            .filter(|&k| keep.contains(&self.items.ids[k]))
            .collect();
        let ids: Vec<usize> = chosen.iter().map(|&k| self.items.ids[k]).collect();
        let items = Items {
            index: chosen.iter().map(|&k| self.items.index[k]).collect(),
            clusters: Clusters::new(&ids).ok()?,
            ids,
        };
        let rows = self
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|run| chosen.iter().map(|&k| run[k]).collect())
                    .collect()
            })
            .collect();
        Some(Table {
            rows,
            items,
            ..self.clone()
        })
    }

    /// The steps' index of the last evaluation.
    pub fn last(&self) -> usize {
        self.rows.len() - 1
    }
}

/// The accuracy of a preference pair from its implicit-reward margin: 1 when the margin
/// favours the preferred answer beyond 1e-4 nats, 0.5 for a tie (|m| ≤ 1e-4: e.g. every pair
/// at step 0, where the policy is the reference), 0 otherwise.
pub fn tie_half_accuracy(margin: f64) -> f64 {
    if margin > 1e-4 {
        1.0
    } else if margin.abs() <= 1e-4 {
        0.5
    } else {
        0.0
    }
}

/// The runs of `grid` with `setting` on `user` at learning rate `rate` (any rate: None),
/// sorted by seed.
pub fn runs_of<'d>(
    data: &'d StudyData,
    grid: &str,
    setting: &str,
    user: &str,
    rate: Option<f64>,
) -> Vec<&'d RunData> {
    let mut runs: Vec<&RunData> = data
        .runs
        .iter()
        .filter(|r| r.grid == grid && r.setting == setting && r.user == user)
        .filter(|r| rate.is_none_or(|x| same_rate(x, r.learning_rate)))
        .collect();
    runs.sort_by_key(|r| r.seed);
    runs
}

/// Learning rates equal up to rounding.
pub fn same_rate(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The seeds both tables have, in order.
pub fn common_seeds(a: &Table, b: &Table) -> Vec<u64> {
    a.seeds
        .iter()
        .copied()
        .filter(|s| b.seeds.contains(s))
        .collect()
}
