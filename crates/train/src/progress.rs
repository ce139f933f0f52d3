//! Progress bars and status lines on stderr. Bars draw only on a terminal (indicatif hides
//! them elsewhere), so logs in CI stay readable; status lines are always printed unless
//! quiet, and warnings even then.

use indicatif::{ProgressBar, ProgressStyle};

/// How a line that is a warning starts: something odd but allowed that the user should see,
/// `--quiet` or not.
pub const WARNING: &str = "warning:";

/// Where progress goes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub quiet: bool,
}

impl Progress {
    /// A status line; a warning (a line starting `warning:`) is printed even when quiet.
    pub fn line(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if !self.quiet || text.starts_with(WARNING) {
            eprintln!("{text}");
        }
    }

    /// A bar of `total` items with a label and a free message (rates).
    pub fn bar(&self, total: u64, label: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar
    }
}
