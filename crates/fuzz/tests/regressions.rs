//! Every input that ever found a fault (`regressions/<target>/<case>/<file>`), run through its
//! target: each must now be refused cleanly or accepted, never panic, and stay within the
//! allocation bound. The seeds of every target must be accepted (a target whose seeds fail
//! fuzzes nothing).

use std::sync::Once;

use bapo_fuzz::alloc::CountingAllocator;
use bapo_fuzz::runner::{Outcome, allocation_bound, execute, install_hooks};
use bapo_fuzz::targets::{NAMES, by_name};
use bapo_fuzz::{Input, regressions_dir};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

static HOOKS: Once = Once::new();

/// The saved inputs of `target`: (case folder name, input).
fn cases(target: &str) -> Vec<(String, Input)> {
    let dir = regressions_dir().join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for case in entries.flatten() {
        for file in std::fs::read_dir(case.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = file.file_name().to_string_lossy().to_string();
            if name != "finding.txt" {
                let bytes = std::fs::read(file.path()).unwrap();
                out.push((
                    case.file_name().to_string_lossy().to_string(),
                    Input::new(&name, bytes),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_saved_input_is_refused_or_accepted_cleanly_and_every_seed_is_accepted() {
    HOOKS.call_once(install_hooks);
    let scratch = std::env::temp_dir().join("bapo-fuzz-regressions");
    let mut failures = Vec::new();
    let mut ran = 0;
    for target in NAMES {
        let mut harness = by_name(target).unwrap();
        for seed in harness.seeds() {
            let (outcome, _) = execute(harness.as_mut(), &seed, &scratch);
            if let Outcome::Refused(m) | Outcome::Panicked(m) = outcome {
                failures.push(format!(
                    "{target}: the seed {} is not accepted: {m}",
                    seed.file
                ));
            }
        }
        for (case, input) in cases(target) {
            ran += 1;
            let (outcome, usage) = execute(harness.as_mut(), &input, &scratch);
            if let Outcome::Panicked(m) = outcome {
                failures.push(format!("{target}/{case}: panicked: {m}"));
            }
            let bound = allocation_bound(harness.input_size(&input));
            if usage.largest > bound {
                failures.push(format!(
                    "{target}/{case}: allocated {} bytes at once, bound {bound}",
                    usage.largest
                ));
            }
        }
    }
    assert!(
        ran >= 8,
        "only {ran} saved inputs found under {}",
        regressions_dir().display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
