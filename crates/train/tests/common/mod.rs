//! The tiny run (configs/tiny.toml) with absolute paths and its own folders per test.

use std::path::{Path, PathBuf};

use bapo_train::RunConfig;

pub fn root() -> PathBuf {
    bapo_testkit::workspace_root()
}

/// A fresh folder for one test.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// configs/tiny.toml with the fixture paths made absolute, anchors and output under `dir`,
/// and `sets` applied after.
pub fn tiny_config(dir: &Path, sets: &[&str]) -> RunConfig {
    let mut all = bapo_testkit::tiny_run_overrides(dir);
    all.extend(sets.iter().map(|s| s.to_string()));
    RunConfig::load(&root().join("configs/tiny.toml"), &all).unwrap()
}
