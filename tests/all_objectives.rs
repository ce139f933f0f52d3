//! Invariants every objective must satisfy (spec invariants 7, 16 and 17, and a missing
//! quantity named), checked on each built-in objective in its default configuration and in the
//! variants that change its computation, and on the third-party IPO example — through the
//! testkit's `objective_invariant_tests!`, the same one line an objective crate outside this
//! workspace uses (docs/adding-an-objective.md). The checks and the planted bugs they were
//! proved against: crates/testkit/src/invariants.rs.

use bapo_example_ipo as _;
use bapo_objective_bapo as _;
use bapo_objective_dpo as _;
use bapo_objective_kl_dpo as _;
use bapo_objective_mrpo as _;
use bapo_testkit::invariants::AtTheKink::{self, *};

/// (objective, settings, smoothness at the kink): every objective with its defaults and its
/// computation-changing switches.
const VARIANTS: &[(&str, &str, AtTheKink)] = &[
    ("dpo", "", Smooth),
    ("dpo", "label_smoothing = 0.2", Smooth),
    ("dpo", "reference_free = true\nbeta = 0.5", Smooth),
    ("kl-dpo", "", Smooth),
    (
        "kl-dpo",
        "on = [\"base\"]\ndirection = \"forward\"\nlambda_kl = 2.0",
        Smooth,
    ),
    // Huber: the second derivative jumps by λ/κ (÷ n_b² with "mean", ÷ anchors).
    ("bapo", "", C1(1.0)),
    (
        "bapo",
        "kappa = 0.3\nnum_anchors = 2\nlambda = 2.5",
        C1(2.5 / 0.3),
    ),
    ("bapo", "normalize = \"mean\"", C1(1.0 / 0.025)),
    ("bapo", "form = \"hinge\"", Kinked),
    // Squared hinge: the second derivative jumps by 2λ.
    (
        "bapo",
        "form = \"squared_hinge\"\nnormalize = \"mean\"",
        C1(2.0),
    ),
    ("bapo", "form = \"abs\"\nnormalize = \"mean\"", Kinked),
    ("bapo", "form = \"squared\"\nlambda = 0.3", Smooth),
    ("bapo", "form = \"nll\"\nnum_anchors = 3", Smooth),
    (
        "bapo",
        "form = \"hinge\"\nnum_anchors = 2\nnormalize = \"mean\"",
        Kinked,
    ),
    ("mrpo", "", Smooth),
    ("mrpo", "alpha = 0.3\nepsilon = -0.2", Smooth),
    ("mrpo", "naive = true", Smooth),
    ("mrpo", "naive = true\nalpha = 0.6\nepsilon = 0.4", Smooth),
    (
        "mrpo",
        "references = 3\nweights = [0.5, 0.3, 0.2]\nepsilon = 0.3",
        Smooth,
    ),
    ("mrpo", "references = 1", Smooth),
    ("ipo", "", Smooth),
    ("ipo", "length_normalize = false\ntau = 0.5", Smooth),
];

bapo_testkit::objective_invariant_tests!(VARIANTS);
