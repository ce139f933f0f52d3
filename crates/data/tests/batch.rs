//! A preference batch holds every example's chosen, rejected and base responses after its prompt
//! (shared or not) and knows which sequence is which; shuffling is deterministic; entity splits never share an entity.

use bapo_data::{
    ExampleResponses, Packing, PreferenceBatch, ScoringInput, Slot, TokenizedExample, epoch_order,
    split_by_entity,
};

fn example(line: usize, entity: Option<&str>, base: bool) -> TokenizedExample {
    TokenizedExample {
        prompt: vec![10, 11, line as u32],
        chosen: vec![20, 2],
        rejected: vec![30, 31, 2],
        base: base.then(|| vec![40, 2]),
        user: None,
        entity: entity.map(str::to_string),
        line,
    }
}

fn responses<'a>(e: &'a TokenizedExample, base: &'a [Vec<u32>]) -> ExampleResponses<'a> {
    ExampleResponses {
        prompt: &e.prompt,
        chosen: &e.chosen,
        rejected: &e.rejected,
        base,
    }
}

#[test]
fn one_batch_holds_chosen_rejected_and_base_of_each_example() {
    let (a, b) = (example(1, None, true), example(2, None, true));
    let bases = [
        vec![vec![40, 2], vec![41, 2]],
        vec![vec![42, 2], vec![43, 2]],
    ];
    let examples = [responses(&a, &bases[0]), responses(&b, &bases[1])];

    // Shared prompts: one row per example, [prompt | chosen | rejected | base 0 | base 1].
    let batch = PreferenceBatch::new(examples, 2, Packing::SharedPrompt, 0).unwrap();
    assert_eq!((batch.size, batch.base_per_example), (2, 2));
    let ScoringInput::Shared(shared) = &batch.input else {
        panic!("shared packing")
    };
    assert_eq!(shared.groups.len(), 2);
    assert_eq!(shared.groups[1].prompt, [10, 11, 2]);
    assert_eq!(
        shared.groups[1].completions,
        [vec![20, 2], vec![30, 31, 2], vec![42, 2], vec![43, 2]]
    );
    assert_eq!(shared.tokens(), 2 * (3 + 2 + 3 + 2 + 2), "each prompt once");
    assert_eq!(
        batch.sequence_tokens(),
        2 * (5 + 6 + 5 + 5),
        "counted as unshared rows"
    );

    // Sequence numbering: example-major; `sequences` lists slot-major.
    assert_eq!(batch.sequence(1, Slot::Rejected), 5);
    assert_eq!(batch.sequences(&[Slot::Chosen]), [0, 4]);
    assert_eq!(
        batch.sequences(&[Slot::Base(0), Slot::Base(1)]),
        [2, 6, 3, 7],
        "anchor-major, as [B·K] → [B, K] expects"
    );

    // Unshared: the same sequences, one prompt + response row each, in the same order.
    let unshared = PreferenceBatch::new(examples, 2, Packing::Unshared, 0).unwrap();
    let ScoringInput::Unshared(rows) = &unshared.input else {
        panic!("unshared packing")
    };
    assert_eq!(rows.ids.len(), 8);
    assert_eq!(rows.ids[5], [10, 11, 2, 30, 31, 2]);
    assert_eq!(rows.scored[5], [false, false, false, true, true, true]);
    assert_eq!(unshared.sequence_tokens(), batch.sequence_tokens());

    // A subset of slots for a second model, numbered as `sequences` lists them.
    let ScoringInput::Shared(base_only) = batch.restricted_to(&[Slot::Base(1)]) else {
        panic!("keeps the packing")
    };
    let completions: Vec<_> = base_only
        .groups
        .iter()
        .map(|g| g.completions.clone())
        .collect();
    assert_eq!(completions, [vec![vec![41, 2]], vec![vec![43, 2]]]);

    // Too few base responses is an error naming the example.
    let err = PreferenceBatch::new(examples, 3, Packing::SharedPrompt, 0).unwrap_err();
    assert!(err.to_string().contains("example 0"), "{err}");
}

#[test]
fn shuffling_is_deterministic_per_seed_and_epoch() {
    assert_eq!(epoch_order(50, 7, 0, true), epoch_order(50, 7, 0, true));
    assert_ne!(epoch_order(50, 7, 0, true), epoch_order(50, 7, 1, true));
    assert_ne!(epoch_order(50, 7, 0, true), epoch_order(50, 8, 0, true));
    let mut sorted = epoch_order(50, 7, 3, true);
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_eq!(epoch_order(5, 7, 0, false), [0, 1, 2, 3, 4]);
}

#[test]
fn entity_splits_never_share_an_entity() {
    let entities = ["France", "Japan", "Peru", "Kenya", "Chile"];
    let examples: Vec<_> = (0..40)
        .map(|i| example(i + 1, Some(entities[i % 5]), false))
        .collect();
    for seed in 0..10 {
        let (train, test) = split_by_entity(&examples, 0.2, seed);
        assert_eq!(train.len() + test.len(), 40);
        assert!(test.len() >= 8, "at least the fraction goes to test");
        for t in &test {
            assert!(
                train.iter().all(|e| e.entity != t.entity),
                "seed {seed}: {:?} on both sides",
                t.entity
            );
        }
        assert_eq!(
            split_by_entity(&examples, 0.2, seed),
            (train, test),
            "deterministic"
        );
    }
}
