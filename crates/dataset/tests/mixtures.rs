//! The mixture users `casual-20` … `casual-80`: casual over formal on the stated share of
//! questions (±3 points, in each kind of question and over all rows), on nested sets of
//! questions, with their fact pairs in the style of their capital question; the four style
//! users' rows are unchanged by them.

use std::collections::{BTreeMap, BTreeSet};

use bapo_dataset::answers::is_casual;
use bapo_dataset::{Country, USERS, casual_rate, generate};
use serde_json::Value;

const MIXTURES: [&str; 4] = ["casual-20", "casual-40", "casual-60", "casual-80"];

/// 300 made-up countries, in 6 regions of 5 subregions; every seventh has no population (so it
/// has no population question).
fn countries() -> Vec<Country> {
    (0..300)
        .map(|i| Country {
            name: format!("Country {i:03}"),
            alpha3: format!("C{i:02}"),
            capital: format!("Capital {i:03}"),
            region: format!("Region {}", i % 6),
            subregion: format!("Subregion {}", i % 30),
            population: if i % 7 == 0 {
                0
            } else {
                1_000 * (i as u64 + 1)
            },
            borders: vec![],
        })
        .collect()
}

fn text(row: &Value, key: &str) -> String {
    row[key][0]["content"].as_str().unwrap().to_string()
}

/// (entity, question, kind)
type Key = (String, String, String);

/// Per user, per question: whether the user's chosen answer is casual, and the pair.
fn by_user(rows: &[Value]) -> BTreeMap<String, BTreeMap<Key, (bool, String, String)>> {
    let mut out: BTreeMap<String, BTreeMap<Key, _>> = BTreeMap::new();
    for row in rows {
        let key = (
            row["entity"].as_str().unwrap().to_string(),
            text(row, "prompt"),
            row["kind"].as_str().unwrap().to_string(),
        );
        let (chosen, rejected) = (text(row, "chosen"), text(row, "rejected"));
        let previous = out
            .entry(row["user"].as_str().unwrap().to_string())
            .or_default()
            .insert(key, (is_casual(&chosen), chosen, rejected));
        assert!(previous.is_none(), "one row per user and question: {row}");
    }
    out
}

/// The mixtures' rows on `rows`: each prefers casual on its rate's share (±3 points) of the
/// rows of each kind of question and of all its rows; its style pairs are the `casual` or the
/// `formal` user's pairs; the casual questions of a lower rate are casual at every higher one;
/// a fact pair has the style of the same country's capital question.
fn check_mixtures(rows: &[Value]) -> BTreeMap<String, f64> {
    let users = by_user(rows);
    assert_eq!(
        users.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        USERS.into_iter().collect::<BTreeSet<_>>()
    );
    let mut shares = BTreeMap::new();
    let mut lower: Option<BTreeSet<&Key>> = None;
    for user in MIXTURES {
        let rate = f64::from(casual_rate(user).unwrap());
        let pairs = &users[user];
        assert_eq!(pairs.len(), users["casual"].len(), "{user}");
        let share = |keep: &dyn Fn(&Key) -> bool| {
            let kept: Vec<bool> = pairs
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(_, (casual, ..))| *casual)
                .collect();
            assert!(!kept.is_empty());
            100.0 * kept.iter().filter(|c| **c).count() as f64 / kept.len() as f64
        };
        let all = share(&|_| true);
        shares.insert(user.to_string(), all);
        for (what, s) in [
            ("all rows", all),
            (
                "capital",
                share(&|k| k.1.starts_with("What is the capital")),
            ),
            ("location", share(&|k| k.1.starts_with("Where is"))),
            (
                "population",
                share(&|k| k.1.starts_with("Roughly how many")),
            ),
            ("fact", share(&|k| k.2 == "fact")),
        ] {
            assert!((s - rate).abs() <= 3.0, "{user}: {what}: {s:.1}% casual");
        }
        let casual_keys: BTreeSet<&Key> = pairs
            .iter()
            .filter(|(_, (casual, ..))| *casual)
            .map(|(k, _)| k)
            .collect();
        for (key, (casual, chosen, rejected)) in pairs {
            let like = &users[if *casual { "casual" } else { "formal" }][key];
            assert_eq!((chosen, rejected), (&like.1, &like.2), "{user}: {key:?}");
            if key.2 == "fact" {
                let capital = (key.0.clone(), key.1.clone(), "style".to_string());
                assert_eq!(*casual, pairs[&capital].0, "{user}: {key:?}");
            }
        }
        if let Some(lower) = &lower {
            assert!(
                lower.is_subset(&casual_keys),
                "{user}: the casual questions of the rate below are casual here too"
            );
        }
        lower = Some(casual_keys);
    }
    shares
}

#[test]
fn casual_rates() {
    assert_eq!(casual_rate("casual"), Some(100));
    assert_eq!(casual_rate("formal"), Some(0));
    for (user, rate) in MIXTURES.iter().zip([20, 40, 60, 80]) {
        assert_eq!(casual_rate(user), Some(rate));
        assert!(USERS.contains(user));
    }
    for other in ["concise", "detailed", "casual-50", "casual-x", "expert"] {
        assert_eq!(casual_rate(other), None, "{other}");
    }
}

#[test]
fn mixtures_prefer_casual_at_their_rate_on_nested_questions() {
    let rows = generate(&countries());
    check_mixtures(&rows);
}

#[test]
fn the_committed_mixtures_prefer_casual_at_their_rate() {
    let path = bapo_testkit::workspace_root().join("data/personalised/preferences.jsonl");
    let rows: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let shares = check_mixtures(&rows);
    eprintln!("casual share of all rows: {shares:?}");
}

/// The rows do not depend on the input's order; the mixtures add as many rows as the four
/// style users have; the style users' registers are their own, whatever a question's level.
/// (That the four style users' rows stayed byte-identical when the mixtures came was checked
/// against the previous committed file; `generated.rs` holds the file to the generator.)
#[test]
fn the_mixtures_add_rows_beside_the_style_users() {
    let mut countries = countries();
    let rows = generate(&countries);
    countries.reverse();
    assert_eq!(generate(&countries), rows);
    let style_rows: Vec<&Value> = rows
        .iter()
        .filter(|r| !MIXTURES.contains(&r["user"].as_str().unwrap()))
        .collect();
    assert_eq!(style_rows.len() * 2, rows.len());
    let users = by_user(&rows);
    for (user, casual) in [("casual", true), ("formal", false)] {
        assert!(users[user].values().all(|(c, ..)| *c == casual), "{user}");
    }
    for user in ["concise", "detailed"] {
        assert!(users[user].values().all(|(c, ..)| !*c), "{user}");
    }
}
