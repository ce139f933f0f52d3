//! `gguf`: a GGUF file as `--model`: header, metadata, tensor directory, dequantisation, the
//! Llama built from it, its tokenizer and chat template, then one scored completion.

use bapo_model::LoadedModel;
use burn::tensor::Device;

use super::use_model;
use crate::gguf_seed::tiny_gguf;
use crate::{Harness, Input, Scratch, fixture_dir};

pub struct GgufTarget {
    seed: Vec<u8>,
    scratch: Scratch,
    device: Device,
}

const FILE: &str = "model.gguf";

impl GgufTarget {
    pub fn new() -> Result<Self, String> {
        Ok(GgufTarget {
            seed: tiny_gguf(&fixture_dir())?,
            scratch: Scratch::new("gguf"),
            device: Device::flex(),
        })
    }
}

impl Harness for GgufTarget {
    fn name(&self) -> &'static str {
        "gguf"
    }

    fn seeds(&self) -> Vec<Input> {
        vec![Input::new(FILE, self.seed.clone())]
    }

    fn run(&mut self, input: &Input) -> Result<(), String> {
        super::write(self.scratch.path(), FILE, &input.bytes)?;
        let path = self.scratch.path().join(FILE);
        let model = LoadedModel::open(&path, &self.device).map_err(|e| e.to_string())?;
        use_model(&model, &self.device)
    }

    fn input_size(&self, input: &Input) -> usize {
        input.bytes.len()
    }
}
