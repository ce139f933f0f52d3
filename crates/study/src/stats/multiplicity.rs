//! Holm–Bonferroni: many comparisons tested at once without the family's error rate growing
//! with their number. Controls the chance of any false rejection at α under any dependence
//! between the tests (the study's comparisons share a reference and items), and rejects at
//! least what Bonferroni does.

use super::StatsError;

/// The Holm-adjusted p-values of a family, in the family's order, and which are rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct Holm {
    /// Adjusted p-values: a test is rejected at α exactly when its adjusted p-value is ≤ α.
    pub adjusted: Vec<f64>,
    pub rejected: Vec<bool>,
}

/// Holm's step-down procedure at `alpha`: with the p-values sorted, p₍ᵢ₎ (i = 1..m) is
/// adjusted to max over j ≤ i of min(1, (m − j + 1) · p₍ⱼ₎) (the running maximum keeps the
/// adjusted values in the order of the raw ones).
pub fn holm(p: &[f64], alpha: f64) -> Result<Holm, StatsError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::Alpha(alpha));
    }
    if let Some(bad) = p.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(StatsError::PValue(*bad));
    }
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        let scaled = ((m - rank) as f64 * p[i]).min(1.0);
        running = running.max(scaled);
        adjusted[i] = running;
    }
    let rejected = adjusted.iter().map(|&a| a <= alpha).collect();
    Ok(Holm { adjusted, rejected })
}
