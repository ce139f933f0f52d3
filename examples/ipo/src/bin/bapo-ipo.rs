//! `bapo` with IPO: the whole command line, with this crate's objective linked.

use bapo_example_ipo as _;

fn main() -> std::process::ExitCode {
    bapo_cli::main()
}
