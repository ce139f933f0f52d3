//! How numbers are printed: fixed decimals, no `-0.0`, intervals that say what they rest on.

use crate::stats::Bootstrap;

/// `v` with `decimals` decimals (a sign always when `signed`), never "-0.0".
pub fn number(v: f64, decimals: usize, signed: bool) -> String {
    let text = if signed {
        format!("{v:+.decimals$}")
    } else {
        format!("{v:.decimals$}")
    };
    let all_zero = text.chars().all(|c| matches!(c, '0' | '.' | '-' | '+'));
    if all_zero && text.starts_with('-') {
        let rest = &text[1..];
        return if signed {
            format!("+{rest}")
        } else {
            rest.to_string()
        };
    }
    text
}

/// A bootstrap as `estimate [low, high]` in display units (`scale`): "not reached" without an
/// estimate, "(all seeds equal)" for a zero-width interval (identical runs are not a
/// certainty), and "items only" when one seed carries no seed noise.
pub fn interval(b: &Bootstrap, scale: f64, decimals: usize, signed: bool) -> String {
    let Some(estimate) = b.estimate else {
        return "not reached".into();
    };
    let show = |v: f64| number(v * scale, decimals, signed);
    let mut text = match b.bounds {
        None => format!("{} (no resample defined)", show(estimate)),
        Some(_) if b.zero_width() => format!("{} (all seeds equal)", show(estimate)),
        Some((low, high)) => format!("{} [{}, {}]", show(estimate), show(low), show(high)),
    };
    if b.items_only {
        text += " items only";
    }
    text
}

/// Decimals of a measure shown at `scale`: points get 1, nats 3.
pub fn decimals(scale: f64) -> usize {
    if scale >= 10.0 { 1 } else { 3 }
}

/// A p-value: 4 decimals.
pub fn p_value(p: f64) -> String {
    format!("{p:.4}")
}

/// A learning rate as written in configs: `5e-4`.
pub fn rate(lr: f64) -> String {
    format!("{lr:e}")
}

/// A share as a percentage without decimals.
pub fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// One Markdown table row.
pub fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// A Markdown table's header and rule: the first column left-aligned, the rest right.
pub fn header(cells: &[&str]) -> String {
    let rule: Vec<&str> = (0..cells.len())
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    format!("| {} |\n|{}|\n", cells.join(" | "), rule.join("|"))
}
