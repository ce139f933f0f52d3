//! `hf-model`: a Hugging Face checkpoint folder as `--model`: `config.json` and
//! `model.safetensors` (one of them mutated), read into a Llama with the fixture's tokenizer,
//! then one scored completion.

use bapo_model::LoadedModel;
use burn::tensor::Device;

use super::{FileSet, use_model};
use crate::{Harness, Input, Scratch, fixture_dir};

/// The files of the folder; the first two are mutated.
const FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

pub struct HfModelTarget {
    files: FileSet,
    dir: Scratch,
    device: Device,
}

impl HfModelTarget {
    pub fn new() -> Result<Self, String> {
        Ok(HfModelTarget {
            files: FileSet::read(&fixture_dir(), &FILES)?,
            dir: Scratch::new("hf-model"),
            device: Device::flex(),
        })
    }
}

impl Harness for HfModelTarget {
    fn name(&self) -> &'static str {
        "hf-model"
    }

    fn seeds(&self) -> Vec<Input> {
        self.files.seeds(&FILES[..2])
    }

    fn run(&mut self, input: &Input) -> Result<(), String> {
        self.files.write(self.dir.path(), input)?;
        let model = LoadedModel::open(self.dir.path(), &self.device).map_err(|e| e.to_string())?;
        use_model(&model, &self.device)
    }

    fn input_size(&self, input: &Input) -> usize {
        self.files.size(input)
    }
}
