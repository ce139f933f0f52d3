//! `checkpoint`: a checkpoint folder (`state.json`, `trainable.safetensors`,
//! `optimizer.safetensors`), which bapo wrote and a user may edit or damage, found and read
//! as `--resume` does and restored into the policy and AdamW. What is accepted must then
//! train: one forward, backward and optimizer step on the restored state.

use bapo_model::{CausalLm, CausalModel, LoadedModel};
use bapo_train::checkpoint::{self, CheckpointState};
use bapo_train::config::OptimizerSection;
use bapo_train::optimizer::AdamW;
use bapo_train::trainable_parameters;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::FileSet;
use crate::{Harness, Input, Scratch, fixture_dir};

const FILES: [&str; 3] = [
    "state.json",
    "trainable.safetensors",
    "optimizer.safetensors",
];

pub struct CheckpointTarget {
    policy: CausalLm,
    seeds: FileSet,
    run: Scratch,
    device: Device,
}

/// One optimizer step of `policy` on a fixed sequence: the first thing a resumed run does.
fn train_step(policy: CausalLm, optimizer: &mut AdamW, device: &Device) -> CausalLm {
    let ids =
        Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 35, 36, 14, 2], [1, 5]), device);
    let loss = policy.hidden_states(ids).sum();
    let mut grads = GradientsParams::from_grads(loss.backward(), &policy);
    optimizer.step(policy, &mut grads, 1e-3, 1.0)
}

impl CheckpointTarget {
    pub fn new() -> Result<Self, String> {
        let device = Device::flex().autodiff();
        let model = LoadedModel::open(&fixture_dir(), &device).map_err(|e| e.to_string())?;
        let policy = model.model;
        let mut optimizer = AdamW::new(OptimizerSection::default());
        let trained = train_step(policy.clone(), &mut optimizer, &device);
        let (moments, optimizer_steps) = optimizer.state_tensors();
        let state = CheckpointState {
            step: 1,
            optimizer_steps,
            config_sha256: "0".repeat(64),
            data_sha256: Some("1".repeat(64)),
            model_sha256: Some("2".repeat(64)),
        };
        let seed_run = Scratch::new("checkpoint-seed");
        let dir = checkpoint::write(
            seed_run.path(),
            &state,
            &trainable_parameters(&trained),
            &moments,
            1,
        )
        .map_err(|e| e.to_string())?;
        let seeds = FileSet::read(&dir, &FILES)?;
        let run = Scratch::new("checkpoint");
        std::fs::create_dir_all(checkpoint::checkpoints_dir(run.path()).join("step-000001"))
            .map_err(|e| e.to_string())?;
        Ok(CheckpointTarget {
            policy,
            seeds,
            run,
            device,
        })
    }
}

impl Harness for CheckpointTarget {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    fn seeds(&self) -> Vec<Input> {
        self.seeds.seeds(&FILES)
    }

    fn run(&mut self, input: &Input) -> Result<(), String> {
        let dir = checkpoint::checkpoints_dir(self.run.path()).join("step-000001");
        self.seeds.write(&dir, input)?;
        let found = checkpoint::latest(self.run.path())
            .map_err(|e| e.to_string())?
            .ok_or("no checkpoint found")?;
        let mut optimizer = AdamW::new(OptimizerSection::default());
        let policy = checkpoint::restore(&found, self.policy.clone(), &mut optimizer, &self.device)
            .map_err(|e| e.to_string())?;
        train_step(policy, &mut optimizer, &self.device);
        Ok(())
    }

    fn input_size(&self, input: &Input) -> usize {
        self.seeds.size(input)
    }
}
