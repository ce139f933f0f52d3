//! `bapo` with SimPO: the whole command line, with this crate's objective linked.

use bapo_simpo as _;

fn main() -> std::process::ExitCode {
    bapo_cli::main()
}
