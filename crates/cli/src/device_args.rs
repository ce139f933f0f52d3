//! `--backend` and `--device-index` for the commands that run a model outside a run config
//! (`score`, `generate`, `export`); a run config says the same in `[training]`. `--model` with
//! them for the commands that load one model and run it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bapo_model::LoadedModel;
use bapo_train::{Backend, BackendDevice};
use burn::tensor::Device;

#[derive(clap::Args)]
pub struct ModelArgs {
    /// The model: a GGUF file, a Hugging Face checkpoint folder, or a Hugging Face model id
    /// (`owner/name[@revision]`).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl ModelArgs {
    /// The model loaded on the device asked for, and that device.
    pub fn open(&self) -> Result<(LoadedModel, Device)> {
        let device = self.device.device()?;
        let loaded = LoadedModel::open(&self.model, &device)
            .with_context(|| format!("loading {}", self.model.display()))?;
        Ok((loaded, device))
    }
}

#[derive(clap::Args)]
pub struct DeviceArgs {
    /// `cpu` (pure Rust, the default build), `tch-cpu`, `cuda`, `wgpu` or `wgpu-cpu`: the
    /// last four need the binary built with their cargo feature (docs/backends.md).
    #[arg(long, default_value = "cpu")]
    backend: Backend,
    /// Which GPU, for `cuda` and `wgpu`.
    #[arg(long, default_value_t = 0)]
    device_index: usize,
}

impl DeviceArgs {
    /// The device, or why this binary or machine cannot give it.
    pub fn device(&self) -> Result<Device> {
        Ok(self.backend.device(self.device_index)?)
    }

    /// The same choice as run-config overrides (`--set` form), for commands that load a run.
    pub fn overrides(&self) -> Vec<String> {
        vec![
            format!("training.backend={:?}", self.backend.name()),
            format!("training.device_index={}", self.device_index),
        ]
    }
}
