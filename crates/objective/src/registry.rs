//! The objective registry: every linked objective crate submits an [`ObjectiveEntry`] with
//! `inventory`, and the loop and CLI find objectives here by name.

use crate::config::{defaults_table, parse_config};
use crate::error::ObjectiveConfigError;
use crate::objective::{Objective, ObjectivePlugin};

/// One registered objective: its name, a one-line summary, its default config and a factory.
pub struct ObjectiveEntry {
    /// The name used in configs and on the command line (`--objective NAME`).
    pub name: &'static str,
    /// One line for `bapo objectives`.
    pub summary: &'static str,
    /// The default settings, as they would appear in an `[objective]` table.
    pub defaults: fn() -> toml::Table,
    /// Builds the objective from the settings of an `[objective]` table (without `name`).
    pub build: fn(&toml::Table) -> Result<Box<dyn Objective>, ObjectiveConfigError>,
}

impl ObjectiveEntry {
    /// The entry of a plugin type; this is what [`register_objective!`](crate::register_objective)
    /// submits.
    pub const fn of<P: ObjectivePlugin>() -> Self {
        ObjectiveEntry {
            name: P::NAME,
            summary: P::SUMMARY,
            defaults: defaults_table::<P::Config>,
            build: build_plugin::<P>,
        }
    }
}

fn build_plugin<P: ObjectivePlugin>(
    settings: &toml::Table,
) -> Result<Box<dyn Objective>, ObjectiveConfigError> {
    let config: P::Config = parse_config(P::NAME, settings)?;
    Ok(Box::new(P::new(config)))
}

impl std::fmt::Debug for ObjectiveEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectiveEntry")
            .field("name", &self.name)
            .field("summary", &self.summary)
            .finish()
    }
}

inventory::collect!(ObjectiveEntry);

/// Every registered objective, sorted by name.
pub fn entries() -> Vec<&'static ObjectiveEntry> {
    let mut all: Vec<_> = inventory::iter::<ObjectiveEntry>.into_iter().collect();
    all.sort_by_key(|e| e.name);
    all
}

/// The names of every registered objective, sorted.
pub fn names() -> Vec<String> {
    entries().iter().map(|e| e.name.to_string()).collect()
}

/// The entry called `name`; an unknown name is an error listing the known ones.
pub fn find(name: &str) -> Result<&'static ObjectiveEntry, ObjectiveConfigError> {
    let matching: Vec<_> = entries().into_iter().filter(|e| e.name == name).collect();
    match matching.as_slice() {
        [entry] => Ok(entry),
        [] => Err(ObjectiveConfigError::UnknownObjective {
            name: name.to_string(),
            known: names(),
        }),
        more => Err(ObjectiveConfigError::DuplicateObjective {
            objective: name.to_string(),
            count: more.len(),
        }),
    }
}

/// Builds objective `name` from its settings (the `[objective]` table without `name`).
pub fn build(
    name: &str,
    settings: &toml::Table,
) -> Result<Box<dyn Objective>, ObjectiveConfigError> {
    (find(name)?.build)(settings)
}

/// Builds an objective from a whole `[objective]` table: `name` picks the objective, every
/// other key is one of its settings.
pub fn build_from_table(table: &toml::Table) -> Result<Box<dyn Objective>, ObjectiveConfigError> {
    let name = match table.get("name") {
        Some(toml::Value::String(name)) => name.clone(),
        Some(other) => {
            return Err(ObjectiveConfigError::InvalidValue {
                objective: "(unnamed)".to_string(),
                key: "name".to_string(),
                message: format!("{other} (expected a string naming the objective)"),
            });
        }
        None => return Err(ObjectiveConfigError::MissingName { known: names() }),
    };
    let mut settings = table.clone();
    settings.remove("name");
    build(&name, &settings)
}

/// Registers an objective plugin type with the registry: one line in the plugin's crate. It
/// also gives the type its [`ObjectiveName`](crate::ObjectiveName), from `NAME`.
///
/// ```text
/// bapo_objective::register_objective!(MyObjective);
/// ```
#[macro_export]
macro_rules! register_objective {
    ($plugin:ty) => {
        impl $crate::ObjectiveName for $plugin {
            fn name(&self) -> &'static str {
                <$plugin as $crate::ObjectivePlugin>::NAME
            }
        }
        $crate::inventory::submit! { $crate::ObjectiveEntry::of::<$plugin>() }
    };
}
