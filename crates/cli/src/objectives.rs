//! `bapo objectives`: what the registry holds.

use anyhow::Result;
use bapo_objective::registry;

/// Prints every registered objective: name, summary and defaults as an `[objective]` table.
pub fn list(json: bool) -> Result<()> {
    let entries = registry::entries();
    if json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name,
                    "summary": e.summary,
                    "defaults": (e.defaults)(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{} objectives registered; pick one with `[objective] name = \"…\"`.\n",
        entries.len()
    );
    for entry in entries {
        println!("{:<8} {}", entry.name, entry.summary);
        let mut table = toml::Table::new();
        table.insert("name".into(), toml::Value::String(entry.name.into()));
        table.extend((entry.defaults)());
        let mut wrapper = toml::Table::new();
        wrapper.insert("objective".into(), toml::Value::Table(table));
        for line in toml::to_string(&wrapper)?.lines() {
            println!("    {line}");
        }
        println!();
    }
    Ok(())
}
