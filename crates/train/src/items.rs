//! What an evaluation's items are and how each scored — the per-item record that paired
//! intervals need — and the hasher that fingerprints the items' tokens. Below both the
//! evaluation (eval.rs) and the scoring of written answers (answers.rs), which share them.

use std::collections::BTreeMap;

/// Per metric, what its items are: the same at every evaluation of a run.
pub type ItemLabels = BTreeMap<String, MetricLabels>;

/// What one metric's items are, in item order (empty vectors: not known).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricLabels {
    /// The cluster of each item (the entity it is about): items of one cluster are
    /// correlated, and the study resamples clusters, not items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<String>,
    /// The chance level of each item (1 / its number of choices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chance: Vec<f64>,
    /// Whether each item's answer occurs in the trained user's training text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<bool>,
    /// Whether a chooser that only looks at length (the choice of fewest characters) is
    /// right on each item: the score a length bias alone would reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shortest_correct: Vec<bool>,
}

/// Every metric's value on each of its items (a held-out example, a question), in a fixed
/// item order: what a paired interval between two evaluations needs.
pub type ItemScores = BTreeMap<String, Vec<f64>>;

/// Feeds token ids, numbers and texts into a sha256, each with its length first, so that no
/// two different inputs feed the same bytes.
pub(crate) struct TokenHasher(sha2::Sha256);

impl TokenHasher {
    pub(crate) fn new() -> TokenHasher {
        TokenHasher(sha2::Sha256::default())
    }

    pub(crate) fn number(&mut self, n: u64) {
        use sha2::Digest;
        self.0.update(n.to_le_bytes());
    }

    pub(crate) fn ids(&mut self, ids: &[u32]) {
        use sha2::Digest;
        self.number(ids.len() as u64);
        for id in ids {
            self.0.update(id.to_le_bytes());
        }
    }

    pub(crate) fn text(&mut self, text: &str) {
        use sha2::Digest;
        self.number(text.len() as u64);
        self.0.update(text.as_bytes());
    }

    pub(crate) fn finish(self) -> String {
        use sha2::Digest;
        format!("{:x}", self.0.finalize())
    }
}
