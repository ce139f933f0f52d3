//! # bapo-fuzz: every parser of a file a user hands bapo, fed mutated real inputs
//!
//! On the stable toolchain (cargo-fuzz needs nightly): a mutator ([`mutate`]) made for the
//! formats involved, a loop that keeps inputs with new outcomes ([`runner`]), and an allocator
//! that catches a request past what the input can justify before it is made ([`alloc`]).
//!
//! A target ([`Harness`]) writes the mutated file among the other files of a real input (the
//! tiny chat fixture's model, tokenizer, data; a checkpoint and an anchor chunk made from
//! them) and calls the same entry point a run calls. It then uses what was accepted as the
//! next step of a run would (a forward pass, a chat template rendered, an optimizer step):
//! a loader that accepts what its user then panics on is a fault of the loader. Targets:
//! [`targets::all`]. `cargo xtask fuzz` runs them; `regressions/` holds every input that ever
//! found a fault, and a test runs them all.

pub mod alloc;
pub mod gguf_seed;
pub mod mutate;
pub mod runner;
pub mod targets;

use std::path::{Path, PathBuf};

/// One input: the bytes of one file of a target's file set (`file` names it; the target's
/// other files keep their seed contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub file: String,
    pub bytes: Vec<u8>,
}

impl Input {
    pub fn new(file: &str, bytes: Vec<u8>) -> Self {
        Input {
            file: file.to_string(),
            bytes,
        }
    }
}

/// A fuzz target.
pub trait Harness {
    /// Its name (`cargo xtask fuzz --target NAME`).
    fn name(&self) -> &'static str;
    /// Real inputs to start from; each one must be accepted.
    fn seeds(&self) -> Vec<Input>;
    /// Parses `input` as a run would, and uses what was accepted. `Err` is a clean refusal
    /// (its message is what the user would read); a panic is a fault.
    fn run(&mut self, input: &Input) -> Result<(), String>;
    /// Bytes of every file the parser reads for `input` (the bound on allocations is a
    /// multiple of this).
    fn input_size(&self, input: &Input) -> usize;
}

/// A scratch folder of this process, removed when dropped: in `/dev/shm` where there is one
/// (writing files there costs no disk), else in the system's temporary folder.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("bapo-fuzz-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tiny chat fixture every target starts from.
pub fn fixture_dir() -> PathBuf {
    bapo_testkit::workspace_root().join("tests/fixtures/tiny-chat")
}

/// Where inputs that found faults are kept as regression tests.
pub fn regressions_dir() -> PathBuf {
    bapo_testkit::workspace_root().join("crates/fuzz/regressions")
}
