//! The named quantities an objective can ask the training loop for.
//!
//! Every quantity is a per-sequence value laid out as a `[batch, n]` tensor: `n = 1` for the
//! chosen and rejected responses, `n = num_anchors` for base responses (several anchors per
//! prompt are allowed). The loop computes exactly the quantities an objective's [`Needs`] lists
//! and hands them over in a [`Quantities`] map; the objective never sees the model.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which response of a preference example a quantity is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// The preferred response `y_w`.
    Chosen,
    /// The dispreferred response `y_l`.
    Rejected,
    /// A base response `y_b`: the reference model's own answer to the prompt.
    Base,
}

impl Response {
    /// The lower-case name used in configs and metric names.
    pub fn as_str(self) -> &'static str {
        match self {
            Response::Chosen => "chosen",
            Response::Rejected => "rejected",
            Response::Base => "base",
        }
    }

    /// Parses a config value (`"chosen"`, `"rejected"`, `"base"`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "chosen" => Some(Response::Chosen),
            "rejected" => Some(Response::Rejected),
            "base" => Some(Response::Base),
            _ => None,
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Direction of the token-level KL divergence between policy and reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlDirection {
    /// `KL(π_θ ‖ π_ref) = Σ_v π_θ (log π_θ − log π_ref)`: the usual RLHF penalty.
    Reverse,
    /// `KL(π_ref ‖ π_θ) = Σ_v π_ref (log π_ref − log π_θ)`.
    Forward,
}

impl KlDirection {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            KlDirection::Reverse => "reverse",
            KlDirection::Forward => "forward",
        }
    }
}

/// One named quantity. `Ord` so that [`Needs`] prints in a stable order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quantity {
    /// Policy log-probability of a response given the prompt, summed over response tokens
    /// (prompt and padding masked). Carries gradient.
    PolicyLogp(Response),
    /// The same under frozen reference `reference` (`0` is the primary reference, the initial
    /// policy). A constant: [`Quantities::get`] detaches it.
    ReferenceLogp {
        reference: usize,
        response: Response,
    },
    /// Number of response tokens (as a float), for length-normalised variants.
    TokenCount(Response),
    /// Token-level KL between policy and primary reference, averaged over the response tokens of
    /// the sequence: `(1/n) Σ_t Σ_v …`. Needs full reference distributions, so the loop must run
    /// the reference model live (a sequence-level cache is not enough).
    TokenKl {
        response: Response,
        direction: KlDirection,
    },
}

impl Quantity {
    /// Whether this quantity is a constant of the data: a frozen reference's log-prob or a
    /// token count. Constants never carry gradient.
    pub fn is_constant(&self) -> bool {
        matches!(
            self,
            Quantity::ReferenceLogp { .. } | Quantity::TokenCount(_)
        )
    }

    /// The response this quantity is about.
    pub fn response(&self) -> Response {
        match *self {
            Quantity::PolicyLogp(r) | Quantity::TokenCount(r) => r,
            Quantity::ReferenceLogp { response, .. } | Quantity::TokenKl { response, .. } => {
                response
            }
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::PolicyLogp(r) => write!(f, "policy log-prob of {r}"),
            Quantity::ReferenceLogp {
                reference,
                response,
            } => {
                write!(f, "reference {reference} log-prob of {response}")
            }
            Quantity::TokenCount(r) => write!(f, "token count of {r}"),
            Quantity::TokenKl {
                response,
                direction,
            } => {
                write!(f, "{} token-level KL on {response}", direction.as_str())
            }
        }
    }
}

/// What an objective asks the loop to compute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// The quantities, each computed once per batch.
    pub quantities: BTreeSet<Quantity>,
    /// Base responses per prompt the objective expects (the `n` of `[batch, n]` for
    /// [`Response::Base`] quantities). Irrelevant when no base quantity is listed.
    pub anchors_per_prompt: usize,
}

/// Needs of exactly these quantities: `PreferencePair::quantities(0).into_iter().collect()`.
impl FromIterator<Quantity> for Needs {
    fn from_iter<I: IntoIterator<Item = Quantity>>(quantities: I) -> Self {
        let mut needs = Needs::new();
        needs.extend(quantities);
        needs
    }
}

impl Extend<Quantity> for Needs {
    fn extend<I: IntoIterator<Item = Quantity>>(&mut self, quantities: I) {
        self.quantities.extend(quantities);
    }
}

impl Needs {
    /// Needs with no quantities yet.
    pub fn new() -> Self {
        Needs {
            quantities: BTreeSet::new(),
            anchors_per_prompt: 1,
        }
    }

