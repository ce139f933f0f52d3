//! The committed personalised dataset is exactly what the generator makes from the fetched
//! country facts, and it has the structure it promises: conflicting users over the same
//! questions, factual pairs, one entity per country.

use std::collections::{BTreeMap, BTreeSet};

use bapo_dataset::{Country, USERS, generate, knowledge_probe, to_jsonl};
use serde_json::Value;

fn committed() -> String {
    let path = bapo_testkit::workspace_root().join("data/personalised/preferences.jsonl");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_committed_file_is_the_generator_output() {
    let Some(dir) = bapo_testkit::asset("countryinfo") else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let countries: Vec<Country> = files
        .iter()
        .filter_map(|f| Country::from_countryinfo(&std::fs::read_to_string(f).unwrap()))
        .collect();
    assert!(countries.len() > 200, "{} countries", countries.len());
    assert!(
        to_jsonl(&generate(&countries)) == committed(),
        "regenerate with `cargo xtask data`"
    );
    let probe = bapo_testkit::workspace_root().join("data/personalised/knowledge.jsonl");
    assert!(
        to_jsonl(&knowledge_probe(&countries)) == std::fs::read_to_string(&probe).unwrap(),
        "{}: regenerate with `cargo xtask data`",
        probe.display()
    );
    // Deterministic whatever the input order.
    let mut reversed = countries.clone();
    reversed.reverse();
    assert_eq!(generate(&reversed), generate(&countries));
    assert_eq!(knowledge_probe(&reversed), knowledge_probe(&countries));
}

/// The probe has at least 300 items (a 3-point change must be resolvable), every item four
/// distinct choices with the right answer among them, and the right answer's place varies.
#[test]
fn the_knowledge_probe_is_large_and_well_formed() {
    let text = std::fs::read_to_string(
        bapo_testkit::workspace_root().join("data/personalised/knowledge.jsonl"),
    )
    .unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 300, "{} items", rows.len());
    let mut places = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for row in &rows {
        let choices: Vec<&str> = row["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let distinct: BTreeSet<&str> = choices.iter().copied().collect();
        assert_eq!(distinct.len(), 4, "{row}");
        let correct = row["correct"].as_u64().unwrap() as usize;
        places.insert(correct);
        kinds.insert(row["kind"].as_str().unwrap().to_string());
        let prompt = row["prompt"].as_str().unwrap();
        assert!(prompt.contains(row["entity"].as_str().unwrap()), "{row}");
    }
    assert_eq!(places.len(), 4, "the right answer is at every place");
    assert_eq!(
        kinds,
        BTreeSet::from(["border".into(), "capital".into(), "subregion".into()])
    );
}

/// (entity, question, kind)
type QuestionKey = (String, String, String);
/// (chosen, rejected)
type Pair = (String, String);

#[test]
fn users_conflict_on_style_and_agree_on_facts() {
    let rows: Vec<Value> = committed()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text = |row: &Value, key: &str| row[key][0]["content"].as_str().unwrap().to_string();
    let mut by_question: BTreeMap<QuestionKey, BTreeMap<String, Pair>> = BTreeMap::new();
    for row in &rows {
        let key = (
            row["entity"].as_str().unwrap().into(),
            text(row, "prompt"),
            row["kind"].as_str().unwrap().into(),
        );
        by_question.entry(key).or_default().insert(
            row["user"].as_str().unwrap().into(),
            (text(row, "chosen"), text(row, "rejected")),
        );
    }
    let mut facts = 0;
    for ((entity, question, kind), users) in &by_question {
        assert_eq!(
            users.keys().map(String::as_str).collect::<Vec<_>>(),
            {
                let mut u = USERS.to_vec();
                u.sort();
                u
            },
            "{entity}: {question}: every user answers"
        );
        if kind == "style" {
            // Conflicting pairs: what one user prefers, the opposite user rejects.
            for (a, b) in [("concise", "detailed"), ("casual", "formal")] {
                assert_eq!(users[a].0, users[b].1, "{entity}: {question}");
                assert_eq!(users[a].1, users[b].0, "{entity}: {question}");
            }
            assert!(users["concise"].0.len() < users["detailed"].0.len());
        } else {
            facts += 1;
            for (chosen, rejected) in users.values() {
                assert_ne!(chosen, rejected, "{entity}: a factual pair differs");
            }
        }
    }
    assert!(facts > 200, "{facts} factual questions");
    let entities: BTreeSet<_> = rows.iter().map(|r| r["entity"].as_str().unwrap()).collect();
    assert!(entities.len() > 200);
}
