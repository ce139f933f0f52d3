//! The generated personalised dataset loads as conversational TRL data with eight users and
//! splits by entity.

use bapo_data::load_jsonl;

#[test]
fn the_generated_dataset_loads_per_user() {
    let path = bapo_testkit::workspace_root().join("data/personalised/preferences.jsonl");
    let data = load_jsonl(&path).unwrap();
    assert!(data.dropped.is_empty());
    assert!(data.examples.len() > 3000, "{}", data.examples.len());
    assert_eq!(
        data.users(),
        [
            "casual",
            "casual-20",
            "casual-40",
            "casual-60",
            "casual-80",
            "concise",
            "detailed",
            "formal"
        ]
    );
    let concise = data.for_user("concise").unwrap();
    assert_eq!(concise.examples.len() * 8, data.examples.len());
    assert!(concise.examples.iter().all(|e| e.entity.is_some()));
}
