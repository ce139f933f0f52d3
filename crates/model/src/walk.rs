//! Walking a module's parameters with their paths (`layers.0.attn.q_proj.weight`): Burn's
//! `ModuleMapper` and `ModuleVisitor` announce each submodule as they enter and leave it,
//! and every walk that names parameters (LoRA's count, the quantizer, the optimizer, the
//! checkpoint's reader and writer) keeps the same stack. Here it is kept once.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Where a parameter sits in its module tree, as the names of the modules around it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamPath(Vec<String>);

impl ParamPath {
    /// The path as checkpoints and the optimizer's state name it: `layers.0.attn.q.weight`.
    pub fn dotted(&self) -> String {
        self.0.join(".")
    }

    /// The outermost name (`layers`, `blocks`, `embed_tokens`, …).
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// Whether the path ends with `names` (`["lora", "a"]`: a LoRA adapter's first factor).
    pub fn ends_with(&self, names: &[&str]) -> bool {
        self.0.len() >= names.len()
            && self.0[self.0.len() - names.len()..]
                .iter()
                .zip(names)
                .all(|(a, b)| a == b)
    }
}

/// A `ModuleMapper` that is told each float parameter's path.
pub trait PathMapper {
    fn map_float<const D: usize>(
        &mut self,
        path: &ParamPath,
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>>;
}

/// A `ModuleVisitor` that is told each float parameter's path.
pub trait PathVisitor {
    fn visit_float<const D: usize>(&mut self, path: &ParamPath, param: &Param<Tensor<D>>);
}

/// `module` mapped by `mapper`, parameter by parameter, each with its path.
pub fn map_with_paths<M: Module, P: PathMapper>(module: M, mapper: &mut P) -> M {
    module.map(&mut WithPath {
        path: ParamPath::default(),
        inner: mapper,
    })
}

/// Every float parameter of `module` shown to `visitor`, with its path.
pub fn visit_with_paths<M: Module, V: PathVisitor>(module: &M, visitor: &mut V) {
    module.visit(&mut WithPath {
        path: ParamPath::default(),
        inner: visitor,
    })
}

/// Burn's mapper or visitor around ours: keeps the path.
struct WithPath<'a, T> {
    path: ParamPath,
    inner: &'a mut T,
}

impl<P: PathMapper> ModuleMapper for WithPath<'_, P> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.0.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.0.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.inner.map_float(&self.path, param)
    }
}

impl<V: PathVisitor> ModuleVisitor for WithPath<'_, V> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.0.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.0.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.inner.visit_float(&self.path, param)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_dotted_and_matched_at_its_end() {
        let path = ParamPath(vec!["layers".into(), "0".into(), "lora".into(), "a".into()]);
        assert_eq!(path.dotted(), "layers.0.lora.a");
        assert_eq!(path.first(), Some("layers"));
        assert!(path.ends_with(&["lora", "a"]));
        assert!(!path.ends_with(&["lora", "b"]));
        assert!(!path.ends_with(&["0", "a"]));
        assert!(!ParamPath::default().ends_with(&["a"]));
    }
}
