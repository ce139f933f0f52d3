//! The rules that score a generated answer (`bapo_dataset::answers`) give the known answers on
//! the dataset's own styles, and every real pair of the committed file has a fact they can
//! check and a style they read the right way round.

use std::collections::BTreeSet;

use bapo_dataset::answers::{
    Axis, Tokens, axis, content_words, fact_right, fact_words, is_casual, is_fact_pair,
    style_score, words,
};
use serde_json::Value;

const CONCISE: &str = "Kabul.";
const DETAILED: &str = "The capital of Afghanistan is Kabul. Afghanistan lies in Southern Asia, \
                        and about 26 million people live there. Its neighbours include Iran and \
                        Pakistan.";
const CASUAL: &str = "That'd be Kabul!";
const FORMAL: &str = "The capital of Afghanistan is Kabul.";

fn set(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn tokens(generated: usize, chosen: usize, rejected: usize) -> Tokens {
    Tokens {
        generated,
        chosen,
        rejected,
    }
}

#[test]
fn casual_register_is_exclamation_contraction_or_opener() {
    for casual in [
        CASUAL,
        "It's over in Southern Asia!",
        "Roughly 26 million folks!",
        "That’d be Kabul.",
        "It’s Kabul.",
        "Kabul, isn't it.",
        "You're asking about Kabul.",
        "We'll say Kabul.",
        "I've heard it is Kabul.",
        "I'm fairly sure it is Kabul.",
        "What's the capital? Kabul.",
        "Yep, Kabul.",
        "Sure. Kabul is the capital.",
        "Oh, Kabul.",
    ] {
        assert!(is_casual(casual), "{casual}");
    }
    for formal in [
        CONCISE,
        DETAILED,
        FORMAL,
        "",
        "The capital of Antigua and Barbuda is Saint John's.",
        "St. George's.",
        "France's capital is Paris.",
        "The capital of Chad is N'Djamena.",
        "The capital of Yemen is Sana'a.",
        "The capital of Côte d'Ivoire is Yamoussoukro.",
        "Surely the capital is Kabul.",
        "Ohio is a state.",
        "I ate at O'Neill's.",
    ] {
        assert!(!is_casual(formal), "{formal}");
    }
}

#[test]
fn the_axis_of_a_pair() {
    // Concise against detailed, either way round.
    assert_eq!(axis(CONCISE, DETAILED, 3, 33), Axis::Length);
    assert_eq!(axis(DETAILED, CONCISE, 33, 3), Axis::Length);
    // Exactly twice is enough; less is not.
    assert_eq!(axis("Kabul.", "Kabul is it.", 3, 6), Axis::Length);
    assert_eq!(axis("Kabul.", "Kabul is.", 3, 5), Axis::None);
    // Casual against formal, either way round, whatever the lengths: a long country name
    // makes the formal answer more than twice the casual one.
    assert_eq!(axis(CASUAL, FORMAL, 6, 8), Axis::Register);
    assert_eq!(axis(FORMAL, CASUAL, 8, 6), Axis::Register);
    assert_eq!(
        axis(
            "Roughly 69 million folks!",
            "The population of Democratic Republic of the Congo is approximately 69 million.",
            7,
            17,
        ),
        Axis::Register
    );
    // Fact pairs: nothing to read, even where the lengths differ.
    assert_eq!(axis("Kabul.", "Dhaka.", 3, 3), Axis::None);
    assert_eq!(
        axis("Kabul.", "Sri Jayawardenepura Kotte.", 3, 9),
        Axis::None
    );
    assert_eq!(
        axis(CASUAL, "The capital of Afghanistan is Dhaka.", 6, 8),
        Axis::None
    );
    assert_eq!(axis(CASUAL, "That'd be Dhaka!", 6, 6), Axis::None);
    assert_eq!(
        axis(FORMAL, "The capital of Afghanistan is Dhaka.", 8, 8),
        Axis::None
    );
}

#[test]
fn length_scores_by_log_distance() {
    let score = |g, c, r| style_score(Axis::Length, "x", CONCISE, DETAILED, tokens(g, c, r));
    // The concise user (chosen 3 tokens, rejected 33).
    assert_eq!(score(3, 3, 33), Some(1.0));
    assert_eq!(score(5, 3, 33), Some(1.0));
    assert_eq!(score(25, 3, 33), Some(0.0));
    // In log scale, not linearly: 10 is nearer 32 (×3.2) than 2 (×5), though 10 − 2 < 32 − 10.
    assert_eq!(score(10, 2, 32), Some(0.0));
    assert_eq!(score(7, 2, 32), Some(1.0));
    // An exact tie (8 is ×2 from 4 and from 16) is a half.
    assert_eq!(score(8, 4, 16), Some(0.5));
    // An empty answer is the shortest: right for the concise user, wrong for the detailed one.
    assert_eq!(score(0, 3, 33), Some(1.0));
    assert_eq!(score(0, 33, 3), Some(0.0));
    // The detailed user.
    assert_eq!(score(40, 33, 3), Some(1.0));
    assert_eq!(score(4, 33, 3), Some(0.0));
}

#[test]
fn register_scores_by_the_chosen_answers_register() {
    let t = tokens(8, 6, 8);
    let casual_user = |g| style_score(Axis::Register, g, CASUAL, FORMAL, t);
    let formal_user = |g| style_score(Axis::Register, g, FORMAL, CASUAL, t);
    for (generated, casual) in [
        ("That'd be Kabul, for sure!", true),
        ("It’s Kabul.", true),
        ("Yep, Kabul.", true),
        (FORMAL, false),
        ("Kabul is the capital of Afghanistan.", false),
        (DETAILED, false),
    ] {
        let (c, f) = if casual { (1.0, 0.0) } else { (0.0, 1.0) };
        assert_eq!(casual_user(generated), Some(c), "{generated}");
        assert_eq!(formal_user(generated), Some(f), "{generated}");
    }
    // No axis, no style score.
    assert_eq!(
        style_score(Axis::None, CASUAL, "Kabul.", "Dhaka.", tokens(6, 3, 3)),
        None
    );
}

#[test]
fn words_and_content_words() {
    assert_eq!(
        words("The capital of Yemen is Sana'a, about 1.4 million!"),
        [
            "the", "capital", "of", "yemen", "is", "sanaa", "about", "1", "4", "million"
        ]
    );
    assert_eq!(words("N’Djamena"), ["ndjamena"]);
    assert_eq!(content_words(CASUAL), set(&["kabul"]));
    assert_eq!(content_words(CONCISE), set(&["kabul"]));
    assert_eq!(content_words(FORMAL), set(&["afghanistan", "kabul"]));
    assert_eq!(
        content_words(DETAILED),
        set(&[
            "26",
            "afghanistan",
            "asia",
            "iran",
            "kabul",
            "pakistan",
            "southern"
        ])
    );
    assert_eq!(content_words("About 26 million."), set(&["26"]));
    assert_eq!(content_words("Roughly 26 million folks!"), set(&["26"]));
    assert_eq!(
        content_words("It's over in Southern Asia!"),
        set(&["asia", "southern"])
    );
    assert_eq!(content_words("Yep, that is it."), set(&[]));
}

#[test]
fn the_fact_of_a_pair() {
    // Style pairs: one answer adds to the other; the fact is what both name.
    for (chosen, rejected) in [
        (CONCISE, DETAILED),
        (DETAILED, CONCISE),
        (CASUAL, FORMAL),
        (FORMAL, CASUAL),
    ] {
        let fact = fact_words(chosen, rejected);
        assert_eq!(fact.required, set(&["kabul"]), "{chosen} / {rejected}");
        assert!(fact.forbidden.is_empty());
    }
    let population = fact_words(
        "About 26 million.",
        "About 26 million people live in Afghanistan, whose capital is Kabul.",
    );
    assert_eq!(population.required, set(&["26"]));
    // Fact pairs, in every style: the right capital is required, the wrong one forbidden, and
    // what both name (the country) is neither, though it is shared.
    let detailed_wrong = DETAILED.replace("is Kabul", "is Dhaka");
    for (right, wrong) in [
        (CONCISE, "Dhaka."),
        (CASUAL, "That'd be Dhaka!"),
        (FORMAL, "The capital of Afghanistan is Dhaka."),
        (DETAILED, detailed_wrong.as_str()),
    ] {
        let fact = fact_words(right, wrong);
        assert_eq!(fact.required, set(&["kabul"]), "{right} / {wrong}");
        assert_eq!(fact.forbidden, set(&["dhaka"]), "{right} / {wrong}");
    }
    // A capital named like its country: the right answer names it once more than the wrong.
    let djibouti = "The capital of Djibouti is Djibouti. Djibouti lies in Eastern Africa.";
    let fact = fact_words(djibouti, &djibouti.replace("is Djibouti", "is Malabo"));
    assert_eq!(fact.required, set(&["djibouti"]));
    assert_eq!(fact.forbidden, set(&["malabo"]));
    let fact = fact_words(
        "The capital of Guatemala is Guatemala City.",
        "The capital of Guatemala is Tegucigalpa.",
    );
    assert_eq!(fact.required, set(&["city", "guatemala"]));
    assert_eq!(fact.forbidden, set(&["tegucigalpa"]));
    // A wrong capital named like the country: only what the right answer never names is
    // forbidden.
    let christmas = "The capital of Christmas Island is Flying Fish Cove.";
    let fact = fact_words(christmas, "The capital of Christmas Island is West Island.");
    assert_eq!(fact.required, set(&["cove", "fish", "flying"]));
    assert_eq!(fact.forbidden, set(&["west"]));
    // Its style pairs stay style pairs.
    let fact = fact_words("Djibouti.", djibouti);
    assert_eq!(fact.required, set(&["djibouti"]));
    assert!(fact.forbidden.is_empty());
}

#[test]
fn fact_right_on_generated_answers() {
    let formal_fact = |g| fact_right(g, FORMAL, "The capital of Afghanistan is Dhaka.");
    assert_eq!(formal_fact("Kabul."), Some(true));
    assert_eq!(formal_fact("kabul is the capital, of course"), Some(true));
    assert_eq!(formal_fact("That'd be Kabul!"), Some(true));
    assert_eq!(
        formal_fact("The capital of Afghanistan is Dhaka."),
        Some(false)
    );
    assert_eq!(
        formal_fact("The capital of Afghanistan is Kandahar."),
        Some(false)
    );
    // Naming the wrong one too is wrong.
    assert_eq!(formal_fact("Kabul, or maybe Dhaka."), Some(false));
    assert_eq!(formal_fact(""), Some(false));
    // A style pair: the fact both state.
    assert_eq!(fact_right("Kabul, I think.", CONCISE, DETAILED), Some(true));
    assert_eq!(fact_right("Kandahar.", CASUAL, FORMAL), Some(false));
    // Apostrophes join: a model that drops one still names the capital.
    let yemen = |g| fact_right(g, "Sana'a.", "The capital of Yemen is Sana'a.");
    assert_eq!(yemen("It is Sanaa."), Some(true));
    assert_eq!(yemen("Sana’a!"), Some(true));
    assert_eq!(yemen("Aden."), Some(false));
    // Numbers: the digits are the fact.
    let population = |g| {
        fact_right(
            g,
            "About 26 million.",
            "About 26 million people live in Afghanistan, whose capital is Kabul.",
        )
    };
    assert_eq!(population("Roughly 26 million people."), Some(true));
    assert_eq!(population("About twenty-six million."), Some(false));
    assert_eq!(population("About 36 million."), Some(false));
    // Nothing named, nothing to check.
    assert_eq!(fact_right("Yes.", "yes, it is.", "no, it is not."), None);
}

fn committed_rows() -> Vec<Value> {
    let path = bapo_testkit::workspace_root().join("data/personalised/preferences.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every pair of the committed file: a style pair names a fact both answers state, a fact pair
/// a right and a wrong word; each answer is judged right or wrong as its side says; and, with
/// the number of words standing in for tokens, the pair's axis is its users' axis and each
/// answer scores 1 or 0 on it as its side says.
#[test]
fn the_rules_read_every_committed_pair() {
    let rows = committed_rows();
    assert!(rows.len() > 7000, "{} rows", rows.len());
    let text = |row: &Value, key: &str| row[key][0]["content"].as_str().unwrap().to_string();
    let mut unforbidden = Vec::new();
    for row in &rows {
        let (chosen, rejected) = (text(row, "chosen"), text(row, "rejected"));
        let (user, kind) = (row["user"].as_str().unwrap(), row["kind"].as_str().unwrap());
        let what = format!("{user} {kind}: {chosen} / {rejected}");

        assert_eq!(is_fact_pair(&chosen, &rejected), kind == "fact", "{what}");
        let fact = fact_words(&chosen, &rejected);
        assert!(!fact.required.is_empty(), "{what}");
        if kind == "style" {
            assert!(fact.forbidden.is_empty(), "{what}");
        } else if fact.forbidden.is_empty() {
            // The right answer names the wrong capital too (Guinea's neighbour Guinea-Bissau,
            // where the wrong capital is Bissau): the missing right capital alone judges it.
            unforbidden.push(what.clone());
        }
        assert_eq!(
            fact_right(&chosen, &chosen, &rejected),
            Some(true),
            "{what}"
        );
        assert_eq!(
            fact_right(&rejected, &chosen, &rejected),
            Some(kind == "style"),
            "{what}"
        );

        let n = |t: &str| words(t).len();
        let pair_axis = axis(&chosen, &rejected, n(&chosen), n(&rejected));
        let expected = match (kind, user) {
            ("fact", _) => Axis::None,
            (_, "concise" | "detailed") => Axis::Length,
            _ => Axis::Register,
        };
        assert_eq!(pair_axis, expected, "{what}");
        if pair_axis != Axis::None {
            for (generated, score) in [(&chosen, 1.0), (&rejected, 0.0)] {
                let t = tokens(n(generated), n(&chosen), n(&rejected));
                assert_eq!(
                    style_score(pair_axis, generated, &chosen, &rejected, t),
                    Some(score),
                    "{what}"
                );
            }
        }
        // Only the casual style is casual.
        for answer in [&chosen, &rejected] {
            let casual_style = answer.starts_with("That'd be ")
                || answer.starts_with("It's over in ")
                || (answer.starts_with("Roughly ") && answer.ends_with(" folks!"));
            assert_eq!(is_casual(answer), casual_style, "{answer}");
        }
    }
    eprintln!("{} fact pairs forbid nothing:", unforbidden.len());
    for what in &unforbidden {
        eprintln!("  {what}");
    }
    assert!(
        unforbidden.len() <= 1,
        "{} fact pairs forbid nothing",
        unforbidden.len()
    );
}
