//! The run directory's contract, in one small Burn-free crate that the training loop (which
//! writes a run), the study and xtask (which read runs) all depend on:
//!
//! - [`files`]: what a run directory holds, by name, and whether a run finished;
//! - [`log`]: the one reader of its JSONL logs (`metrics.jsonl`, `eval.jsonl`,
//!   `eval_items.jsonl`), strict about what it reads, and which line a figure is read from;
//! - [`backend`]: the backend names a config takes and the cargo feature each needs;
//! - [`plot`]: the plots' font lookup and the atomic PNG writer.

pub mod backend;
pub mod files;
pub mod log;
pub mod plot;

pub use backend::Backend;
pub use log::{LogError, Pick, Row, read_rows};
pub use plot::PlotError;
