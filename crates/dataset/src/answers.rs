//! Rules, fixed in advance, that score a **generated** answer against one preference pair
//! (prompt, chosen, rejected): does it take the chosen answer's style, and does it state the
//! chosen answer's fact?
//!
//! They read only the texts (and token counts the caller takes from its tokenizer), never a
//! user's name, so they score every user alike, the mixtures included:
//!
//! - [`axis`]: what a pair's two answers differ in. [`Axis::None`] for a fact pair
//!   ([`is_fact_pair`]: "Kabul." / "Guatemala City." differ in fact, whatever their lengths);
//!   else [`Axis::Register`] when exactly one of them is casual ([`is_casual`]); else
//!   [`Axis::Length`] when the longer has at least [`LENGTH_RATIO`] times the tokens of the
//!   shorter (concise against detailed); else [`Axis::None`]. Register is asked before length
//!   because register pairs are not matched in length: the casual "Roughly 69 million folks!"
//!   against the formal "The population of Democratic Republic of the Congo is approximately
//!   69 million." differ more than 2× in tokens, while no length pair of the generated dataset
//!   differs in register.
//! - [`style_score`]: 1 when the generated answer is on the chosen side of the axis, 0 on the
//!   rejected side, 0.5 on an exact length tie; `None` for [`Axis::None`].
//! - [`fact_right`]: the generated answer names every word the pair's fact needs and none that
//!   the wrong answer of a fact pair gives; `None` when the pair names no fact.
//!
//! They match words, not meaning, and say so: "twenty-six million" does not state "26", "Sao
//! Tome" is not "São Tomé", and where a capital is named like its country ("Djibouti") an
//! answer that names the country counts as naming the capital. On every pair of the committed
//! `data/personalised/preferences.jsonl` they read the pair's own answers the right way round
//! (`tests/answers.rs`, word counts standing in for tokens; SmolLM2's own token counts give
//! the same axes).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// A length pair's longer answer has at least this many times the shorter's tokens.
pub const LENGTH_RATIO: usize = 2;

/// Casual openers: a text whose first word is one of these is casual.
pub const CASUAL_OPENERS: [&str; 5] = ["Yep", "Sure", "That'd", "That's", "Oh"];

/// What follows the apostrophe of a contraction (lowercase): "that'd", "you're", "we'll",
/// "I've", "I'm". "n't" is the sixth ("isn't", "don't"). "'s" is read only after
/// [`S_CONTRACTIONS`]: after a name it is a possessive ("France's capital", "St. John's").
pub const CONTRACTION_SUFFIXES: [&str; 5] = ["d", "re", "ll", "ve", "m"];

/// The words (lowercase) whose "'s" is a contraction of "is" or "us": "it's", "that's", "let's".
pub const S_CONTRACTIONS: [&str; 11] = [
    "it", "that", "there", "here", "what", "who", "where", "how", "he", "she", "let",
];

/// Capitalised words that open sentences without naming anything: they are not content words.
/// Compared after [`words`]' normalisation, so "It's" and "Its" are the same word.
pub const STOP_WORDS: [&str; 21] = [
    "A",
    "About",
    "An",
    "Approximately",
    "Around",
    "I",
    "In",
    "It",
    "It's",
    "Oh",
    "Roughly",
    "Sure",
    "That",
    "That'd",
    "That's",
    "The",
    "There",
    "This",
    "Well",
    "Yep",
    "Yes",
];

/// What a pair's two answers differ in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Concise against detailed: one has at least [`LENGTH_RATIO`]× the other's tokens.
    Length,
    /// Casual against formal: exactly one of the two is casual.
    Register,
    /// No style the rules can read (a fact pair, or two answers alike in register and
    /// length): not scored for style.
    None,
}

/// Token counts of the generated answer and of the pair's two answers, from the caller's
/// tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub generated: usize,
    pub chosen: usize,
    pub rejected: usize,
}

