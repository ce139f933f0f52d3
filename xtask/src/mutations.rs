//! `cargo xtask mutations [FILTER]`: the planted bugs of `tests/planted-mutations.toml`, each
//! applied on its own to the source, with the test that must catch it. A mutation counts as
//! caught when its test builds, runs and fails; one that does not compile, or whose test
//! passes, is reported as not caught and makes the task fail. Every file is restored
//! afterwards, also when a step fails. Not part of `ci` (each mutation rebuilds a test).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One planted bug.
struct Mutation {
    invariant: String,
    file: PathBuf,
    find: String,
    replace: String,
    test: Vec<String>,
}

/// The outcome of running a mutation's test.
enum Outcome {
    Caught,
    Survived,
    DoesNotBuild,
}

/// Restores a file's original text when dropped.
struct Restore {
    path: PathBuf,
    original: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.original) {
            eprintln!("error: could not restore {}: {e}", self.path.display());
        }
    }
}

pub fn mutations(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let filter = args.first().map(String::as_str).unwrap_or("");
    let list = root.join("tests/planted-mutations.toml");
    let all = load(&list)?;
    let selected: Vec<&Mutation> = all
        .iter()
        .filter(|m| m.invariant.contains(filter))
        .collect();
    if selected.is_empty() {
        bail!("no mutation in {} matches `{filter}`", list.display());
    }
    let mut missed = Vec::new();
    for (i, mutation) in selected.iter().enumerate() {
        eprintln!(
            "[{}/{}] {} ({})",
            i + 1,
            selected.len(),
            mutation.invariant,
            mutation.file.display()
        );
        let outcome = run_one(root, cargo, mutation)?;
        let verdict = match outcome {
            Outcome::Caught => "caught",
            Outcome::Survived => "NOT CAUGHT: the test passed",
            Outcome::DoesNotBuild => "NOT CAUGHT: the mutation does not build",
        };
        println!("{verdict:<40} {}", mutation.invariant);
        if !matches!(outcome, Outcome::Caught) {
            missed.push(mutation.invariant.clone());
        }
    }
    println!(
        "{} of {} planted bugs caught",
        selected.len() - missed.len(),
        selected.len()
    );
    if !missed.is_empty() {
        bail!("not caught: {}", missed.join("; "));
    }
    Ok(())
}

fn run_one(root: &Path, cargo: &str, mutation: &Mutation) -> Result<Outcome> {
    let path = root.join(&mutation.file);
    let original =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let found = original.matches(&mutation.find).count();
    if found != 1 {
        bail!(
            "{}: `{}` occurs {found} times (exactly once expected)",
            mutation.file.display(),
            mutation.find
        );
    }
    let _restore = Restore {
        path: path.clone(),
        original: original.clone(),
    };
    // proptest records the failures it finds next to the tests; those of a planted bug are
    // not regressions of the real code.
    let _regressions = Regressions::snapshot(root)?;
    std::fs::write(
        &path,
        original.replacen(&mutation.find, &mutation.replace, 1),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    let output = Command::new(cargo)
        .arg("test")
        .args(&mutation.test)
        .current_dir(root)
        .output()
        .context("running cargo test")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(if output.status.success() {
        Outcome::Survived
    } else if text.contains("test result: FAILED") {
        Outcome::Caught
    } else {
        Outcome::DoesNotBuild
    })
}

/// The `*.proptest-regressions` files of the workspace, put back as they were when dropped
/// (new ones removed).
struct Regressions {
    root: PathBuf,
    files: Vec<(PathBuf, String)>,
}

impl Regressions {
    fn snapshot(root: &Path) -> Result<Self> {
        let files = regression_files(root)?
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok((path, text))
            })
            .collect::<Result<_>>()?;
        Ok(Regressions {
            root: root.to_path_buf(),
            files,
        })
    }
}

impl Drop for Regressions {
    fn drop(&mut self) {
        for path in regression_files(&self.root).unwrap_or_default() {
            match self.files.iter().find(|(p, _)| *p == path) {
                Some((_, text)) => std::fs::write(&path, text).ok(),
                None => std::fs::remove_file(&path).ok(),
            };
        }
    }
}

/// Every `*.proptest-regressions` file under the workspace's test folders.
fn regression_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && !["target", "runs"].contains(&name) {
                    pending.push(path);
                }
            } else if name.ends_with(".proptest-regressions") {
                found.push(path);
            }
        }
    }
    Ok(found)
}

fn load(path: &Path) -> Result<Vec<Mutation>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    let entries = table
        .get("mutation")
        .and_then(|m| m.as_array())
        .with_context(|| format!("{}: no [[mutation]] entries", path.display()))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let value = serde_json::to_value(entry)?;
            let field = |name: &str| -> Result<String> {
                value[name].as_str().map(str::to_string).with_context(|| {
                    format!("{}: mutation {}: `{name}` missing", path.display(), i + 1)
                })
            };
            let test = match &value["test"] {
                Value::Array(items) => items
                    .iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>(),
                _ => None,
            }
            .with_context(|| {
                format!(
                    "{}: mutation {}: `test` must be a list of strings",
                    path.display(),
                    i + 1
                )
            })?;
            Ok(Mutation {
                invariant: field("invariant")?,
                file: PathBuf::from(field("file")?),
                find: field("find")?,
                replace: field("replace")?,
                test,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// Every planted bug still finds its line once: a refactor that moves or rewrites the
    /// line leaves a planted bug that can no longer be planted, found here rather than on the
    /// next `cargo xtask mutations`.
    #[test]
    fn every_planted_bug_finds_its_line_once() {
        let root = crate::workspace_root();
        let all = super::load(&root.join("tests/planted-mutations.toml")).unwrap();
        assert!(all.len() > 50, "{} planted bugs", all.len());
        let stale: Vec<String> = all
            .iter()
            .filter(|m| {
                let text = std::fs::read_to_string(root.join(&m.file)).unwrap_or_default();
                text.matches(&m.find).count() != 1
            })
            .map(|m| format!("{} ({})", m.invariant, m.file.display()))
            .collect();
        assert!(stale.is_empty(), "stale planted bugs: {stale:#?}");
    }
}
