//! The study's statistics (`bapo_study::stats`) against cases whose answer is known by hand.
//! Each test is shown to catch a planted bug: tests/planted-mutations.toml, ids ST1….

use bapo_study::stats::{
    Bootstrap, ClusterSums, Clusters, Decision, Draw, Sign, StatsError, Unit, cluster_bootstrap,
    curve_under, decide, difference_interval, hierarchical_interval, holm, mean_interval,
    ols_slope, ols_t_interval_95, slope_interval, value_at_level, zero_width,
};

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

fn width(b: &Bootstrap) -> f64 {
    let (low, high) = b.bounds.unwrap();
    high - low
}

/// `count` evenly spaced values from `low` to `high`, as hand-made resamples.
fn grid(low: f64, high: f64, count: usize) -> Vec<Option<f64>> {
    (0..count)
        .map(|i| Some(low + (high - low) * i as f64 / (count - 1) as f64))
        .collect()
}

// ---- the two-level bootstrap ----

/// Two seeds, every item's change 0 in seed A and 1 in seed B, one cluster: the clusters
/// cannot vary, and resampling the seeds gives the means 0, 0.5 and 1 with probabilities
/// 1/4, 1/2, 1/4, so the 2.5% and 97.5% quantiles are exactly 0 and 1 (not resampling seeds
/// would give [0.5, 0.5]).
#[test]
fn seeds_are_resampled_before_items() {
    let clusters = Clusters::new(&[4; 6]).unwrap();
    let runs = vec![vec![0.0; 6], vec![1.0; 6]];
    let b = mean_interval(&runs, &clusters, 10_000, 0.95, 3).unwrap();
    assert_eq!(b.estimate, Some(0.5));
    assert_eq!(b.bounds, Some((0.0, 1.0)));
    assert!(!b.items_only);
    assert_eq!(b.defined_share(), 1.0);
}

/// 10 clusters of 10 identical items (cluster c's items all equal c) against the same 100
/// values as independent items: the mean of 10 drawn clusters has √10 times the standard
/// deviation of the mean of 100 drawn items, and so does the interval's width.
#[test]
fn clusters_are_resampled_whole() {
    let ids: Vec<usize> = (0..100).map(|i| i / 10).collect();
    let values: Vec<f64> = ids.iter().map(|&c| c as f64).collect();
    let clustered = cluster_bootstrap(&values, &Clusters::new(&ids).unwrap(), 4_000, 0.95, 5);
    let independent = cluster_bootstrap(
        &values,
        &Clusters::independent(100).unwrap(),
        4_000,
        0.95,
        5,
    );
    let ratio = width(&clustered.unwrap()) / width(&independent.unwrap());
    assert!((2.7..3.7).contains(&ratio), "ratio {ratio} (√10 = 3.16)");
}

/// Two settings with per-item changes that vary with item, cluster and seed, B's exactly A's
/// plus 1: on the same drawn seeds and clusters every resampled difference is 1, so the
/// interval is [1, 1]; drawing clusters (or seeds) apart for each setting would widen it.
#[test]
fn settings_are_compared_on_the_same_draws() {
    let ids: Vec<usize> = (0..40).map(|i| i % 8).collect();
    let a: Vec<Vec<f64>> = (0..3)
        .map(|s| {
            (0..40)
                .map(|i| ((i * 37) % 11) as f64 + 5.0 * s as f64)
                .collect()
        })
        .collect();
    let b: Vec<Vec<f64>> = a
        .iter()
        .map(|r| r.iter().map(|v| v + 1.0).collect())
        .collect();
    let d = difference_interval(&a, &b, &Clusters::new(&ids).unwrap(), 2_000, 0.95, 9).unwrap();
    let (low, high) = d.bounds.unwrap();
    assert!(close(d.estimate.unwrap(), 1.0, 1e-9), "{d:?}");
    assert!(
        close(low, 1.0, 1e-9) && close(high, 1.0, 1e-9),
        "[{low}, {high}]"
    );
    assert!(d.zero_width());
}

