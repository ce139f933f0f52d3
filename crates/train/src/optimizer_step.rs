//! One optimizer step, the same for a run and for the benchmark: each micro-batch's losses
//! (checked finite) and their gradients accumulated, the global gradient norm (checked
//! finite), PyTorch's clipping, then AdamW.

use std::collections::BTreeMap;

use bapo_model::CausalLm;
use burn::optim::GradientsAccumulator;
use burn::tensor::Tensor;

use crate::TrainError;
use crate::example::AnchoredExample;
use crate::optimizer::{AdamW, clip_coefficient, global_grad_norm};
use crate::step::{GradientSink, StepSetup, micro_batch};

/// What a step did.
pub struct StepReport {
    /// Every metric summed over the step's examples (`loss` included); divide by their number
    /// for the means a log shows.
    pub sums: BTreeMap<String, f64>,
    /// Tokens of its sequences, as TRL counts them.
    pub tokens: usize,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
}

/// Why a step stopped.
pub enum StepError {
    /// A loss of micro-batch `micro_batch`, or (with `None`) the gradient norm, is NaN or
    /// infinite: the step was not applied.
    NonFinite {
        what: &'static str,
        micro_batch: Option<usize>,
    },
    Failed(TrainError),
}

impl From<TrainError> for StepError {
    fn from(e: TrainError) -> Self {
        StepError::Failed(e)
    }
}

fn values(t: &Tensor<1>) -> Result<Vec<f64>, TrainError> {
    t.to_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .map_err(TrainError::TensorData)
}

/// One optimizer step of `policy` over `micro_batches` at learning rate `lr`. The loss of
/// each micro-batch is divided by the step's example count, so that accumulation gives the
/// mean over the step, as TRL does.
pub fn optimizer_step(
    policy: CausalLm,
    optimizer: &mut AdamW,
    setup: &StepSetup<'_>,
    micro_batches: &[Vec<&AnchoredExample>],
    lr: f64,
) -> Result<(CausalLm, StepReport), StepError> {
    let examples: usize = micro_batches.iter().map(Vec::len).sum();
    let mut accumulator = GradientsAccumulator::<CausalLm>::new();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut tokens = 0;
    for (index, batch) in micro_batches.iter().enumerate() {
        let mut sink = GradientSink {
            policy: &policy,
            accumulator: &mut accumulator,
            step_examples: examples,
        };
        let out = micro_batch(setup, batch, &mut sink)?;
        tokens += out.tokens;
        let per_example = values(&out.output.losses)?;
        if per_example.iter().any(|v| !v.is_finite()) {
            return Err(StepError::NonFinite {
                what: "loss",
                micro_batch: Some(index),
            });
        }
        *sums.entry("loss".into()).or_default() += per_example.iter().sum::<f64>();
        for (name, metric) in out.output.metrics.iter() {
            *sums.entry(name.to_string()).or_default() += values(metric)?.iter().sum::<f64>();
        }
    }
    let mut grads = accumulator.grads();
    let grad_norm = global_grad_norm(&policy, &grads);
    if !grad_norm.is_finite() {
        return Err(StepError::NonFinite {
            what: "gradient norm",
            micro_batch: None,
        });
    }
    let coefficient = clip_coefficient(grad_norm, setup.max_grad_norm);
    let policy = optimizer.step(policy, &mut grads, lr, coefficient);
    Ok((
        policy,
        StepReport {
            sums,
            tokens,
            grad_norm,
        },
    ))
}
