//! Batches put chosen, rejected and base sequences of the same examples in one batch with the
//! completions marked; shuffling is deterministic; entity splits never share an entity.

use bapo_data::{TokenizedExample, epoch_order, make_batch, split_by_entity};

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

#[test]
fn one_batch_holds_chosen_rejected_and_base_rows() {
    let (a, b) = (example(1, None, true), example(2, None, true));
    let batch = make_batch(&[&a, &b], 2);
    assert_eq!(batch.size, 2);
    assert!(batch.has_base);
    let s = &batch.sequences;
    assert_eq!(s.ids.len(), 6, "[chosen; rejected; base]");
    assert_eq!(s.ids[0], [10, 11, 1, 20, 2]);
    assert_eq!(s.ids[3], [10, 11, 2, 30, 31, 2]);
    assert_eq!(s.ids[5], [10, 11, 2, 40, 2]);
    assert_eq!(
        s.scored[3],
        [false, false, false, true, true, true],
        "completion tokens only"
    );
    assert_eq!(batch.lines, [1, 2]);

    let without = example(3, None, false);
    let batch = make_batch(&[&a, &without], 2);
    assert!(!batch.has_base, "base rows only when every example has one");
    assert_eq!(batch.sequences.ids.len(), 4);
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
