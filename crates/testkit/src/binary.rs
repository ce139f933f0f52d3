//! Checks of an objective crate's own `bapo` (the whole command line with the objective
//! linked, as examples/ipo's `bapo-ipo` and examples/simpo's `bapo-simpo`): that it lists the
//! objective next to the built-ins, and that it trains it by name on the tiny fixture.
//!
//! ```ignore
//! let bapo = ObjectiveBinary::new(env!("CARGO_BIN_EXE_bapo-ipo"));
//! bapo.assert_lists("ipo");
//! let run = bapo.train_tiny("ipo", &["objective.tau=0.5"]);
//! assert_eq!(run.config()["objective"]["tau"].as_float(), Some(0.5));
//! ```

use std::path::PathBuf;
use std::process::Command;

use crate::{tiny_run_overrides, workspace_root};

/// The objectives every `bapo` lists, whatever else it links.
const BUILT_IN: [&str; 4] = ["dpo", "kl-dpo", "bapo", "mrpo"];

/// Training steps of [`ObjectiveBinary::train_tiny`]: enough for an optimiser step to have
/// used the objective's gradient.
const TINY_STEPS: u64 = 2;

/// A `bapo` binary built with an objective crate linked.
pub struct ObjectiveBinary {
    path: PathBuf,
}

impl ObjectiveBinary {
    /// The binary at `path` (in a test, `env!("CARGO_BIN_EXE_<name>")`).
    pub fn new(path: impl Into<PathBuf>) -> ObjectiveBinary {
        ObjectiveBinary { path: path.into() }
    }

    fn command(&self) -> Command {
        Command::new(&self.path)
    }

    /// `objectives --json` lists `objective` and every built-in objective.
    pub fn assert_lists(&self, objective: &str) {
        let output = self
            .command()
            .args(["objectives", "--json"])
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.path.display()));
        assert!(output.status.success(), "{output:?}");
        let list: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("`objectives --json` printed no JSON list: {e}"));
        let names: Vec<&str> = list.iter().filter_map(|e| e["name"].as_str()).collect();
        for name in std::iter::once(objective).chain(BUILT_IN) {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }

    /// Trains `objective` by name for two steps on configs/tiny.toml with the tiny chat
    /// fixture and the `--set` overrides `sets` (`objective.key=value`), and checks that the
    /// run finished: its resolved config names the objective, and its last logged step is the
    /// last step, with a finite loss. The run directory goes when the result is dropped.
    pub fn train_tiny(&self, objective: &str, sets: &[&str]) -> TinyRun {
        let dir =
            std::env::temp_dir().join(format!("bapo-{objective}-binary-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut command = self.command();
        command
            .arg("train")
            .arg("--config")
            .arg(workspace_root().join("configs/tiny.toml"))
            .args(["--objective", objective, "--quiet"]);
        for set in tiny_run_overrides(&dir) {
            command.args(["--set", &set]);
        }
        command.args(["--set", &format!("training.max_steps={TINY_STEPS}")]);
        for set in sets {
            command.args(["--set", set]);
        }
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.path.display()));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let run = TinyRun { dir };
        let config = run.config();
        assert_eq!(
            config["objective"]["name"].as_str(),
            Some(objective),
            "{config}"
        );
        let last = run.last_metrics();
        assert_eq!(last["step"].as_u64(), Some(TINY_STEPS), "{last}");
        assert!(last["loss"].as_f64().is_some_and(f64::is_finite), "{last}");
        run
    }
}

/// A finished tiny run ([`ObjectiveBinary::train_tiny`]); its folder goes when it is dropped.
pub struct TinyRun {
    dir: PathBuf,
}

impl TinyRun {
    /// The run's resolved config (`config.toml`).
    pub fn config(&self) -> toml::Table {
        let path = self.dir.join("run/config.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.parse()
            .unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()))
    }

    /// The last line of the run's `metrics.jsonl`.
    pub fn last_metrics(&self) -> serde_json::Value {
        let path = self.dir.join("run/metrics.jsonl");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let last = text
            .lines()
            .last()
            .unwrap_or_else(|| panic!("{} is empty", path.display()));
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{}: {e}: {last}", path.display()))
    }
}

impl Drop for TinyRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
