//! The study's intervals against cases computed by hand.

use bapo_study::{IntervalError, paired_bootstrap, t_interval_95};

/// Two items with changes 0 and 1: the resampled mean is 0, 0.5 or 1 with probabilities 1/4,
/// 1/2, 1/4, so the 2.5% and 97.5% quantiles are 0 and 1 exactly, and the estimate 0.5.
#[test]
fn two_items_give_the_exact_bootstrap_quantiles() {
    let i = paired_bootstrap(&[0.0, 0.0], &[0.0, 1.0], 10_000, 0.95, 7).unwrap();
    assert_eq!((i.estimate, i.low, i.high), (0.5, 0.0, 1.0));
    assert!(!i.excludes_zero());
}

/// Pairing: items of very different difficulty that all gain exactly one point have the
/// interval [1, 1]; resampling the two sides independently would give a wide one.
#[test]
fn paired_items_remove_the_spread_of_their_difficulty() {
    let before: Vec<f64> = (0..50).map(|i| (i * 37 % 100) as f64).collect();
    let after: Vec<f64> = before.iter().map(|b| b + 1.0).collect();
    let i = paired_bootstrap(&before, &after, 2_000, 0.95, 0).unwrap();
    assert_eq!((i.estimate, i.low, i.high), (1.0, 1.0, 1.0));
    assert!(i.excludes_zero());
}

/// 500 items, 300 of which flip from wrong to right: the change is 0.6, and its standard
/// error is √(0.6 · 0.4 / 500) = 0.0219, so the 95% interval is close to 0.6 ± 1.96 · 0.0219
/// = [0.557, 0.643].
#[test]
fn many_items_agree_with_the_normal_approximation() {
    let before = vec![0.0; 500];
    let after: Vec<f64> = (0..500).map(|i| f64::from(i % 5 < 3)).collect();
    let i = paired_bootstrap(&before, &after, 20_000, 0.95, 1).unwrap();
    assert!((i.estimate - 0.6).abs() < 1e-12);
    assert!((i.low - 0.557).abs() < 0.005, "{i:?}");
    assert!((i.high - 0.643).abs() < 0.005, "{i:?}");
    // Reproducible from the seed.
    assert_eq!(
        i,
        paired_bootstrap(&before, &after, 20_000, 0.95, 1).unwrap()
    );
}

/// Seeds 1, 2, 3: mean 2, s = 1, t(0.975, 2) = 4.303, so 2 ± 4.303 / √3 = [−0.4843, 4.4843].
#[test]
fn the_t_interval_of_three_seeds() {
    let i = t_interval_95(&[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(i.estimate, 2.0);
    assert!((i.low + 0.48434).abs() < 1e-4, "{i:?}");
    assert!((i.high - 4.48434).abs() < 1e-4, "{i:?}");
}

#[test]
fn inputs_without_an_interval_are_errors() {
    assert_eq!(
        paired_bootstrap(&[0.0], &[0.0, 1.0], 10, 0.95, 0),
        Err(IntervalError::Unpaired {
            before: 1,
            after: 2
        })
    );
    assert_eq!(
        paired_bootstrap(&[], &[], 10, 0.95, 0),
        Err(IntervalError::Empty)
    );
    assert_eq!(
        paired_bootstrap(&[0.0], &[1.0], 10, 1.0, 0),
        Err(IntervalError::Level(1.0))
    );
    assert_eq!(
        paired_bootstrap(&[0.0], &[f64::NAN], 10, 0.95, 0),
        Err(IntervalError::NotFinite)
    );
    assert_eq!(t_interval_95(&[1.0]), Err(IntervalError::TooFew(1)));
}

/// A run's items: the change of each metric from step 0 to the last evaluation, paired item
/// by item; unpaired metrics (other item counts) and non-list fields are left out.
#[test]
fn a_runs_changes_are_read_from_its_items() {
    let dir = std::env::temp_dir().join(format!("bapo-study-changes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("eval_items.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"step":0,"acc":[0,0,1,1],"odd":[1,2]}"#,
            "\n",
            r#"{"step":4,"acc":[1,1,1,1],"odd":[1]}"#,
            "\n",
            r#"{"step":8,"acc":[1,1,1,0],"odd":[1,2,3]}"#,
            "\n"
        ),
    )
    .unwrap();
    let changes = bapo_study::run_changes(&path, 0, 1_000).unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let c = &changes[0];
    assert_eq!((c.metric.as_str(), c.items), ("acc", 4));
    assert_eq!((c.before, c.after, c.change.estimate), (0.5, 0.75, 0.25));
    // Changes 1, 1, 0, −1: every resampled mean lies in [−1, 1].
    assert!(c.change.low >= -1.0 && c.change.high <= 1.0 && c.change.low < c.change.high);

    let err = bapo_study::run_changes(&path, 3, 10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no evaluation at step 3") && err.contains("[0, 4, 8]"),
        "{err}"
    );
    std::fs::write(&path, "{\"step\":0}\nnot json\n").unwrap();
    let err = bapo_study::run_changes(&path, 0, 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("eval_items.jsonl, line 2: "), "{err}");
}
