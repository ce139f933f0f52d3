//! The loop: pick a corpus entry, mutate it, run the target, and classify what happened.
//!
//! An execution ends in one of four ways. A clean refusal (`Err` with a message) or an
//! acceptance are fine. A panic, a broken invariant (the target's own checks, reported as a
//! panic too), an allocation past the input's bound or an execution that runs past the time
//! limit is a *finding*: its input is saved under the crash folder, ready to become a
//! regression test (`regressions/<target>/<name>/<file>`).
//!
//! The corpus grows by novelty of outcome: an input whose refusal message (numbers and quoted
//! text left out) or acceptance was not seen before is kept, so later mutations start from
//! inputs that got further into the parser.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::alloc;
use crate::mutate::mutate;
use crate::{Harness, Input};

/// How long one execution may take before it counts as a hang. The slowest target takes
/// milliseconds; a parser looping on a count from a header takes forever.
pub const EXECUTION_TIME_LIMIT: Duration = Duration::from_secs(20);

/// What may be allocated for an input of `bytes` bytes (all the files the target reads),
/// in one request. A model loader turns every stored weight into f32: a quantised GGUF block
/// (Q4_0: 18 bytes for 32 weights) grows 7.1 times, so 8 times the input is the bound; the
/// constant covers the fixed tables of the tokenizer and regex libraries.
pub fn allocation_bound(bytes: usize) -> usize {
    bytes.saturating_mul(8).saturating_add(8 << 20)
}

/// How long and how hard to fuzz.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Stop after this many executions...
    pub executions: u64,
    /// ...or after this long, whichever comes first.
    pub time: Duration,
    pub seed: u64,
    /// Where findings are saved (`<dir>/<target>/<name>/`).
    pub crash_dir: PathBuf,
}

/// What kind of fault an input found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Panic,
    Allocation,
    Timeout,
}

/// One input that found a fault.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FaultKind,
    pub message: String,
    /// The folder its input was saved to.
    pub saved: PathBuf,
}

/// The result of fuzzing one target.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub executions: u64,
    pub seconds: f64,
    /// Inputs refused with an error message, and inputs accepted.
    pub refused: u64,
    pub accepted: u64,
    /// Files whose seed was refused: a broken target (its mutations start from nothing).
    pub seeds_refused: Vec<String>,
    /// Distinct outcomes seen (refusal messages without their numbers, and acceptance).
    pub distinct_outcomes: usize,
    pub corpus: usize,
    /// The largest single allocation over all executions, as a fraction of its bound.
    pub largest_allocation_of_bound: f64,
    /// The largest single allocation over all executions, in bytes, and its input's size.
    pub largest_allocation: usize,
    pub largest_allocation_input: usize,
    pub findings: Vec<Finding>,
}

/// The input being run, for the allocation and time-limit hooks (which end the process).
struct Current {
    target: String,
    input: Input,
    /// Bytes of every file the target reads for `input` (what the bound is computed from).
    size: usize,
    crash_dir: PathBuf,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
/// Milliseconds since `EPOCH` when the running execution started; 0 between executions.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
/// The message of the last panic, taken by the runner.
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Saves `input` of `target` as a finding; returns the folder.
pub fn save_finding(
    crash_dir: &Path,
    target: &str,
    input: &Input,
    kind: FaultKind,
    message: &str,
) -> PathBuf {
    let hash = Sha256::digest(&input.bytes);
    let name = format!("{}-{:x}", input.file, hash)
        .chars()
        .take(input.file.len() + 13)
        .collect::<String>()
        .replace(['/', '\\'], "_");
    let dir = crash_dir.join(target).join(name);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(&input.file), &input.bytes);
    let _ = std::fs::write(dir.join("finding.txt"), format!("{kind:?}: {message}\n"));
    dir
}

/// Called by the allocator for a request past the bound: saves the input and ends the
/// process (the request itself may be too large to survive).
fn oversize(size: usize) {
    let current = CURRENT.lock().map(|mut c| c.take()).ok().flatten();
    if let Some(c) = current {
        let message = format!(
            "a single allocation of {size} bytes for inputs of {} bytes (bound {})",
            c.size,
            allocation_bound(c.size)
        );
        let dir = save_finding(
            &c.crash_dir,
            &c.target,
            &c.input,
            FaultKind::Allocation,
            &message,
        );
        eprintln!(
            "FINDING {} allocation: {message}; input saved in {}",
            c.target,
            dir.display()
        );
    }
    std::process::exit(3);
}

