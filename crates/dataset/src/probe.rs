//! The country-knowledge probe: multiple-choice completions about the same countries the
//! preference data asks about — capital, subregion and a land neighbour — each with three
//! plausible wrong choices, for measuring what personalisation makes a model forget.
//!
//! Items are plain-text cloze prompts (`"The capital of Chad is"` + `" N'Djamena"`), scored
//! by log-likelihood like the BIG-bench sets. Wrong choices come from the same subregion (a
//! capital), other subregions, or countries of the same region that are not neighbours, and
//! are drawn with a generator seeded by the item's kind and country, so the file is the same
//! on every machine. On SmolLM2-135M-Instruct the reference scores well above chance (25%) on
//! each kind (docs/evaluation.md).

use serde_json::{Value, json};

use crate::{Country, by_name, name_of};

/// The probe's items for `countries` (sorted by name first): JSON objects with `entity`,
/// `kind` (`capital`, `subregion` or `border`), `prompt`, `choices` and `correct`.
pub fn knowledge_probe(countries: &[Country]) -> Vec<Value> {
    let countries = by_name(countries);
    let name_of = |alpha3: &str| name_of(&countries, alpha3);
    let mut items = Vec::new();
    for c in &countries {
        let pool = |same: &dyn Fn(&Country) -> bool| -> Vec<String> {
            let mut capitals: Vec<String> = countries
                .iter()
                .filter(|o| same(o) && o.capital != c.capital)
                .map(|o| o.capital.clone())
                .collect();
            capitals.sort();
            capitals.dedup();
            capitals
        };
        let mut capitals = pool(&|o| o.subregion == c.subregion);
        if capitals.len() < 3 {
            capitals = pool(&|o| o.region == c.region);
        }
        items.extend(item(
            c,
            "capital",
            format!("The capital of {} is", c.name),
            &c.capital,
            &capitals,
        ));

        let mut subregions: Vec<String> = countries
            .iter()
            .map(|o| o.subregion.clone())
            .filter(|s| *s != c.subregion)
            .collect();
        subregions.sort();
        subregions.dedup();
        items.extend(item(
            c,
            "subregion",
            format!("{} is a country in", c.name),
            &c.subregion,
            &subregions,
        ));

        let neighbours: Vec<String> = c.borders.iter().filter_map(|b| name_of(b)).collect();
        if let Some(neighbour) = neighbours.first() {
            let others: Vec<String> = countries
                .iter()
                .filter(|o| o.region == c.region && o.name != c.name)
                .map(|o| o.name.clone())
                .filter(|n| !neighbours.contains(n))
                .collect();
            items.extend(item(
                c,
                "border",
                format!("{} shares a border with", c.name),
                neighbour,
                &others,
            ));
        }
    }
    items
}

/// One item: `answer` and three of `wrong` (an item needs three), the answer at a seeded
/// place among them.
fn item(c: &Country, kind: &str, prompt: String, answer: &str, wrong: &[String]) -> Option<Value> {
    if wrong.len() < 3 {
        return None;
    }
    let mut rng = SplitMix64::new(&format!("{kind}:{}", c.name));
    let mut pool: Vec<&String> = wrong.iter().collect();
    let mut choices: Vec<String> = (0..3)
        .map(|_| pool.swap_remove(rng.below(pool.len())).clone())
        .collect();
    let correct = rng.below(4);
    choices.insert(correct, answer.to_string());
    Some(json!({
        "entity": c.name,
        "kind": kind,
        "prompt": prompt,
        "choices": choices,
        "correct": correct,
    }))
}

/// SplitMix64 seeded by the FNV-1a hash of a key: a small, stable generator (the dataset
/// crate stays free of dependencies beyond serde_json).
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(key: &str) -> Self {
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        SplitMix64(hash)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
