//! Parameters by path (`layers.3.attention.q_proj.weight.lora.b`): the stable names that
//! checkpoints and optimizer state are keyed by. Burn's `ParamId`s are random per process, so
//! they cannot identify a parameter across a restart.

use std::collections::BTreeMap;

use bapo_model::walk::{ParamPath, PathMapper, PathVisitor, map_with_paths, visit_with_paths};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

/// The trainable (gradient-carrying) parameters of `module`, by path, as f32 data.
pub fn trainable_parameters<M: Module>(module: &M) -> BTreeMap<String, TensorData> {
    collect(module, true).found
}

/// The number of values of each trainable parameter of `module`, by path (shapes only: no
/// data is copied).
pub fn trainable_sizes<M: Module>(module: &M) -> BTreeMap<String, usize> {
    collect(module, false).sizes
}

fn collect<M: Module>(module: &M, copy_data: bool) -> Collector {
    let mut collector = Collector {
        copy_data,
        found: BTreeMap::new(),
        sizes: BTreeMap::new(),
    };
    visit_with_paths(module, &mut collector);
    collector
}

/// Number of trainable scalars in `module` (shapes only: no data is copied).
pub fn trainable_count<M: Module>(module: &M) -> usize {
    struct Counter(usize);
    impl ModuleVisitor for Counter {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if value.is_require_grad() {
                self.0 += value.dims().iter().product::<usize>();
            }
        }
    }
    let mut counter = Counter(0);
    module.visit(&mut counter);
    counter.0
}

struct Collector {
    /// Whether to copy each parameter's values into `found`, or only note its size.
    copy_data: bool,
    found: BTreeMap<String, TensorData>,
    sizes: BTreeMap<String, usize>,
}

impl PathVisitor for Collector {
    fn visit_float<const D: usize>(&mut self, path: &ParamPath, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            let path = path.dotted();
            self.sizes
                .insert(path.clone(), value.dims().iter().product::<usize>());
            if self.copy_data {
                self.found.insert(path, value.into_data().convert::<f32>());
            }
        }
    }
}

/// A parameter set that does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    #[error("parameter `{0}` is in the checkpoint but not in the model")]
    Unknown(String),
    #[error("parameter `{path}` has shape {found:?} in the checkpoint, {expected:?} in the model")]
    Shape {
        path: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("the model's trainable parameter `{0}` is missing from the checkpoint")]
    Missing(String),
}

/// Replaces the trainable parameters of `module` by `values` (every one must be given),
/// keeping each parameter's id and gradient requirement.
pub fn load_trainable<M: Module>(
    module: M,
    values: &BTreeMap<String, TensorData>,
) -> Result<M, ParameterError> {
    let mut loader = Loader {
        values,
        used: Vec::new(),
        error: None,
    };
    let module = map_with_paths(module, &mut loader);
    if let Some(error) = loader.error {
        return Err(error);
    }
    if let Some(unused) = values.keys().find(|k| !loader.used.contains(k)) {
        return Err(ParameterError::Unknown(unused.clone()));
    }
    Ok(module)
}

struct Loader<'a> {
    values: &'a BTreeMap<String, TensorData>,
    used: Vec<String>,
    error: Option<ParameterError>,
}

impl PathMapper for Loader<'_> {
    fn map_float<const D: usize>(
        &mut self,
        path: &ParamPath,
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        if !tensor.is_require_grad() || self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let path = path.dotted();
        let Some(data) = self.values.get(&path) else {
            self.error = Some(ParameterError::Missing(path));
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let expected = tensor.dims().to_vec();
        if data.shape().to_vec() != expected {
            self.error = Some(ParameterError::Shape {
                path,
                expected,
                found: data.shape().to_vec(),
            });
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let device = tensor.device();
        let loaded = Tensor::<D>::from_data(data.clone(), &device).require_grad();
        self.used.push(path);
        Param::from_mapped_value(id, loaded, mapper)
    }
}
