//! `bapo-fuzz`: fuzzes targets one after another in this process and prints one JSON report
//! per target. `cargo xtask fuzz` runs one process per target, two at a time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bapo_fuzz::alloc::CountingAllocator;
use bapo_fuzz::runner::{Settings, fuzz, install_hooks};
use bapo_fuzz::targets::{NAMES, by_name};
use clap::Parser;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[derive(Parser)]
#[command(about = "Fuzz bapo's parsers of user files with mutated real inputs")]
struct Args {
    /// Targets to fuzz (default: all).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Executions per target.
    #[arg(long, default_value_t = 1_000_000)]
    executions: u64,
    /// Seconds per target at most.
    #[arg(long, default_value_t = 3600.0)]
    seconds: f64,
    /// Seed of the mutator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the targets' names, one per line, and stop.
    #[arg(long)]
    list: bool,
    /// Where inputs that find faults are saved.
    #[arg(long, default_value = "target/fuzz/findings")]
    findings: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        println!("{}", NAMES.join("\n"));
        return ExitCode::SUCCESS;
    }
    install_hooks();
    let targets = if args.targets.is_empty() {
        NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        args.targets
    };
    let settings = Settings {
        executions: args.executions,
        time: Duration::from_secs_f64(args.seconds.max(0.0)),
        seed: args.seed,
        crash_dir: args.findings,
    };
    let mut faults = 0;
    for name in targets {
        let mut harness = match by_name(&name) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let report = fuzz(harness.as_mut(), &settings);
        for f in &report.findings {
            eprintln!(
                "FINDING {name} {:?}: {}; input saved in {}",
                f.kind,
                f.message,
                f.saved.display()
            );
        }
        faults += report.findings.len();
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    }
    if faults > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
