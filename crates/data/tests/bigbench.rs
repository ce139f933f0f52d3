//! The BIG-bench evaluation sets load with the sizes the spec gives, and the fact sample is
//! fixed by its seed.

use bapo_data::{load_fact_sample, load_hhh_alignment, load_multiple_choice};

#[test]
fn evaluation_sets_load() {
    let Some(bigbench) = bapo_testkit::asset("bigbench") else {
        return;
    };
    let hhh = load_hhh_alignment(&bigbench).unwrap();
    assert_eq!(hhh.len(), 221);
    assert!(
        hhh.iter()
            .all(|i| i.preferred != i.dispreferred && !i.prompt.is_empty())
    );
    assert_eq!(hhh.iter().filter(|i| i.category == "honest").count(), 61);
    for item in &hhh {
        let question = item.two_choice();
        assert_eq!(question.question, item.prompt);
        assert_eq!(question.choices.len(), 2);
        assert_eq!(question.choices[question.correct], item.preferred);
        assert_eq!(question.choices[1 - question.correct], item.dispreferred);
    }

    let general = load_multiple_choice(&bigbench, "general_knowledge").unwrap();
    assert_eq!(general.len(), 70);
    let horses = general
        .iter()
        .find(|q| q.question == "How many legs do horses have?")
        .unwrap();
    assert_eq!(horses.choices[horses.correct], "four");

    let misconceptions = load_multiple_choice(&bigbench, "misconceptions").unwrap();
    assert_eq!(misconceptions.len(), 219);
    assert!(
        misconceptions[0]
            .question
            .starts_with("Is the following statement true or false?")
    );
    assert!(misconceptions.iter().all(|q| q.choices.len() == 2));

    let facts = load_fact_sample(&bigbench, 200, 17).unwrap();
    assert_eq!(facts.len(), 200);
    assert_eq!(
        facts,
        load_fact_sample(&bigbench, 200, 17).unwrap(),
        "fixed by the seed"
    );
    assert_ne!(facts, load_fact_sample(&bigbench, 200, 18).unwrap());

    let missing = load_multiple_choice(&bigbench, "no_such_task")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("no_such_task") && missing.contains("cargo xtask fetch"),
        "{missing}"
    );
}

/// The note `cargo xtask fetch` leaves where the registry no longer serves BIG-bench is read
/// only while the folder is missing: a folder that is there is used, and a missing folder
/// without the note is no reason to skip (the loaders then fail, naming it).
#[test]
fn the_unavailable_note_counts_only_while_the_folder_is_missing() {
    let dir = std::env::temp_dir().join(format!("bapo-bigbench-note-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bigbench = dir.join("bigbench");
    let note = bapo_data::unavailable_note(&bigbench);
    assert_eq!(note, dir.join("bigbench.unavailable"));
    assert_eq!(bapo_data::unavailable_reason(&bigbench), None);

    std::fs::write(&note, "not served\n").unwrap();
    assert_eq!(
        bapo_data::unavailable_reason(&bigbench).as_deref(),
        Some("not served")
    );

    std::fs::create_dir_all(&bigbench).unwrap();
    assert_eq!(bapo_data::unavailable_reason(&bigbench), None);
    std::fs::remove_dir_all(&dir).unwrap();
}
