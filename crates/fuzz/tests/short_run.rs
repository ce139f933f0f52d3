//! A short fuzzing run of every target from a fixed seed (a few thousand executions each):
//! no panic, no allocation past the bound. The full million per target is
//! `cargo xtask fuzz`; this is what makes a planted bug in a parser fail `cargo test`.

use std::time::Duration;

use bapo_fuzz::alloc::CountingAllocator;
use bapo_fuzz::runner::{Settings, fuzz, install_hooks};
use bapo_fuzz::targets::{NAMES, by_name};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn a_short_run_of_every_target_finds_no_fault() {
    install_hooks();
    let settings = Settings {
        executions: 3000,
        time: Duration::from_secs(60),
        seed: 1,
        crash_dir: std::env::temp_dir().join("bapo-fuzz-short-run"),
    };
    let mut faults = Vec::new();
    for target in NAMES {
        let mut harness = by_name(target).unwrap();
        let report = fuzz(harness.as_mut(), &settings);
        assert!(
            report.seeds_refused.is_empty(),
            "{target}: seeds refused: {:?}",
            report.seeds_refused
        );
        assert!(
            report.accepted > 0 && report.refused > 0,
            "{target}: {report:?}"
        );
        for f in report.findings {
            faults.push(format!(
                "{target}: {:?}: {} (input in {})",
                f.kind,
                f.message,
                f.saved.display()
            ));
        }
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}