/// With one seed the seed level is degenerate: the two-level bootstrap is the cluster
/// bootstrap, and says so. Two equal clusters of values 0 and 1 give the means 0, 0.5, 1 with
/// probabilities 1/4, 1/2, 1/4: the interval [0, 1] exactly.
#[test]
fn one_seed_is_the_cluster_bootstrap_and_says_so() {
    let ids = [0, 0, 0, 1, 1, 1];
    let values = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    let clusters = Clusters::new(&ids).unwrap();
    let one = mean_interval(&[values.to_vec()], &clusters, 10_000, 0.95, 11).unwrap();
    assert!(one.items_only);
    assert_eq!((one.estimate, one.bounds), (Some(0.5), Some((0.0, 1.0))));
    let plain = cluster_bootstrap(&values, &clusters, 10_000, 0.95, 11).unwrap();
    assert_eq!(one, plain);
    let two = mean_interval(
        &[values.to_vec(), values.to_vec()],
        &clusters,
        100,
        0.95,
        11,
    );
    assert!(!two.unwrap().items_only);
}

/// The mean under a draw weighs every drawn item alike: clusters of 3 items (1, 2, 3) and 1
/// item (10), worked out by hand.
#[test]
fn a_mean_under_a_draw_counts_drawn_items() {
    let clusters = Clusters::new(&[7, 7, 7, 3]).unwrap();
    assert_eq!((clusters.items(), clusters.count()), (4, 2));
    let runs = vec![vec![1.0, 2.0, 3.0, 10.0], vec![2.0, 3.0, 4.0, 11.0]];
    let sums = ClusterSums::new(&runs, &clusters, 0).unwrap();
    assert_eq!(sums.mean_over(&[0], &[0, 1]), 16.0 / 4.0);
    assert_eq!(sums.mean_over(&[0], &[1, 1]), 10.0);
    assert_eq!(sums.mean_over(&[0], &[0, 0, 1]), 22.0 / 7.0);
    assert_eq!(sums.mean_over(&[0, 1], &[0, 1]), 36.0 / 8.0);
    assert_eq!(sums.mean_over(&[1, 1], &[1]), 11.0);
    assert_eq!(sums.mean(&Draw::identity(2, &[&clusters])), 4.5);
}

