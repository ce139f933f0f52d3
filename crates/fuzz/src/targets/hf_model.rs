//! `hf-model`: a Hugging Face checkpoint folder as `--model`: `config.json` and
//! `model.safetensors` (one of them mutated), read into a Llama with the fixture's tokenizer,
//! then one scored completion.

use bapo_model::LoadedModel;
use burn::tensor::Device;

use super::{read, use_model, write};
use crate::{Harness, Input, Scratch, fixture_dir};

/// The files of the folder; the first two are mutated.
const FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

pub struct HfModelTarget {
    files: Vec<(&'static str, Vec<u8>)>,
    dir: Scratch,
    device: Device,
}

impl HfModelTarget {
    pub fn new() -> Result<Self, String> {
        let fixture = fixture_dir();
        let files = FILES
            .iter()
            .map(|name| Ok((*name, read(&fixture, name)?)))
            .collect::<Result<_, String>>()?;
        Ok(HfModelTarget {
            files,
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
        self.files[..2]
            .iter()
            .map(|(name, bytes)| Input::new(name, bytes.clone()))
            .collect()
    }

    fn run(&mut self, input: &Input) -> Result<(), String> {
        for (name, bytes) in &self.files {
            let bytes = if *name == input.file {
                &input.bytes
            } else {
                bytes
            };
            write(self.dir.path(), name, bytes)?;
        }
        let model = LoadedModel::open(self.dir.path(), &self.device).map_err(|e| e.to_string())?;
        use_model(&model, &self.device)
    }

    fn input_size(&self, input: &Input) -> usize {
        self.files
            .iter()
            .map(|(name, bytes)| {
                if *name == input.file {
                    input.bytes.len()
                } else {
                    bytes.len()
                }
            })
            .sum()
    }
}