    /// Adds a quantity (builder style).
    pub fn with(mut self, q: Quantity) -> Self {
        self.quantities.insert(q);
        self
    }

    /// Whether the quantity is listed.
    pub fn contains(&self, q: &Quantity) -> bool {
        self.quantities.contains(q)
    }

    /// How many reference models the loop must provide log-probs for.
    pub fn num_references(&self) -> usize {
        self.quantities
            .iter()
            .filter_map(|q| match q {
                Quantity::ReferenceLogp { reference, .. } => Some(reference + 1),
                Quantity::TokenKl { .. } => Some(1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether base responses (anchors) must exist for every training prompt.
    pub fn needs_base_responses(&self) -> bool {
        self.quantities
            .iter()
            .any(|q| q.response() == Response::Base)
    }

    /// Whether the reference model must run live during training (token-level distributions
    /// cannot come from the sequence-level log-prob cache).
    pub fn needs_live_reference(&self) -> bool {
        self.quantities
            .iter()
            .any(|q| matches!(q, Quantity::TokenKl { .. }))
    }
}

impl Default for Needs {
    fn default() -> Self {
        Needs::new()
    }
}

/// The quantities of one batch, by name. Each value is a `[batch, n]` float tensor.
#[derive(Debug, Clone, Default)]
pub struct Quantities {
    values: BTreeMap<Quantity, Tensor<2>>,
}

impl Quantities {
    /// An empty set.
    pub fn new() -> Self {
        Quantities::default()
    }

    /// Stores a `[batch, n]` value as given; constant quantities are detached when read
    /// ([`Quantities::get`]).
    pub fn insert(&mut self, q: Quantity, value: Tensor<2>) {
        self.values.insert(q, value);
    }

    /// Stores a per-example `[batch]` value as `[batch, 1]`.
    pub fn insert_per_example(&mut self, q: Quantity, value: Tensor<1>) {
        self.insert(q, value.unsqueeze_dim(1));
    }

    /// Builder-style [`Quantities::insert_per_example`].
    pub fn with(mut self, q: Quantity, value: Tensor<1>) -> Self {
        self.insert_per_example(q, value);
        self
    }

    /// Builder-style [`Quantities::insert`].
    pub fn with_2d(mut self, q: Quantity, value: Tensor<2>) -> Self {
        self.insert(q, value);
        self
    }

    /// The `[batch, n]` value of a quantity. Constant quantities (reference log-probs,
    /// counts) come out detached, so no gradient can reach them whatever the caller stored:
    /// every objective reads through here, which is what makes spec invariant 7 hold for any
    /// objective (tested with tracked reference leaves in `tests/all_objectives.rs`).
    pub fn get(&self, q: Quantity) -> Result<Tensor<2>, ObjectiveError> {
        let value = self
            .values
            .get(&q)
            .cloned()
            .ok_or(ObjectiveError::MissingQuantity(q))?;
        Ok(if q.is_constant() {
            value.detach()
        } else {
            value
        })
    }

    /// The `[batch]` value of a one-per-example quantity (chosen, rejected, or a single anchor).
    pub fn per_example(&self, q: Quantity) -> Result<Tensor<1>, ObjectiveError> {
        let value = self.get(q)?;
        let [batch, n] = value.dims();
        if n != 1 {
            return Err(ObjectiveError::Shape {
                quantity: q,
                expected: format!("[{batch}, 1]"),
                found: format!("[{batch}, {n}]"),
            });
        }
        Ok(value.reshape([batch]))
    }

    /// Checks that every value has the same batch size and returns it.
    pub fn batch_size(&self) -> Result<usize, ObjectiveError> {
        let mut batch = None;
        for (q, v) in &self.values {
            let [b, _] = v.dims();
            match batch {
                None => batch = Some(b),
                Some(first) if first != b => {
                    return Err(ObjectiveError::Shape {
                        quantity: *q,
                        expected: format!("batch size {first}"),
                        found: format!("batch size {b}"),
                    });
                }
                Some(_) => {}
            }
        }
        batch.ok_or(ObjectiveError::Empty)
    }

    /// The quantities present.
    pub fn names(&self) -> impl Iterator<Item = &Quantity> {
        self.values.keys()
    }
}

/// A problem with the quantities handed to an objective. These are bugs in the caller (the
/// loop did not provide what `needs()` asked for), reported instead of panicking.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectiveError {
    #[error("missing quantity: {0}")]
    MissingQuantity(Quantity),

    #[error("{quantity}: expected shape {expected}, found {found}")]
    Shape {
        quantity: Quantity,
        expected: String,
        found: String,
    },

    #[error("no quantities were given")]
    Empty,
}
