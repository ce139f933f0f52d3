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
//! and four **mixtures** of the last two, `casual-20`, `casual-40`, `casual-60`, `casual-80`:
//! the number is the percent of questions on which the user prefers the casual answer over the
//! formal one (on the rest, formal over casual), so that with `formal` (0) and `casual` (100)
//! six users disagree with a reference model at set rates on one axis, register, between
//! one-sentence answers (not concise against detailed). The casual questions are spread evenly
//! and nested: each question has a level in 0..100 (its rank by a stable hash among the
//! questions of its kind) and is casual for a user whose rate is above its level
//! ([`casual_rate`]), so what is casual at 20% is casual at 40%, 60% and 80%.
//!
//! Every user also has **factual pairs**: the capital question answered correctly versus with
//! the capital of a neighbouring country of the same subregion, in that user's style (for a
//! mixture, the style its capital question was given). Rows are conversational (TRL format)
//! with `user`, `entity` (the country; train/test splits never share one) and `kind` (`style`
//! or `fact`). `cargo xtask data` fetches `countryinfo` and writes
//! `data/personalised/preferences.jsonl`; the committed file is that output.
//!
//! [`answers`] holds the rules, fixed in advance, that score a model's generated answer against
//! a pair: its style (length or register) and its fact.

use serde_json::{Value, json};

pub mod answers;
mod probe;

pub use probe::knowledge_probe;

/// The users, in output order: the four styles, then the mixtures of casual and formal.
pub const USERS: [&str; 8] = [
    "concise",
    "detailed",
    "casual",
    "formal",
    "casual-20",
    "casual-40",
    "casual-60",
    "casual-80",
];

/// The percent of questions on which `user` prefers the casual answer over the formal one:
/// 100 for `casual`, 0 for `formal`, N for `casual-N`; `None` for a user who is not on that
/// axis (`concise`, `detailed`) or not one of [`USERS`].
pub fn casual_rate(user: &str) -> Option<u32> {
    match user {
        "casual" => Some(100),
        "formal" => Some(0),
        _ => user
            .strip_prefix("casual-")
            .filter(|_| USERS.contains(&user))
            .and_then(|n| n.parse().ok()),
    }
}

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

const CONCISE: usize = 0;
const DETAILED: usize = 1;
const CASUAL: usize = 2;
const FORMAL: usize = 3;

/// The styles (indices into [`Question::answers`]) of `user`'s chosen and rejected answers to
/// a question of casual level `level` (0..100): a user on the casual–formal axis prefers the
/// casual answer when its rate is above the level.
fn styles(user: &str, level: u32) -> (usize, usize) {
    match (user, casual_rate(user)) {
        ("concise", _) => (CONCISE, DETAILED),
        ("detailed", _) => (DETAILED, CONCISE),
        (_, Some(rate)) if level < rate => (CASUAL, FORMAL),
        _ => (FORMAL, CASUAL),
    }
}

/// FNV-1a, then SplitMix64's finaliser: a hash that no Rust release or platform changes.
fn stable_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The casual level (0..100) of every question: `questions[i][k]` is the `k`th question of
/// country `i`. The questions of each kind (`k`: capital, location, population) are ranked by
/// a stable hash of (country, question), and the one of rank `j` among `n` gets level ⌊100·j/n⌋, so a
/// rate of N% makes ⌈N·n/100⌉ of each kind casual: an even share whatever the hash, and the
/// questions casual at a lower rate are casual at every higher one.
fn casual_levels(countries: &[Country], questions: &[Vec<Question>]) -> Vec<Vec<u32>> {
    let mut levels: Vec<Vec<u32>> = questions.iter().map(|qs| vec![0; qs.len()]).collect();
    let mut by_kind: Vec<Vec<(u64, usize)>> = Vec::new();
    for (i, qs) in questions.iter().enumerate() {
        for (k, q) in qs.iter().enumerate() {
            if by_kind.len() <= k {
                by_kind.push(Vec::new());
            }
            let key = format!("{}\n{}", countries[i].name, q.text);
            by_kind[k].push((stable_hash(&key), i));
        }
    }
    for (k, mut ranked) in by_kind.into_iter().enumerate() {
        ranked.sort_unstable();
        let n = ranked.len();
        for (j, (_, i)) in ranked.into_iter().enumerate() {
            levels[i][k] = (100 * j / n) as u32;
        }
    }
    levels
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

    let border_names: Vec<Vec<String>> = countries
        .iter()
        .map(|c| c.borders.iter().filter_map(|b| name_of(b)).collect())
        .collect();
    let all_questions: Vec<Vec<Question>> = countries
        .iter()
        .zip(&border_names)
        .map(|(c, borders)| questions(c, borders))
        .collect();
    let levels = casual_levels(&countries, &all_questions);

    let mut rows = Vec::new();
    for (i, c) in countries.iter().enumerate() {
        let (border_names, qs) = (&border_names[i], &all_questions[i]);
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
            for (q, &level) in qs.iter().zip(&levels[i]) {
                let (mine, theirs) = styles(user, level);
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
                // In the style the user's capital question has.
                let (mine, _) = styles(user, levels[i][0]);
                let right = &qs[0].answers[mine];
                let false_answers = capital_answers(c, &wrong.capital, border_names);
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
