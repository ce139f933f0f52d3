//! `anchors`: a chunk of the anchor cache (`<cache>/<fingerprint>/chunk-NNNNNN.json`), which
//! bapo wrote and a user may edit or damage, read back by `compute_anchors` as a rerun does.
//! What it accepts must be what training indexes: one base response, log-prob and token count
//! per anchor, ids inside the vocabulary, finite log-probs.

use bapo_anchors::{
    AnchorSettings, Decoding, ExampleAnchors, FingerprintInputs, compute_anchors, examples_sha256,
};
use bapo_data::{Tokenization, TokenizedExample, TruncationSettings, load_jsonl, tokenize_dataset};
use bapo_model::LoadedModel;
use burn::tensor::Device;

use super::write;
use crate::{Harness, Input, Scratch, fixture_dir};

const CHUNK: &str = "chunk-000000.json";

pub struct AnchorsTarget {
    model: LoadedModel,
    examples: Vec<TokenizedExample>,
    inputs: FingerprintInputs,
    cache: Scratch,
    seed: Vec<u8>,
    device: Device,
}

impl AnchorsTarget {
    pub fn new() -> Result<Self, String> {
        let device = Device::flex();
        let fixture = fixture_dir();
        let model = LoadedModel::open(&fixture, &device).map_err(|e| e.to_string())?;
        let dataset = load_jsonl(&fixture.join("preferences.jsonl")).map_err(|e| e.to_string())?;
        let limits = TruncationSettings {
            max_length: 48,
            max_prompt_length: None,
        };
        let tokenization = Tokenization {
            tokenizer: &model.tokenizer,
            chat_template: model.chat_template.as_ref(),
            eos_token: model.eos_token,
        };
        let (mut examples, _) =
            tokenize_dataset(&dataset, &tokenization, &limits).map_err(|e| e.to_string())?;
        examples.truncate(3);
        let settings = AnchorSettings {
            max_new_tokens: 4,
            sampling: bapo_model::Sampling {
                temperature: 1.0,
                ..Default::default()
            },
            num_anchors: 2,
            chunk_size: examples.len(),
        };
        let inputs = FingerprintInputs {
            model: "tiny-chat".into(),
            data: "preferences.jsonl".into(),
            chat_template: String::new(),
            vocab_size: model.vocab_size(),
            max_length: limits.max_length,
            max_prompt_length: None,
            user: None,
            examples: examples_sha256(&examples),
            settings,
            precision: bapo_model::Precision::F32,
            base_dtype: bapo_model::Precision::F32,
            base_quantization: bapo_model::BaseQuantization::None,
        };
        let cache = Scratch::new("anchors");
        compute_anchors(
            &model.model,
            &examples,
            &inputs,
            Decoding::new(model.eos_token, model.pad_token),
            cache.path(),
            &device,
        )
        .map_err(|e| e.to_string())?;
        let seed = std::fs::read(cache.path().join(inputs.fingerprint()).join(CHUNK))
            .map_err(|e| format!("the anchor seed was not written: {e}"))?;
        Ok(AnchorsTarget {
            model,
            examples,
            inputs,
            cache,
            seed,
            device,
        })
    }

    /// What training and evaluation index without further checks.
    fn check_usable(&self, anchors: &[ExampleAnchors]) {
        let wanted = self.inputs.settings.num_anchors;
        assert_eq!(anchors.len(), self.examples.len(), "one entry per example");
        for a in anchors {
            assert!(
                a.base.len() == wanted && a.base_logps.len() == wanted,
                "line {}: {} base responses, {} log-probs accepted for {wanted} anchors",
                a.line,
                a.base.len(),
                a.base_logps.len()
            );
            for id in a.base.iter().flatten() {
                assert!(
                    (*id as usize) < self.model.vocab_size(),
                    "line {}: token id {id}",
                    a.line
                );
            }
            let logps = [a.chosen_logp, a.rejected_logp];
            assert!(
                logps.iter().chain(&a.base_logps).all(|v| v.is_finite()),
                "line {}: a log-prob that is not finite",
                a.line
            );
        }
    }
}

impl Harness for AnchorsTarget {
    fn name(&self) -> &'static str {
        "anchors"
    }

    fn seeds(&self) -> Vec<Input> {
        vec![Input::new(CHUNK, self.seed.clone())]
    }

    fn run(&mut self, input: &Input) -> Result<(), String> {
        write(
            &self.cache.path().join(self.inputs.fingerprint()),
            CHUNK,
            &input.bytes,
        )?;
        let (anchors, report) = compute_anchors(
            &self.model.model,
            &self.examples,
            &self.inputs,
            Decoding::new(self.model.eos_token, self.model.pad_token),
            self.cache.path(),
            &self.device,
        )
        .map_err(|e| e.to_string())?;
        assert_eq!(report.reused_chunks, 1, "the chunk was not read back");
        self.check_usable(&anchors);
        Ok(())
    }

    fn input_size(&self, input: &Input) -> usize {
        input.bytes.len()
    }
}
