//! Checkpoints: `<run>/checkpoints/step-NNNNNN/` with the trainable parameters (the LoRA
//! factors, or every weight for a full fine-tune) and the optimizer moments as safetensors,
//! keyed by parameter path, and `state.json` (step, optimizer step counts, and a hash of the
//! resolved config, so that a resume with another config is refused).
//!
//! A checkpoint is written to `step-NNNNNN.partial/` and renamed into place: a run killed while
//! writing leaves the previous checkpoint as the last complete one. The data cursor and the
//! learning rate are functions of the step, and the only randomness (LoRA's initial factors)
//! is restored with the parameters, so the step alone resumes everything else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::optimizer::{AdamW, OptimizerStateError};
use crate::params::{load_trainable, trainable_sizes};

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps done.
    pub step: usize,
    /// AdamW's per-parameter step counts.
    pub optimizer_steps: BTreeMap<String, u64>,
    /// sha256 of the resolved config that made it.
    pub config_sha256: String,
    /// sha256 of the data file and of the model it was trained from (absent in checkpoints
    /// written before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
}

/// A checkpoint read back.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: CheckpointState,
    pub parameters: BTreeMap<String, TensorData>,
    pub optimizer: BTreeMap<String, TensorData>,
}

impl Checkpoint {
    /// Its trainable values put into `module`: every one must name a parameter of `module`
    /// with the same shape.
    pub fn load_parameters<M: Module>(&self, module: M) -> Result<M, TrainError> {
        load_trainable(module, &self.parameters).map_err(|source| TrainError::Parameters {
            checkpoint: self.dir.clone(),
            source,
        })
    }
}

const PARAMETERS: &str = "trainable.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
use bapo_rundir::files::CHECKPOINT_STATE_FILE as STATE;

/// The folder of checkpoints of a run.
pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join(bapo_rundir::files::CHECKPOINTS_DIR)
}

/// The folder of the checkpoint of `step`.
pub fn step_dir(run: &Path, step: usize) -> PathBuf {
    checkpoints_dir(run).join(format!("step-{step:06}"))
}

fn encode(tensors: &BTreeMap<String, TensorData>, path: &Path) -> Result<Vec<u8>, TrainError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, data)| {
            let values = data.try_to_vec::<f32>().unwrap_or_default();
            (
                name.clone(),
                data.shape().to_vec(),
                values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| TrainError::safetensors(path, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| TrainError::safetensors(path, e))
}

/// The name of the first tensor of `tensors` holding a NaN or an infinity, if any.
pub fn first_non_finite(tensors: &BTreeMap<String, TensorData>) -> Option<String> {
    tensors
        .iter()
        .find(|(_, data)| {
            data.as_slice::<f32>()
                .is_ok_and(|values| values.iter().any(|x| !x.is_finite()))
        })
        .map(|(name, _)| name.clone())
}

/// Reads a safetensors file of a checkpoint: f32 tensors only, every value finite (a NaN
/// would be resumed, or exported, as trained weights).
fn decode(path: &Path) -> Result<BTreeMap<String, TensorData>, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| TrainError::safetensors(path, e))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(TrainError::NotF32 {
                path: path.to_path_buf(),
                name,
                dtype: view.dtype(),
            });
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if values.iter().any(|x| !x.is_finite()) {
            return Err(TrainError::NonFiniteInCheckpoint {
                path: path.to_path_buf(),
                name,
            });
        }
        out.insert(name, TensorData::new(values, view.shape().to_vec()));
    }
    Ok(out)
}