/// Installs the panic hook (quiet, message kept), the allocation hook and the time-limit
/// watchdog. Call once per process.
pub fn install_hooks() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(a panic without a message)".into());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if STARTED_MS.load(Ordering::SeqCst) == 0 {
            // Not inside an execution: a panic of the caller (a failed test), shown as usual.
            eprintln!("panicked: {message}{location}");
        } else if let Ok(mut slot) = PANIC_MESSAGE.lock() {
            *slot = Some(format!("{message}{location}"));
        }
    }));
    alloc::set_oversize_hook(oversize);
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let started = STARTED_MS.load(Ordering::SeqCst);
            if started != 0
                && now_ms().saturating_sub(started) > EXECUTION_TIME_LIMIT.as_millis() as u64
            {
                if let Some(c) = CURRENT.lock().ok().and_then(|mut c| c.take()) {
                    let message = format!("still running after {EXECUTION_TIME_LIMIT:?}");
                    let dir = save_finding(
                        &c.crash_dir,
                        &c.target,
                        &c.input,
                        FaultKind::Timeout,
                        &message,
                    );
                    eprintln!(
                        "FINDING {} timeout: {message}; input saved in {}",
                        c.target,
                        dir.display()
                    );
                }
                std::process::exit(4);
            }
        }
    });
}

/// The outcome of one execution.
pub enum Outcome {
    Accepted,
    Refused(String),
    Panicked(String),
}

/// Runs `input` once with the allocation bound and time limit armed.
pub fn execute(
    harness: &mut dyn Harness,
    input: &Input,
    crash_dir: &Path,
) -> (Outcome, alloc::Usage) {
    let size = harness.input_size(input);
    if let Ok(mut current) = CURRENT.lock() {
        *current = Some(Current {
            target: harness.name().to_string(),
            input: input.clone(),
            size,
            crash_dir: crash_dir.to_path_buf(),
        });
    }
    let live = alloc::live();
    alloc::reset();
    alloc::set_limit(allocation_bound(size));
    STARTED_MS.store(now_ms(), Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(|| harness.run(input)));
    STARTED_MS.store(0, Ordering::SeqCst);
    alloc::set_limit(usize::MAX);
    let usage = alloc::usage(live);
    if let Ok(mut current) = CURRENT.lock() {
        *current = None;
    }
    let outcome = match result {
        Ok(Ok(())) => Outcome::Accepted,
        Ok(Err(message)) => Outcome::Refused(message),
        Err(_) => Outcome::Panicked(
            PANIC_MESSAGE
                .lock()
                .ok()
                .and_then(|mut m| m.take())
                .unwrap_or_else(|| "(panic)".into()),
        ),
    };
    (outcome, usage)
}

/// A refusal message with its numbers, paths and quoted parts left out: inputs that differ
/// only in a value give the same signature.
fn signature(outcome: &Outcome) -> u64 {
    let mut hasher = DefaultHasher::new();
    match outcome {
        Outcome::Accepted => "accepted".hash(&mut hasher),
        Outcome::Panicked(m) => m.hash(&mut hasher),
        Outcome::Refused(m) => {
            let mut quoted = false;
            let first_line = m.lines().next().unwrap_or_default();
            let unquoted: String = first_line
                .chars()
                .filter(|c| {
                    if matches!(c, '`' | '"') {
                        quoted = !quoted;
                    }
                    !quoted
                })
                .collect();
            let shape: Vec<&str> = unquoted
                .split_whitespace()
                .filter(|w| !w.contains(|c: char| c.is_ascii_digit() || c == '/'))
                .take(16)
                .collect();
            shape.hash(&mut hasher)
        }
    }
    hasher.finish()
}

/// The most inputs kept in each pool: enough variety, and picking from it stays cheap.
const POOL_LIMIT: usize = 1024;

/// The inputs mutations start from: those that were accepted (most mutations of an accepted
/// input test one more thing past the syntax) and those refused with a message not seen
/// before (they reach the other refusals).
#[derive(Default)]
struct Corpus {
    accepted: Vec<Input>,
    refused: Vec<Input>,
}

