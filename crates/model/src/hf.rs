//! Hugging Face checkpoints: `config.json` plus `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`. F32, F16 and BF16 tensors are read as f32.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::ModelError;

/// Where transformers 5 keeps a checkpoint's chat template.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// The safetensors files of a checkpoint, in memory, and which file holds which tensor.
#[derive(Debug)]
pub struct SafetensorsWeights {
    dir: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
    index: BTreeMap<String, usize>,
}

pub(crate) fn io_error(path: &Path, error: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

pub(crate) fn format_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl SafetensorsWeights {
    /// Opens `model.safetensors`, or the shards named by `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<String> = if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| io_error(&index_path, e))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| format_error(&index_path, e.to_string()))?;
            let map = json
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| format_error(&index_path, "no `weight_map` object"))?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            files
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for name in names {
            let path = dir.join(&name);
            let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
            let tensors =
                SafeTensors::deserialize(&bytes).map_err(|e| format_error(&path, e.to_string()))?;
            for tensor in tensors.names() {
                index.insert(tensor.to_string(), files.len());
            }
            files.push((path, bytes));
        }
        Ok(SafetensorsWeights {
            dir: dir.to_path_buf(),
            files,
            index,
        })
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every tensor's name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Refuses weights that hold a layer (tensors named `{layers_prefix}N.…`) at or past
    /// `layers`, the count config.json's `key` gives: the model would be built without it,
    /// without a word (issue #26: a smaller `num_hidden_layers` dropped a layer).
    pub(crate) fn check_layer_count(
        &self,
        layers_prefix: &str,
        (key, layers): (&str, usize),
    ) -> Result<(), ModelError> {
        let highest = self
            .index
            .keys()
            .filter_map(|name| {
                name.strip_prefix(layers_prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max();
        match highest {
            Some(layer) if layer >= layers => Err(format_error(
                &self.dir.join("config.json"),
                format!(
                    "`{key}` is {layers} but the weights hold layer {layer} (layers count from 0): \
                     a layer would be left out"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// A tensor as f32, row-major, with its shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        let &file = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.dir.clone(),
                tensor: name.to_string(),
            })?;
        let (path, bytes) = &self.files[file];
        let tensors =
            SafeTensors::deserialize(bytes).map_err(|e| format_error(path, e.to_string()))?;
        let view = tensors
            .tensor(name)
            .map_err(|e| format_error(path, e.to_string()))?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: path.clone(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok((view.shape().to_vec(), values))
    }
}
