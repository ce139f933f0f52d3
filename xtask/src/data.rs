//! `cargo xtask data`: regenerates `data/personalised/preferences.jsonl` and the country
//! knowledge probe `data/personalised/knowledge.jsonl` from the fetched country facts with
//! `bapo-dataset`'s deterministic generators.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use bapo_dataset::{Country, generate, knowledge_probe, to_jsonl};

use crate::fetch::{COUNTRYINFO_DIR, asset_dir, fetch};

/// The committed dataset, relative to the workspace.
pub const OUTPUT: &str = "data/personalised/preferences.jsonl";
/// The committed knowledge probe, relative to the workspace.
pub const PROBE: &str = "data/personalised/knowledge.jsonl";

pub fn data(root: &Path) -> Result<()> {
    fetch(root)?;
    let dir = asset_dir(root).join(COUNTRYINFO_DIR);
    let mut countries = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let text = fs::read_to_string(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        countries.extend(Country::from_countryinfo(&text));
    }
    if countries.is_empty() {
        bail!("no usable country files in {}", dir.display());
    }
    for (file, rows) in [
        (OUTPUT, generate(&countries)),
        (PROBE, knowledge_probe(&countries)),
    ] {
        let out = root.join(file);
        write_atomically(&out, &to_jsonl(&rows))?;
        eprintln!(
            "{}: {} rows from {} countries",
            out.display(),
            rows.len(),
            countries.len()
        );
    }
    Ok(())
}

/// Writes `text` to `path` through a temporary name, so a reader never sees half a file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let partial = path.with_extension("jsonl.partial");
    fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}
