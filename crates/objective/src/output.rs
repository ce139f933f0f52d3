//! What an objective returns: per-example losses and named, detached metrics.

use burn::tensor::Tensor;

/// Named per-example metrics. Values are `[batch]` tensors, detached on insertion, so logging
/// can never keep an autodiff graph alive. The loop averages them over examples (TRL logs the
/// batch mean of each).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    entries: Vec<(String, Tensor<1>)>,
}

impl Metrics {
    /// No metrics.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Records (or replaces) a metric, detached.
    pub fn insert(&mut self, name: impl Into<String>, value: Tensor<1>) {
        let name = name.into();
        let value = value.detach();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name, value)),
        }
    }

    /// A metric by name.
    pub fn get(&self, name: &str) -> Option<&Tensor<1>> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// All metrics in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor<1>)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Metric names in insertion order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// The result of one objective evaluation on a batch.
#[derive(Debug, Clone)]
pub struct ObjectiveOutput {
    /// Per-example losses, `[batch]`. They carry gradient; the loop reduces them (mean, or a
    /// sum divided by the global example count under gradient accumulation).
    pub losses: Tensor<1>,
    /// Detached metrics.
    pub metrics: Metrics,
}

impl ObjectiveOutput {
    /// The batch-mean loss, `[1]`.
    pub fn mean_loss(&self) -> Tensor<1> {
        self.losses.clone().mean()
    }
}