/// Writes the checkpoint of `state.step` atomically, then removes all but the newest `keep`.
pub fn write(
    run: &Path,
    state: &CheckpointState,
    parameters: &BTreeMap<String, TensorData>,
    optimizer: &BTreeMap<String, TensorData>,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    let final_dir = step_dir(run, state.step);
    let partial = final_dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| TrainError::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| TrainError::io(&partial, e))?;
    let files = [
        (PARAMETERS, encode(parameters, &partial.join(PARAMETERS))?),
        (OPTIMIZER, encode(optimizer, &partial.join(OPTIMIZER))?),
        (
            STATE,
            serde_json::to_vec_pretty(state)
                .map_err(|e| TrainError::json(&partial.join(STATE), e))?,
        ),
    ];
    for (name, bytes) in files {
        let path = partial.join(name);
        std::fs::write(&path, bytes).map_err(|e| TrainError::io(&path, e))?;
    }
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    std::fs::rename(&partial, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;

    let mut steps = complete_steps(run)?;
    steps.sort_unstable();
    while steps.len() > keep.max(1) {
        let old = step_dir(run, steps.remove(0));
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    Ok(final_dir)
}

/// Steps of the complete checkpoints of `run`.
fn complete_steps(run: &Path) -> Result<Vec<usize>, TrainError> {
    let dir = checkpoints_dir(run);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut steps = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| TrainError::io(&dir, e))? {
        let path = entry.map_err(|e| TrainError::io(&dir, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok())
            && path.join(STATE).exists()
        {
            steps.push(step);
        }
    }
    Ok(steps)
}

/// Reads the checkpoint in `dir`.
pub fn read(dir: &Path) -> Result<Checkpoint, TrainError> {
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| TrainError::json(&state_path, e))?;
    // The step names the data the run resumes at; its folder's name says which it is (an
    // edited `step` once resumed at step 299 with the weights of step 200; issue #26).
    let folder_step = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("step-"))
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(folder_step) = folder_step
        && folder_step != state.step
    {
        return Err(TrainError::CheckpointStepMismatch {
            state: state_path,
            recorded: state.step,
            folder_step,
        });
    }
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state,
        parameters: decode(&dir.join(PARAMETERS))?,
        optimizer: decode(&dir.join(OPTIMIZER))?,
    })
}

/// Puts `checkpoint` into a run: its trainable values into `module` (every one must name a
/// parameter of the same shape) and its moments into `optimizer`, on `device`.
pub fn restore<M: Module>(
    checkpoint: &Checkpoint,
    module: M,
    optimizer: &mut AdamW,
    device: &Device,
) -> Result<M, TrainError> {
    let fail = |source: OptimizerStateError| TrainError::OptimizerState {
        checkpoint: checkpoint.dir.clone(),
        source,
    };
    let module = checkpoint.load_parameters(module)?;
    optimizer
        .load_state(
            &checkpoint.optimizer,
            &checkpoint.state.optimizer_steps,
            device,
        )
        .map_err(fail)?;
    // The next step adds each moment to its parameter's gradient: they must have its size.
    let sizes = trainable_sizes(&module);
    for (path, moments) in &optimizer.state {
        let Some(&expected) = sizes.get(path) else {
            return Err(fail(OptimizerStateError::NotTrainable(path.clone())));
        };
        for (moment, m) in [
            ("exp_avg", &moments.exp_avg),
            ("exp_avg_sq", &moments.exp_avg_sq),
        ] {
            if m.dims()[0] != expected {
                return Err(fail(OptimizerStateError::Size {
                    path: path.clone(),
                    moment,
                    len: m.dims()[0],
                    expected,
                }));
            }
        }
    }
    Ok(module)
}

/// The newest complete checkpoint of `run`, if any. One that cannot be read is refused,
/// naming the newest older checkpoint that reads whole, if there is one, to resume from
/// instead (nothing is removed).
pub fn latest(run: &Path) -> Result<Option<Checkpoint>, TrainError> {
    let mut steps = complete_steps(run)?;
    steps.sort_unstable();
    let Some((&newest, older)) = steps.split_last() else {
        return Ok(None);
    };
    let newest = step_dir(run, newest);
    read(&newest).map(Some).map_err(|error| {
        let intact = older
            .iter()
            .rev()
            .map(|&step| step_dir(run, step))
            .find(|dir| read(dir).is_ok());
        TrainError::DamagedCheckpoint {
            newest,
            error: Box::new(error),
            intact,
        }
    })
}