impl Corpus {
    fn add(pool: &mut Vec<Input>, input: Input, rng: &mut StdRng) {
        if pool.len() < POOL_LIMIT {
            pool.push(input);
        } else {
            let at = rng.random_range(0..pool.len());
            pool[at] = input;
        }
    }

    /// A new input: a mutation of an accepted input two times in three.
    fn next(&self, rng: &mut StdRng) -> Input {
        let pool =
            if !self.accepted.is_empty() && (self.refused.is_empty() || rng.random_bool(0.67)) {
                &self.accepted
            } else {
                &self.refused
            };
        let base = &pool[rng.random_range(0..pool.len())];
        let all = self.accepted.iter().chain(&self.refused);
        let same_file: Vec<&Input> = all.filter(|c| c.file == base.file).collect();
        let other = same_file[rng.random_range(0..same_file.len())];
        Input {
            file: base.file.clone(),
            bytes: mutate(rng, &base.bytes, &other.bytes),
        }
    }

    fn len(&self) -> usize {
        self.accepted.len() + self.refused.len()
    }
}

/// Fuzzes `harness` from its seeds (each run once unchanged first).
pub fn fuzz(harness: &mut dyn Harness, settings: &Settings) -> Report {
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let mut corpus = Corpus::default();
    let mut seen = HashSet::new();
    let mut report = Report {
        target: harness.name().to_string(),
        executions: 0,
        seconds: 0.0,
        refused: 0,
        accepted: 0,
        seeds_refused: Vec::new(),
        distinct_outcomes: 0,
        corpus: 0,
        largest_allocation_of_bound: 0.0,
        largest_allocation: 0,
        largest_allocation_input: 0,
        findings: Vec::new(),
    };
    let start = Instant::now();
    for seed in harness.seeds() {
        match run_one(harness, seed.clone(), settings, &mut seen, &mut report) {
            Kept::Accepted(input) => corpus.accepted.push(input),
            Kept::Refused(input) | Kept::Not(input) => {
                report.seeds_refused.push(seed.file.clone());
                corpus.refused.push(input);
            }
        }
    }
    while report.executions < settings.executions && start.elapsed() < settings.time {
        let input = corpus.next(&mut rng);
        match run_one(harness, input, settings, &mut seen, &mut report) {
            Kept::Accepted(input) if report.accepted.is_multiple_of(4) => {
                Corpus::add(&mut corpus.accepted, input, &mut rng)
            }
            Kept::Refused(input) => Corpus::add(&mut corpus.refused, input, &mut rng),
            _ => {}
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.distinct_outcomes = seen.len();
    report.corpus = corpus.len();
    report
}

/// What became of an input.
enum Kept {
    Accepted(Input),
    /// Refused with a message not seen before.
    Refused(Input),
    /// Refused as before, or a fault (saved already).
    Not(Input),
}

/// Runs `input` and records its outcome in `report`.
fn run_one(
    harness: &mut dyn Harness,
    input: Input,
    settings: &Settings,
    seen: &mut HashSet<u64>,
    report: &mut Report,
) -> Kept {
    let (outcome, usage) = execute(harness, &input, &settings.crash_dir);
    report.executions += 1;
    let size = harness.input_size(&input);
    let fraction = usage.largest as f64 / allocation_bound(size) as f64;
    if fraction > report.largest_allocation_of_bound {
        report.largest_allocation_of_bound = fraction;
        report.largest_allocation = usage.largest;
        report.largest_allocation_input = size;
    }
    let novel = seen.insert(signature(&outcome));
    match outcome {
        Outcome::Accepted => {
            report.accepted += 1;
            Kept::Accepted(input)
        }
        Outcome::Refused(message) => {
            report.refused += 1;
            if !novel {
                return Kept::Not(input);
            }
            if std::env::var_os("BAPO_FUZZ_SHOW").is_some() {
                eprintln!("refused: {message}");
            }
            Kept::Refused(input)
        }
        Outcome::Panicked(message) => {
            if novel {
                let saved = save_finding(
                    &settings.crash_dir,
                    harness.name(),
                    &input,
                    FaultKind::Panic,
                    &message,
                );
                report.findings.push(Finding {
                    kind: FaultKind::Panic,
                    message,
                    saved,
                });
            }
            Kept::Not(input)
        }
    }
}
