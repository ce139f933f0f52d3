//! Every cross-objective invariant of bapo (no gradient into a reference, finite differences,
//! finite and per-example losses, a missing quantity named), in one line.

use bapo_simpo as _;
use bapo_testkit::invariants::AtTheKink::Smooth;

bapo_testkit::objective_invariant_tests!(&[
    ("simpo", "", Smooth),
    ("simpo", "beta = 2.5\ngamma = 0.0", Smooth),
]);
