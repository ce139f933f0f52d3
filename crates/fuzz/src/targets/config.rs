//! `config`: a run config (`--config`) and its `--set key=value` overrides, read and checked
//! as `bapo train` does. A config that is accepted must also survive the trip a run makes
//! with it: written out resolved (`config.toml` in the run directory) and read back equal.
//!
//! An input is the TOML text, then optionally a line holding a single NUL character and the
//! overrides, one per line.

use bapo_train::RunConfig;

use crate::{Harness, Input};

const FILE: &str = "run.toml";

pub struct ConfigTarget {
    seeds: Vec<Input>,
}

/// Splits an input into the TOML text and its overrides.
fn split(bytes: &[u8]) -> (String, Vec<String>) {
    let text = String::from_utf8_lossy(bytes);
    match text.split_once("\n\u{0}\n") {
        Some((toml, overrides)) => (
            toml.to_string(),
            overrides.lines().map(str::to_string).collect(),
        ),
        None => (text.to_string(), Vec::new()),
    }
}

impl ConfigTarget {
    pub fn new() -> Result<Self, String> {
        let dir = bapo_testkit::workspace_root().join("configs");
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            // Run configs only (the study and bench configs have their own readers).
            .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("[objective]")))
            .collect();
        paths.sort();
        let overrides = [
            "",
            "\n\u{0}\ntraining.max_steps=3\nobjective.name=dpo",
            "\n\u{0}\nlora.enabled=true\nlora.target=\"q_proj|v_proj\"\ndata.max_length=512",
        ];
        let mut seeds = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut bytes = text;
            bytes.extend(overrides[i % overrides.len()].as_bytes());
            seeds.push(Input::new(FILE, bytes));
        }
        Ok(ConfigTarget { seeds })
    }
}

impl Harness for ConfigTarget {
    fn name(&self) -> &'static str {
        "config"
    }

    fn seeds(&self) -> Vec<Input> {
        self.seeds.clone()
    }

    fn run(&mut self, input: &Input) -> Result<(), String> {
        let (text, overrides) = split(&input.bytes);
        let config = RunConfig::from_toml(&text, FILE, &overrides).map_err(|e| e.to_string())?;
        let resolved = config.to_toml();
        // Compared as text: a NaN the objective's own check refuses later is not equal to
        // itself.
        match RunConfig::from_toml(&resolved, "config.toml", &[]) {
            Ok(again) => assert!(
                again.to_toml() == resolved,
                "the resolved config reads back different:\n{resolved}"
            ),
            Err(e) => panic!("the resolved config does not read back: {e}\n{resolved}"),
        }
        Ok(())
    }

    fn input_size(&self, input: &Input) -> usize {
        input.bytes.len()
    }
}
