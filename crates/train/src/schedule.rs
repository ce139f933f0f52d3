//! The learning rate at each optimizer step: linear warmup from 0, then cosine or linear decay
//! to 0 at the last step, as transformers' `get_cosine_schedule_with_warmup` and
//! `get_linear_schedule_with_warmup` compute it (the rate used for step `s`, counting from 0).
//! A pure function of the step, so a resumed run needs no scheduler state.

use crate::config::ScheduleKind;

/// The learning rate of step `step` (0-based) of `total` steps.
pub fn learning_rate(
    kind: ScheduleKind,
    peak: f64,
    step: usize,
    warmup_steps: usize,
    total: usize,
) -> f64 {
    if step < warmup_steps {
        return peak * step as f64 / warmup_steps.max(1) as f64;
    }
    let decay_steps = total.saturating_sub(warmup_steps).max(1) as f64;
    let progress = (step - warmup_steps) as f64 / decay_steps;
    match kind {
        ScheduleKind::Constant => peak,
        ScheduleKind::Linear => peak * (1.0 - progress).max(0.0),
        // num_cycles = 0.5: half a cosine from the peak to 0.
        ScheduleKind::Cosine => {
            peak * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values of transformers 5.24's schedulers with lr 1.0, 10 steps, 2 warmup steps
    // (`[s.get_last_lr()[0] for each step]` of get_cosine/linear_schedule_with_warmup).
    #[test]
    fn matches_transformers() {
        let cosine = [
            0.0,
            0.5,
            1.0,
            0.9619397662556434,
            0.8535533905932737,
            0.6913417161825449,
            0.5,
            0.30865828381745514,
            0.14644660940672627,
            0.03806023374435663,
        ];
        let linear = [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125];
        for step in 0..10 {
            let c = learning_rate(ScheduleKind::Cosine, 1.0, step, 2, 10);
            let l = learning_rate(ScheduleKind::Linear, 1.0, step, 2, 10);
            assert!((c - cosine[step]).abs() < 1e-12, "cosine step {step}: {c}");
            assert!((l - linear[step]).abs() < 1e-12, "linear step {step}: {l}");
        }
    }
}