#[test]
fn inputs_without_a_statistic_are_errors() {
    let clusters = Clusters::new(&[0, 1, 2]).unwrap();
    assert_eq!(Clusters::new(&[]), Err(StatsError::NoItems));
    assert_eq!(
        ClusterSums::new(&[vec![1.0, 2.0]], &clusters, 0),
        Err(StatsError::Items {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        ClusterSums::new(&[vec![1.0, f64::NAN, 2.0]], &clusters, 0),
        Err(StatsError::NotFinite)
    );
    let run = vec![vec![0.0; 3]];
    assert_eq!(
        difference_interval(
            &run,
            &[run[0].clone(), run[0].clone()],
            &clusters,
            10,
            0.95,
            0
        ),
        Err(StatsError::Seeds { a: 1, b: 2 })
    );
    assert_eq!(
        mean_interval(&run, &clusters, 10, 1.0, 0),
        Err(StatsError::Level(1.0))
    );
    assert_eq!(
        mean_interval(&run, &clusters, 0, 0.95, 0),
        Err(StatsError::NoResamples)
    );
    assert_eq!(
        hierarchical_interval(0, &[&clusters], 10, 0.95, 0, |_| Some(0.0)),
        Err(StatsError::NoSeeds)
    );
}

/// A statistic undefined in some resamples (here: retention where personalisation first
/// reaches 0.8). Seed A's personalisation goes 0 → 1 while its retention goes 0 → −1; seed B's
/// goes 0 → 0.4 and 0 → −3. Only the draw [A, A] (probability 1/4) reaches 0.8, where the
/// retention is −0.8; the data as observed (A and B) do not reach it.
#[test]
fn a_value_at_a_level_reports_how_often_it_was_reached() {
    let x_clusters = Clusters::new(&[0]).unwrap();
    let y_clusters = Clusters::new(&[0, 0]).unwrap();
    let x = [
        ClusterSums::new(&[vec![0.0], vec![0.0]], &x_clusters, 0).unwrap(),
        ClusterSums::new(&[vec![1.0], vec![0.4]], &x_clusters, 0).unwrap(),
    ];
    let y = [
        ClusterSums::new(&[vec![0.0; 2], vec![0.0; 2]], &y_clusters, 1).unwrap(),
        ClusterSums::new(&[vec![-1.0; 2], vec![-3.0; 2]], &y_clusters, 1).unwrap(),
    ];
    let sets = [&x_clusters, &y_clusters];
    let b = hierarchical_interval(2, &sets, 4_000, 0.95, 13, |d| {
        value_at_level(&curve_under(d, &x, &y), 0.8)
    })
    .unwrap();
    assert_eq!(b.estimate, None);
    assert!(
        close(b.defined_share(), 0.25, 0.03),
        "{}",
        b.defined_share()
    );
    let (low, high) = b.bounds.unwrap();
    assert!(
        close(low, -0.8, 1e-12) && close(high, -0.8, 1e-12),
        "[{low}, {high}]"
    );
}

// ---- p-values and decisions ----

/// 99 resamples, 4 of them ≤ 0 (−3, −2, −1, 0) and 95 above: the one-sided p-value for "> 0"
/// is (1 + 4) / (99 + 1) = 0.05, the other (1 + 96) / 100, the two-sided one 0.1. Resamples
/// all above 0 give 1/100, never 0; resamples all 0 give 1.
#[test]
fn p_values_are_monte_carlo_tails() {
    let values: Vec<Option<f64>> = (-3..=95).map(|v| Some(f64::from(v))).collect();
    let b = Bootstrap::from_resamples(Some(40.0), &values, 0.95).unwrap();
    assert_eq!(b.share_at_most(0.0), 4.0 / 99.0);
    assert_eq!(b.share_at_least(0.0), 96.0 / 99.0);
    assert!(close(b.p_greater(), 0.05, 1e-12), "{}", b.p_greater());
    assert!(close(b.p_less(), 0.97, 1e-12));
    assert!(close(b.p_differs(), 0.10, 1e-12));
    assert_eq!(b.sign(), Sign::Positive);
    let positive = Bootstrap::from_resamples(None, &grid(1.0, 2.0, 99), 0.95).unwrap();
    assert!(close(positive.p_greater(), 0.01, 1e-12));
    assert!(close(positive.p_differs(), 0.02, 1e-12));
    let zeros = Bootstrap::from_resamples(Some(0.0), &[Some(0.0); 50], 0.95).unwrap();
    assert_eq!(zeros.p_differs(), 1.0);
    assert!(zeros.zero_width());
}

/// Equivalence within ±1 at α = 0.05 on hand-made resamples (999, evenly spaced): inside the
/// margin, beyond it, straddling the margin, straddling 0 and the margin, small but real, and
/// negative. TOST at α agrees with the 90% interval inside (−1, 1).
#[test]
fn equivalence_and_difference_decisions() {
    let decision = |low: f64, high: f64| {
        let b = Bootstrap::from_resamples(None, &grid(low, high, 999), 0.95).unwrap();
        let (l90, h90) = b.bounds_at(0.90).unwrap().unwrap();
        let inside = l90 > -1.0 && h90 < 1.0;
        assert_eq!(
            inside,
            b.p_equivalent(1.0).unwrap() <= 0.05,
            "[{low}, {high}]"
        );
        (b.decision(1.0, 0.05).unwrap(), b.p_equivalent(1.0).unwrap())
    };
    let (inside, p) = decision(-0.5, 0.5);
    assert_eq!((inside, p), (Decision::Equivalent, 0.001));
    let (beyond, p) = decision(2.0, 3.0);
    assert_eq!(
        (beyond, p),
        (
            Decision::Differs {
                sign: Sign::Positive
            },
            1.0
        )
    );
    let (margin, p) = decision(0.5, 1.5);
    assert_eq!(
        margin,
        Decision::Differs {
            sign: Sign::Positive
        }
    );
    assert!(close(p, 0.5, 0.01), "{p}");
    assert_eq!(decision(-1.5, 1.5).0, Decision::Inconclusive);
    let small = decision(0.1, 0.3).0;
    assert_eq!(
        small,
        Decision::WithinMargin {
            sign: Sign::Positive
        }
    );
    let negative = decision(-3.0, -2.0).0;
    assert_eq!(
        negative,
        Decision::Differs {
            sign: Sign::Negative
        }
    );
    // Holm-adjusted p-values go through the same rule.
    assert_eq!(
        decide(0.2, 0.01, Sign::Negative, 0.05),
        Ok(Decision::Equivalent)
    );
    assert_eq!(
        decide(0.2, 0.01, Sign::Negative, 1.5),
        Err(StatsError::Alpha(1.5))
    );
    let b = Bootstrap::from_resamples(None, &grid(0.0, 1.0, 9), 0.95).unwrap();
    assert_eq!(b.p_equivalent(0.0), Err(StatsError::Margin(0.0)));
}

// ---- Holm ----

/// p = [0.01, 0.04, 0.03, 0.005], m = 4. Sorted: 0.005, 0.01, 0.03, 0.04, times 4, 3, 2, 1:
/// 0.02, 0.03, 0.06, 0.04; running maximum: 0.02, 0.03, 0.06, 0.06. In the family's order:
/// [0.03, 0.06, 0.06, 0.02]; at α = 0.05 the first and the last are rejected (Holm stops at
/// 0.03 > 0.05/2, so 0.04 < 0.05 is not rejected either).
#[test]
fn holm_on_the_textbook_example() {
    let h = holm(&[0.01, 0.04, 0.03, 0.005], 0.05).unwrap();
    let expected = [0.03, 0.06, 0.06, 0.02];
    for (a, e) in h.adjusted.iter().zip(expected) {
        assert!(close(*a, e, 1e-12), "{:?}", h.adjusted);
    }
    assert_eq!(h.rejected, [true, false, false, true]);
    // Capped at 1: 2 · 0.5 = 1, then max(1, 0.6) = 1.
    assert_eq!(holm(&[0.5, 0.6], 0.05).unwrap().adjusted, [1.0, 1.0]);
    assert_eq!(holm(&[], 0.05).unwrap().adjusted, Vec::<f64>::new());
    assert_eq!(holm(&[1.5], 0.05), Err(StatsError::PValue(1.5)));
}

// ---- a curve at a level ----

/// A straight line (0, 0) → (2, −4) → (4, −8) at x = 3: −6 exactly (halfway along the second
/// segment); never reaching the level gives None; a level at step 0 gives step 0's y.
#[test]
fn a_straight_curve_gives_the_interpolated_value() {
    let line = [(0.0, 0.0), (2.0, -4.0), (4.0, -8.0)];
    assert_eq!(value_at_level(&line, 3.0), Some(-6.0));
    assert_eq!(value_at_level(&line, 1.0), Some(-2.0));
    assert_eq!(value_at_level(&line, 2.0), Some(-4.0));
    assert_eq!(value_at_level(&line, 0.0), Some(0.0));
    assert_eq!(value_at_level(&line, 4.5), None);
    assert_eq!(value_at_level(&[(0.3, 5.0)], 0.3), Some(5.0));
    assert_eq!(value_at_level(&[(0.3, 5.0)], 0.4), None);
    assert_eq!(value_at_level(&[], 0.4), None);
}

/// x goes 0 → 1 → 0.2 → 1.2 (y 0, 10, 20, 30): 0.5 is crossed three times; the first
/// crossing gives 5 (the others 16.25 and 23).
#[test]
fn a_curve_crossing_twice_uses_the_first_crossing() {
    let curve = [(0.0, 0.0), (1.0, 10.0), (0.2, 20.0), (1.2, 30.0)];
    assert_eq!(value_at_level(&curve, 0.5), Some(5.0));
}

/// x decreasing 1 → 0.5 → 0 (y 0, 4, 8): at 0.75, y = 2.
#[test]
fn a_decreasing_curve_is_interpolated_too() {
    let curve = [(1.0, 0.0), (0.5, 4.0), (0.0, 8.0)];
    assert_eq!(value_at_level(&curve, 0.75), Some(2.0));
    assert_eq!(value_at_level(&curve, 0.25), Some(6.0));
}

// ---- the slope across few units ----

/// `count` units at x = 0..count with y = `line(x)`, `x_spread` either side of x in its items
/// and `seed_spread` either side of y in its two seeds' runs (3 clusters of 2 probe items).
fn units(count: usize, line: impl Fn(usize) -> f64, x_spread: f64, seed_spread: f64) -> Vec<Unit> {
    (0..count)
        .map(|u| Unit {
            x_items: vec![u as f64 - x_spread, u as f64 + x_spread],
            y_runs: vec![
                vec![line(u) - seed_spread; 6],
                vec![line(u) + seed_spread; 6],
            ],
        })
        .collect()
}

fn probe() -> Clusters {
    Clusters::new(&[0, 0, 1, 1, 2, 2]).unwrap()
}

/// Six users exactly on y = 2x + 1, measured without noise: every resample's slope is 2.
#[test]
fn an_exact_line_has_slope_two_and_no_width() {
    let s = slope_interval(
        &units(6, |u| 2.0 * u as f64 + 1.0, 0.0, 0.0),
        &probe(),
        2_000,
        0.95,
        17,
    )
    .unwrap();
    assert!(close(s.bootstrap.estimate.unwrap(), 2.0, 1e-12));
    let (low, high) = s.bootstrap.bounds.unwrap();
    assert!(
        close(low, 2.0, 1e-9) && close(high, 2.0, 1e-9),
        "[{low}, {high}]"
    );
    assert!(s.bootstrap.zero_width());
    let t = s.t_95.unwrap();
    assert!(close(t.low, 2.0, 1e-6) && close(t.high, 2.0, 1e-6), "{t:?}");
    assert_eq!(s.points[3], (3.0, 7.0));
    assert_eq!(ols_slope(&[1.0, 1.0], &[0.0, 1.0]), None);
}

/// x = 1..6, y = 2x + 1 + e with e = [1, −1, 0, 0, −1, 1] (orthogonal to 1 and to x − 3.5):
/// slope 2, SSE = 4, s² = 4 / 4 = 1, Sxx = 17.5, t(0.975, 4) = 2.776, so
/// 2 ± 2.776 / √17.5 = [1.33641, 2.66359].
#[test]
fn the_t_interval_of_the_slope_by_hand() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let e = [1.0, -1.0, 0.0, 0.0, -1.0, 1.0];
    let y: Vec<f64> = x.iter().zip(e).map(|(x, e)| 2.0 * x + 1.0 + e).collect();
    let t = ols_t_interval_95(&x, &y).unwrap();
    assert!(close(t.estimate, 2.0, 1e-12));
    assert!(
        close(t.low, 1.33641, 1e-5) && close(t.high, 2.66359, 1e-5),
        "{t:?}"
    );
    assert_eq!(ols_t_interval_95(&x[..2], &y[..2]), None);
}

/// Users scattered around y = 2x + 1 (the residuals above, and ±0.2 between seeds): both
/// intervals contain 2, and the bootstrap's width, coming mostly from which users are drawn,
/// is of the t-interval's order (resampling within users only would give a fraction of it).
#[test]
fn few_noisy_users_give_intervals_around_the_true_slope() {
    let e = [1.0, -1.0, 0.0, 0.0, -1.0, 1.0];
    let s = slope_interval(
        &units(6, |u| 2.0 * u as f64 + 1.0 + e[u], 0.0, 0.2),
        &probe(),
        4_000,
        0.95,
        19,
    )
    .unwrap();
    let t = s.t_95.unwrap();
    let (low, high) = s.bootstrap.bounds.unwrap();
    assert!(t.low < 2.0 && 2.0 < t.high, "{t:?}");
    assert!(low < 2.0 && 2.0 < high, "[{low}, {high}]");
    let ratio = (high - low) / (t.high - t.low);
    assert!(
        (0.4..2.0).contains(&ratio),
        "bootstrap [{low}, {high}] against {t:?}"
    );
}

/// Users exactly on the line in truth, but each one's x measured from items 1 either side of
/// it: the slope's interval must carry that measurement noise (ignoring it gives [2, 2]).
#[test]
fn the_noise_of_estimated_x_widens_the_slope_interval() {
    let s = slope_interval(
        &units(6, |u| 2.0 * u as f64 + 1.0, 1.0, 0.0),
        &probe(),
        4_000,
        0.95,
        23,
    )
    .unwrap();
    assert!(close(s.bootstrap.estimate.unwrap(), 2.0, 1e-12));
    let (low, high) = s.bootstrap.bounds.unwrap();
    assert!(high - low > 0.5, "[{low}, {high}]");
    assert!(low < 2.0 && 2.0 < high, "[{low}, {high}]");
}

/// Two users: half of the draws hold one user twice and have no slope; they are skipped and
/// counted, even when the user's two resampled x differ.
#[test]
fn draws_without_two_users_are_skipped_and_counted() {
    let two = units(2, |u| 2.0 * u as f64 + 1.0, 0.1, 0.0);
    let s = slope_interval(&two, &probe(), 4_000, 0.95, 29).unwrap();
    let share = s.bootstrap.defined_share();
    assert!(close(share, 0.5, 0.03), "defined in {share}");
    assert_eq!(s.t_95, None);
    assert_eq!(
        slope_interval(&two[..1], &probe(), 10, 0.95, 0).unwrap_err(),
        StatsError::NoSlope
    );
}

// ---- honesty in formatting ----

/// Equal bounds up to rounding are "all equal"; any real width is not.
#[test]
fn zero_width_allows_rounding_only() {
    assert!(zero_width(0.1 + 0.2, 0.3));
    assert!(zero_width(2.0, 2.0));
    assert!(zero_width(1e6, 1e6 + 1e-4));
    assert!(!zero_width(0.0, 1e-6));
    assert!(!zero_width(0.3, 0.31));
}
