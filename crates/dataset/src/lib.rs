//! # bapo-dataset: a personalised preference dataset, generated from real facts
//!
//! No real preference *training* set ships on the registries these machines reach, so bapo
//! generates one, deterministically, from the country facts of PyPI's `countryinfo` (MIT):
//! the same factual questions answered in the styles four **users** prefer, in conflicting
//! pairs (the P-Soups dimensions BAPO builds on):
//!
//! | user | prefers | over |
//! |---|---|---|
//! | `concise` | a short answer | a detailed one |
//! | `detailed` | a detailed answer | a short one |
//! | `casual` | a casual answer | a formal one |
//! | `formal` | a formal answer | a casual one |
//!
//! plus, for every user, **factual pairs**: the capital question answered correctly versus with
//! the capital of a neighbouring country of the same subregion, in that user's style. Rows are
//! conversational (TRL format) with `user`, `entity` (the country; train/test splits never share
//! one) and `kind` (`style` or `fact`). `cargo xtask data` fetches `countryinfo` and writes
//! `data/personalised/preferences.jsonl`; the committed file is that output.

use serde_json::{Value, json};

mod probe;

pub use probe::knowledge_probe;

/// The users, in output order.
pub const USERS: [&str; 4] = ["concise", "detailed", "casual", "formal"];

/// The facts of one country that the questions use.
#[derive(Debug, Clone, PartialEq)]
pub struct Country {
    pub name: String,
    pub alpha3: String,
    pub capital: String,
    pub region: String,
    pub subregion: String,
    pub population: u64,
    pub borders: Vec<String>,
}

impl Country {
    /// Reads a `countryinfo` JSON file; `None` if it lacks a capital, region or subregion.
    pub fn from_countryinfo(json: &str) -> Option<Country> {
        let v: Value = serde_json::from_str(json).ok()?;
        let text = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Some(Country {
            name: text("name")?,
            alpha3: v
                .get("ISO")
                .and_then(|i| i.get("alpha3"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            capital: text("capital")?,
            region: text("region")?,
            subregion: text("subregion")?,
            population: v.get("population").and_then(Value::as_u64).unwrap_or(0),
            borders: v
                .get("borders")
                .and_then(Value::as_array)
                .map(|b| {
                    b.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// "66 million", "1.4 billion", "530 thousand", "800".
pub fn round_population(n: u64) -> String {
    match n {
        1_000_000_000.. => format!("{:.1} billion", n as f64 / 1e9),
        1_000_000.. => format!("{} million", (n as f64 / 1e6).round() as u64),
        1_000.. => format!("{} thousand", (n as f64 / 1e3).round() as u64),
        _ => n.to_string(),
    }
}

/// One question about a country and its answer in each style.
struct Question {
    text: String,
    /// concise, detailed, casual, formal
    answers: [String; 4],
}

fn style_index(user: &str) -> usize {
    USERS.iter().position(|u| *u == user).unwrap_or(0)
}

/// The style each user's answers are rejected in: the opposite pole.
fn opposite(user: &str) -> &'static str {
    match user {
        "concise" => "detailed",
        "detailed" => "concise",
        "casual" => "formal",
        _ => "casual",
    }
}

fn capital_answers(c: &Country, capital: &str, border_names: &[String]) -> [String; 4] {
    let population = if c.population > 0 {
        format!(
            ", and about {} people live there",
            round_population(c.population)
        )
    } else {
        String::new()
    };
    let neighbours = match border_names {
        [] => String::new(),
        [one] => format!(" It borders {one}."),
        [a, b, ..] => format!(" Its neighbours include {a} and {b}."),
    };
    [
        format!("{capital}."),
        format!(
            "The capital of {} is {capital}. {} lies in {}{population}.{neighbours}",
            c.name, c.name, c.subregion
        ),
        format!("That'd be {capital}!"),
        format!("The capital of {} is {capital}.", c.name),
    ]
}

fn questions(c: &Country, border_names: &[String]) -> Vec<Question> {
    let mut out = vec![
        Question {
            text: format!("What is the capital of {}?", c.name),
            answers: capital_answers(c, &c.capital, border_names),
        },
        Question {
            text: format!("Where is {} located?", c.name),
            answers: [
                format!("{}.", c.subregion),
                format!(
                    "{} is in {}, part of {}.{}",
                    c.name,
                    c.subregion,
                    c.region,
                    match border_names.len() {
                        0 => " It has no land borders.".to_string(),
                        1 => " It shares a land border with one country.".to_string(),
                        n => format!(" It shares land borders with {n} countries."),
                    }
                ),
                format!("It's over in {}!", c.subregion),
                format!("{} is located in {}.", c.name, c.subregion),
            ],
        },
    ];
    if c.population > 0 {
        let p = round_population(c.population);
        out.push(Question {
            text: format!("Roughly how many people live in {}?", c.name),
            answers: [
                format!("About {p}."),
                format!(
                    "About {p} people live in {}, whose capital is {}.",
                    c.name, c.capital
                ),
                format!("Roughly {p} folks!"),
                format!("The population of {} is approximately {p}.", c.name),
            ],
        });
    }
    out
}

fn row(
    question: &str,
    chosen: &str,
    rejected: &str,
    user: &str,
    entity: &str,
    kind: &str,
) -> Value {
    json!({
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "user": user,
        "entity": entity,
        "kind": kind,
    })
}

/// `countries` sorted by name, each name once: the order every generator works in.
pub(crate) fn by_name(countries: &[Country]) -> Vec<Country> {
    let mut countries = countries.to_vec();
    countries.sort_by(|a, b| a.name.cmp(&b.name));
    countries.dedup_by(|a, b| a.name == b.name);
    countries
}

/// The name of the country whose ISO code is `alpha3`.
pub(crate) fn name_of(countries: &[Country], alpha3: &str) -> Option<String> {
    countries
        .iter()
        .find(|c| c.alpha3 == alpha3)
        .map(|c| c.name.clone())
}

/// The dataset's rows for `countries` (any order: they are sorted by name first).
pub fn generate(countries: &[Country]) -> Vec<Value> {
    let countries = by_name(countries);
    let name_of = |alpha3: &str| name_of(&countries, alpha3);

    let mut rows = Vec::new();
    for (i, c) in countries.iter().enumerate() {
        let border_names: Vec<String> = c.borders.iter().filter_map(|b| name_of(b)).collect();
        let qs = questions(c, &border_names);
        // The plausible wrong capital: the next country (in name order, cyclically) of the same
        // subregion, else of the same region.
        let next_in = |same: &dyn Fn(&Country) -> bool| {
            (1..countries.len())
                .map(|k| &countries[(i + k) % countries.len()])
                .find(|o| same(o) && o.capital != c.capital)
        };
        let wrong =
            next_in(&|o| o.subregion == c.subregion).or_else(|| next_in(&|o| o.region == c.region));
        for user in USERS {
            let (mine, theirs) = (style_index(user), style_index(opposite(user)));
            for q in &qs {
                rows.push(row(
                    &q.text,
                    &q.answers[mine],
                    &q.answers[theirs],
                    user,
                    &c.name,
                    "style",
                ));
            }
            if let Some(wrong) = wrong {
                let right = &qs[0].answers[mine];
                let false_answers = capital_answers(c, &wrong.capital, &border_names);
                rows.push(row(
                    &qs[0].text,
                    right,
                    &false_answers[mine],
                    user,
                    &c.name,
                    "fact",
                ));
            }
        }
    }
    rows
}

/// The JSONL text of the rows (one compact JSON object per line, newline-terminated).
pub fn to_jsonl(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}
