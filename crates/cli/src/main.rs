//! `bapo`: the command line with the four built-in objectives (see the library, `bapo_cli`).

fn main() -> std::process::ExitCode {
    bapo_cli::main()
}