/// The style axis of a pair (see the module's documentation for the order of the rules).
pub fn axis(chosen: &str, rejected: &str, chosen_tokens: usize, rejected_tokens: usize) -> Axis {
    if is_fact_pair(chosen, rejected) {
        return Axis::None;
    }
    if is_casual(chosen) != is_casual(rejected) {
        return Axis::Register;
    }
    let (short, long) = (
        chosen_tokens.min(rejected_tokens).max(1),
        chosen_tokens.max(rejected_tokens).max(1),
    );
    if long >= LENGTH_RATIO * short {
        Axis::Length
    } else {
        Axis::None
    }
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// Whether the text is in a casual register: it contains '!', or a contraction ("that'd",
/// "it's", "you're", "we'll", "I've", "I'm", "isn't": [`CONTRACTION_SUFFIXES`],
/// [`S_CONTRACTIONS`]; ' and ’ alike), or its first word is one of [`CASUAL_OPENERS`].
pub fn is_casual(text: &str) -> bool {
    if text.contains('!') {
        return true;
    }
    let mut first = true;
    for raw in text.split_whitespace() {
        // The word without the punctuation around it; apostrophes inside it kept, as '.
        let word: String = raw
            .trim_matches(|c: char| !c.is_alphanumeric())
            .chars()
            .map(|c| if is_apostrophe(c) { '\'' } else { c })
            .collect();
        if word.is_empty() {
            continue;
        }
        if std::mem::take(&mut first) && CASUAL_OPENERS.contains(&word.as_str()) {
            return true;
        }
        if let Some((stem, suffix)) = word.to_lowercase().rsplit_once('\'') {
            let contraction = CONTRACTION_SUFFIXES.contains(&suffix)
                || (suffix == "t" && stem.ends_with('n'))
                || (suffix == "s" && S_CONTRACTIONS.contains(&stem));
            if contraction {
                return true;
            }
        }
    }
    false
}

/// How well the generated answer takes the chosen side of the pair's `axis`:
///
/// - on a length pair ([`Axis::Length`]), 1 when its token count is closer to the chosen's
///   than to the rejected's in log scale (|ln g − ln c| < |ln g − ln r|), 0 when closer to
///   the rejected's, 0.5 on an exact tie; an empty answer counts as 1 token, the shortest;
/// - on a register pair ([`Axis::Register`]), 1 when it is casual exactly when the chosen
///   answer is, else 0;
/// - on a pair without an axis ([`Axis::None`]), `None`.
pub fn style_score(
    axis: Axis,
    generated: &str,
    chosen: &str,
    rejected: &str,
    tokens: Tokens,
) -> Option<f64> {
    // The rejected side is implied: on a pair of this axis it is the other pole.
    let _ = rejected;
    match axis {
        Axis::Length => {
            let (g, c, r) = (
                tokens.generated.max(1) as u128,
                tokens.chosen.max(1) as u128,
                tokens.rejected.max(1) as u128,
            );
            // |ln g − ln c| against |ln g − ln r| exactly, as ratios ≥ 1 cross-multiplied:
            // max(g,c)/min(g,c) against max(g,r)/min(g,r).
            let to_chosen = g.max(c) * g.min(r);
            let to_rejected = g.max(r) * g.min(c);
            Some(match to_chosen.cmp(&to_rejected) {
                Ordering::Less => 1.0,
                Ordering::Greater => 0.0,
                Ordering::Equal => 0.5,
            })
        }
        Axis::Register => Some(if is_casual(generated) == is_casual(chosen) {
            1.0
        } else {
            0.0
        }),
        Axis::None => None,
    }
}

/// [`words`], each with whether it began with an uppercase letter or a digit.
fn words_marked(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut marked = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if word.is_empty() {
                marked = c.is_uppercase() || c.is_numeric();
            }
            word.extend(c.to_lowercase());
        } else if is_apostrophe(c) && !word.is_empty() {
            continue;
        } else if !word.is_empty() {
            out.push((std::mem::take(&mut word), marked));
        }
    }
    if !word.is_empty() {
        out.push((word, marked));
    }
    out
}

