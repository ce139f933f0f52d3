//! `cargo xtask data`: regenerates `data/personalised/preferences.jsonl` from the fetched
//! country facts with `bapo-dataset`'s deterministic generator.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use bapo_dataset::{Country, generate, to_jsonl};

use crate::fetch::{COUNTRYINFO_DIR, asset_dir, fetch};

/// The committed dataset, relative to the workspace.
pub const OUTPUT: &str = "data/personalised/preferences.jsonl";

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
    let rows = generate(&countries);
    let out = root.join(OUTPUT);
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    let partial = out.with_extension("jsonl.partial");
    fs::write(&partial, to_jsonl(&rows))
        .with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, &out).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "{}: {} rows from {} countries",
        out.display(),
        rows.len(),
        countries.len()
    );
    Ok(())
}
