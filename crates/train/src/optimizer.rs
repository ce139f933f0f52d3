//! AdamW exactly as `torch.optim.AdamW` computes it (decoupled weight decay, bias-corrected
//! moments, `eps` added to the corrected square root), with PyTorch's global-norm clipping
//! (`torch.nn.utils.clip_grad_norm_`), and state keyed by parameter path so that a checkpoint
//! restores it in another process.
//!
//! Why not Burn's `AdamWConfig`: its defaults differ from PyTorch's, its clipping is per
//! tensor, and its state is keyed by `ParamId`s that are random per process.

use std::collections::BTreeMap;

use bapo_model::walk::{ParamPath, PathMapper, map_with_paths};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use crate::config::OptimizerSection;

/// Why saved optimizer state cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptimizerStateError {
    #[error(
        "optimizer step count {step} of `{path}` is more than a run makes (at most {})",
        i32::MAX
    )]
    StepCount { path: String, step: u64 },
    #[error("optimizer state `{0}` is missing")]
    Missing(String),
    #[error("optimizer state for `{0}`, which is not a trainable parameter")]
    NotTrainable(String),
    #[error("optimizer state `{path}.{moment}` has {len} values for a parameter of {expected}")]
    Size {
        path: String,
        moment: &'static str,
        len: usize,
        expected: usize,
    },
}

/// First and second moments of one parameter, flattened, and its step count.
#[derive(Debug, Clone)]
pub struct Moments {
    pub exp_avg: Tensor<1>,
    pub exp_avg_sq: Tensor<1>,
    pub step: u64,
}

/// The optimizer.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub settings: OptimizerSection,
    pub state: BTreeMap<String, Moments>,
}

impl AdamW {
    pub fn new(settings: OptimizerSection) -> Self {
        AdamW {
            settings,
            state: BTreeMap::new(),
        }
    }

    /// One update of every parameter of `module` that has a gradient in `grads`, with the
    /// gradients multiplied by `grad_scale` first (the clipping coefficient).
    pub fn step<M: Module>(
        &mut self,
        module: M,
        grads: &mut GradientsParams,
        learning_rate: f64,
        grad_scale: f64,
    ) -> M {
        let mut mapper = Update {
            optimizer: self,
            grads,
            learning_rate,
            grad_scale,
        };
        map_with_paths(module, &mut mapper)
    }

    /// The state as f32 tensors: `<path>.exp_avg`, `<path>.exp_avg_sq`, and the step counts.
    pub fn state_tensors(&self) -> (BTreeMap<String, TensorData>, BTreeMap<String, u64>) {
        let mut tensors = BTreeMap::new();
        let mut steps = BTreeMap::new();
        for (path, m) in &self.state {
            tensors.insert(
                format!("{path}.exp_avg"),
                m.exp_avg.to_data().convert::<f32>(),
            );
            tensors.insert(
                format!("{path}.exp_avg_sq"),
                m.exp_avg_sq.to_data().convert::<f32>(),
            );
            steps.insert(path.clone(), m.step);
        }
        (tensors, steps)
    }

    /// Restores [`AdamW::state_tensors`] onto `device`.
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, TensorData>,
        steps: &BTreeMap<String, u64>,
        device: &Device,
    ) -> Result<(), OptimizerStateError> {
        self.state.clear();
        for (path, &step) in steps {
            // The bias corrections raise β to the step as an i32.
            if step > i32::MAX as u64 {
                return Err(OptimizerStateError::StepCount {
                    path: path.clone(),
                    step,
                });
            }
            let get = |suffix: &str| {
                let key = format!("{path}.{suffix}");
                tensors
                    .get(&key)
                    .map(|d| {
                        let n = d.shape().iter().product::<usize>();
                        Tensor::<1>::from_data(d.clone(), device).reshape([n])
                    })
                    .ok_or(OptimizerStateError::Missing(key))
            };
            self.state.insert(
                path.clone(),
                Moments {
                    exp_avg: get("exp_avg")?,
                    exp_avg_sq: get("exp_avg_sq")?,
                    step,
                },
            );
        }
        Ok(())
    }
}

struct Update<'a> {
    optimizer: &'a mut AdamW,
    grads: &'a mut GradientsParams,
    learning_rate: f64,
    grad_scale: f64,
}

impl PathMapper for Update<'_> {
    fn map_float<const D: usize>(
        &mut self,
        path: &ParamPath,
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let s = &self.optimizer.settings;
        let (lr, b1, b2) = (self.learning_rate, s.beta1, s.beta2);
        let shape = tensor.dims();
        let n = shape.iter().product::<usize>();
        let require_grad = tensor.is_require_grad();
        let value = tensor.inner().reshape([n]);
        let grad = grad.reshape([n]);
        let grad = if self.grad_scale == 1.0 {
            grad
        } else {
            grad.mul_scalar(self.grad_scale)
        };

        let path = path.dotted();
        let previous = self.optimizer.state.remove(&path);
        let (exp_avg, exp_avg_sq, step) = match previous {
            Some(m) => (m.exp_avg, m.exp_avg_sq, m.step + 1),
            None => (grad.zeros_like(), grad.zeros_like(), 1),
        };
        let exp_avg = exp_avg.mul_scalar(b1) + grad.clone().mul_scalar(1.0 - b1);
        let exp_avg_sq = exp_avg_sq.mul_scalar(b2) + grad.square().mul_scalar(1.0 - b2);
        let bias_correction1 = 1.0 - b1.powi(step as i32);
        let bias_correction2 = 1.0 - b2.powi(step as i32);
        let denominator = exp_avg_sq
            .clone()
            .sqrt()
            .div_scalar(bias_correction2.sqrt())
            .add_scalar(s.eps);
        let decayed = value.mul_scalar(1.0 - lr * s.weight_decay);
        let updated = decayed - (exp_avg.clone() / denominator).mul_scalar(lr / bias_correction1);
        self.optimizer.state.insert(
            path,
            Moments {
                exp_avg,
                exp_avg_sq,
                step,
            },
        );

        let mut updated = Tensor::<D>::from_inner(updated.reshape(shape));
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// The global L2 norm of every gradient in `grads` (for the parameters of `module`).
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredNorm { grads, total: None };
    module.visit(&mut visitor);
    visitor
        .total
        .map(|t| t.sqrt().into_scalar::<f64>())
        .unwrap_or(0.0)
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + squares,
                None => squares,
            });
        }
    }
}

/// PyTorch's clipping coefficient: `min(1, max_norm / (norm + 1e-6))`; 1 when `max_norm` is 0.
pub fn clip_coefficient(norm: f64, max_norm: f64) -> f64 {
    if max_norm <= 0.0 {
        1.0
    } else {
        (max_norm / (norm + 1e-6)).min(1.0)
    }
}