/// The words of a text, lowercased: runs of letters and digits; an apostrophe (' or ’)
/// inside a word joins it ("Sana'a" and "Sanaa" are both "sanaa", "That'd" is "thatd");
/// anything else separates ("1.4" is "1" and "4", "Guinea-Bissau" is "guinea" and
/// "bissau").
pub fn words(text: &str) -> Vec<String> {
    words_marked(text).into_iter().map(|(w, _)| w).collect()
}

/// The content words of a text: its words that begin with an uppercase letter or a digit,
/// less [`STOP_WORDS`] ("That'd be Kabul!" has one: "kabul"; "About 26 million." has "26").
pub fn content_words(text: &str) -> BTreeSet<String> {
    content_counts(text).into_keys().collect()
}

/// [`content_words`] with how often each occurs.
fn content_counts(text: &str) -> BTreeMap<String, usize> {
    let stop: BTreeSet<String> = STOP_WORDS.iter().flat_map(|s| words(s)).collect();
    let mut counts = BTreeMap::new();
    for (w, marked) in words_marked(text) {
        if marked && !stop.contains(&w) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// The words `a` names more often than `b`.
fn more_often(a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>) -> BTreeSet<String> {
    a.iter()
        .filter(|(w, n)| **n > b.get(*w).copied().unwrap_or(0))
        .map(|(w, _)| w.clone())
        .collect()
}

/// Whether the pair is a fact pair: each answer names a content word ([`content_words`]) more
/// often than the other, a right and a wrong fact ("Kabul." / "Dhaka."; "The capital of
/// Djibouti is Djibouti." / "… is Malabo.", where "djibouti" is the extra word). In a style
/// pair one answer names everything the other does, as often: the same fact, with more or
/// less around it.
pub fn is_fact_pair(chosen: &str, rejected: &str) -> bool {
    let (c, r) = (content_counts(chosen), content_counts(rejected));
    !more_often(&c, &r).is_empty() && !more_often(&r, &c).is_empty()
}

/// The words a generated answer must name (`required`) and must not (`forbidden`) to state
/// a pair's fact.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FactWords {
    pub required: BTreeSet<String>,
    pub forbidden: BTreeSet<String>,
}

/// The fact of a pair, from the content words of the chosen answer C and of the rejected R,
/// counted:
///
/// - a **fact pair** ([`is_fact_pair`]) names a right and a wrong answer ("The capital of
///   Afghanistan is Kabul." / "… is Dhaka."): required are the words C names more often than
///   R ("kabul"; "djibouti" in "The capital of Djibouti is Djibouti." / "… is Malabo."),
///   forbidden those only R names ("dhaka"; "west" but not "island" in "The capital of
///   Christmas Island is Flying Fish Cove." / "… is West Island."); the words both name as
///   often ("afghanistan") are neither;
/// - a **style pair** states one fact twice, one answer adding to the other ("Kabul." /
///   "The capital of Afghanistan is Kabul. …"): required are the words both name
///   ("kabul"), nothing is forbidden.
pub fn fact_words(chosen: &str, rejected: &str) -> FactWords {
    let (c, r) = (content_counts(chosen), content_counts(rejected));
    let (right, wrong) = (more_often(&c, &r), more_often(&r, &c));
    if !right.is_empty() && !wrong.is_empty() {
        FactWords {
            required: right,
            forbidden: wrong.into_iter().filter(|w| !c.contains_key(w)).collect(),
        }
    } else {
        FactWords {
            required: c.into_keys().filter(|w| r.contains_key(w)).collect(),
            forbidden: BTreeSet::new(),
        }
    }
}

/// Whether the generated answer states the pair's fact ([`fact_words`]): every required word
/// is among its words and no forbidden one is. `None` when nothing is required.
pub fn fact_right(generated: &str, chosen: &str, rejected: &str) -> Option<bool> {
    let fact = fact_words(chosen, rejected);
    if fact.required.is_empty() {
        return None;
    }
    let said: BTreeSet<String> = words(generated).into_iter().collect();
    Some(fact.required.is_subset(&said) && fact.forbidden.is_disjoint(&said))
}
