//! A frozen base held quantized under LoRA (`lora.base_quantization`): every projection of the
//! decoder blocks is quantized in blocks of 32 along its input (its values within half a
//! quantization step of the original, block by block), the rest stays float; a LoRA training
//! step on it equals the step on its dequantised values to float rounding; an export writes
//! the float values.

use std::path::PathBuf;

use bapo_model::{
    BaseQuantization, CausalLm, CausalModel, LoraSettings, adapter_count, apply_lora, export_hf,
};
use burn::module::{LoraAdapter, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

fn tiny(name: &str, device: &Device) -> CausalLm {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/fixtures/hf")
        .join(name);
    CausalLm::from_hf_dir(&dir, device).unwrap().0
}

/// Every 2-D float parameter with its module path, as `[rows, cols]` values.
#[derive(Default)]
struct Matrices {
    path: Vec<String>,
    found: Vec<(String, DType, [usize; 2], Vec<f32>)>,
}

impl ModuleVisitor for Matrices {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D != 2 {
            return;
        }
        let base = param.base();
        let dims = base.shape().to_vec();
        let values = base.clone().dequantize().into_data().convert::<f32>();
        self.found.push((
            self.path.join("."),
            base.dtype(),
            [dims[0], dims[1]],
            values.try_to_vec().unwrap(),
        ));
    }
}

fn matrices(model: &CausalLm) -> Vec<(String, DType, [usize; 2], Vec<f32>)> {
    let mut visitor = Matrices::default();
    model.visit(&mut visitor);
    visitor.found
}

/// Every block's values within half a step (its largest magnitude / `levels`) of the
/// original's, blocks being 32 rows of one column (`[in, out]`: 32 inputs of one output).
fn check_blocks(
    what: &str,
    original: &[f32],
    quantized: &[f32],
    [rows, cols]: [usize; 2],
    levels: f32,
) {
    for col in 0..cols {
        for block in 0..rows / 32 {
            let at = |r: usize| (block * 32 + r) * cols + col;
            let largest = (0..32)
                .map(|r| original[at(r)].abs())
                .fold(0.0f32, f32::max);
            let half_step = largest / levels / 2.0;
            for r in 0..32 {
                let error = (original[at(r)] - quantized[at(r)]).abs();
                assert!(
                    error <= half_step * 1.0001 + 1e-7,
                    "{what}: block {block} of column {col}, row {r}: off by {error}, half a step is {half_step}"
                );
            }
        }
    }
}

/// A checkpoint folder opened with a quantized base (`lora.base_quantization`, a Llama's
/// projections quantized as each is read) holds the base that quantizing the loaded float
/// model gives: the same matrices, held the same way.
#[test]
fn a_folder_opened_quantized_holds_the_base_quantized_after_loading() {
    use bapo_model::LoadedModel;
    let device = Device::flex();
    // The workspace's tiny chat model: a Llama folder with its tokenizer.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-chat");
    for quantization in [BaseQuantization::Q8, BaseQuantization::Q4] {
        let opened = LoadedModel::open_quantized(&dir, &device, quantization)
            .unwrap()
            .model;
        let afterwards = LoadedModel::open(&dir, &device)
            .unwrap()
            .model
            .with_quantized_matrices(quantization)
            .unwrap();
        assert_eq!(matrices(&opened), matrices(&afterwards), "{quantization:?}");
    }
}

#[test]
fn every_block_projection_is_held_quantized_within_half_a_step() {
    let device = Device::flex();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        let original = matrices(&tiny(name, &device));
        for (quantization, levels) in [(BaseQuantization::Q8, 127.0), (BaseQuantization::Q4, 7.0)] {
            let model = tiny(name, &device)
                .with_quantized_matrices(quantization)
                .unwrap();
            let held = matrices(&model);
            assert_eq!(held.len(), original.len());
            let mut quantized = 0;
            for ((path, dtype, dims, values), (_, _, _, before)) in held.iter().zip(&original) {
                // `Llama.layers.0.…`: the variant, then the field.
                let in_a_block = matches!(path.split('.').nth(1), Some("layers" | "blocks"));
                let is_quantized = matches!(dtype, DType::QFloat(_));
                assert_eq!(is_quantized, in_a_block, "{name} {path} ({dtype:?})");
                if is_quantized {
                    quantized += 1;
                    check_blocks(
                        &format!("{name} {path} {quantization:?}"),
                        before,
                        values,
                        *dims,
                        levels,
                    );
                } else {
                    assert_eq!(values, before, "{name} {path} is left as it was");
                }
            }
            assert!(quantized >= 8, "{name}: {quantized} matrices quantized");
        }
    }
}

/// Dequantises every quantized parameter (adapters kept): the float model the quantized one
/// stands for.
struct Dequantize;

impl ModuleMapper for Dequantize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.dequantize())
    }
}

fn ids(device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(vec![3i64, 17, 42, 99, 7, 64, 5, 11], [1, 8]),
        device,
    )
}

fn loss(model: &CausalLm, device: &Device) -> Tensor<1> {
    let hidden = model.hidden_states(ids(device));
    let [rows, tokens, width] = hidden.dims();
    let logits = model.logits(hidden.reshape([rows * tokens, width]));
    burn::tensor::activation::log_softmax(logits, 1)
        .narrow(1, 0, 8)
        .sum()
        .reshape([1])
}

fn adapter_values(model: &CausalLm) -> Vec<f32> {
    #[derive(Default)]
    struct Factors(Vec<f32>);
    impl ModuleVisitor for Factors {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                let data = param.val().into_data().convert::<f32>();
                self.0.extend(data.try_to_vec::<f32>().unwrap());
            }
        }
    }
    let mut factors = Factors::default();
    model.visit(&mut factors);
    factors.0
}

#[test]
fn a_lora_step_on_the_quantized_base_equals_the_step_on_its_values() {
    let device = Device::flex().autodiff();
    let settings = LoraSettings {
        rank: 4,
        alpha: 8.0,
        target: r"(q|k|v|o|gate|up|down)_proj\.weight$".to_string(),
        ..LoraSettings::default()
    };
    for quantization in [BaseQuantization::Q8, BaseQuantization::Q4] {
        let quantized = tiny("tiny-llama", &device)
            .with_quantized_matrices(quantization)
            .unwrap();
        let quantized = apply_lora(quantized, &settings).unwrap();
        assert_eq!(adapter_count(&quantized), 2 * 7);
        let dequantized = quantized.clone().map(&mut Dequantize);
        let before = adapter_values(&quantized);

        let step = |model: CausalLm| -> (f32, CausalLm) {
            let loss = loss(&model, &device);
            let value = loss.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            (value, SgdConfig::new().init().step(0.1, model, grads))
        };
        let (loss_q, quantized) = step(quantized);
        let (loss_d, dequantized) = step(dequantized);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(1.0);
        assert!(
            close(loss_q, loss_d),
            "{quantization:?}: loss {loss_q} against {loss_d}"
        );
        let (after_q, after_d) = (adapter_values(&quantized), adapter_values(&dequantized));
        assert_eq!(after_q.len(), after_d.len());
        assert_ne!(after_q, before, "the step moved the factors");
        assert!(
            after_q.iter().zip(&after_d).all(|(a, b)| close(*a, *b)),
            "{quantization:?}: the factors after a step"
        );
        let q_proj = match &quantized {
            CausalLm::Llama(m) => &m.layers[0].attention.q_proj.weight,
            CausalLm::Gpt2(_) => unreachable!(),
        };
        assert!(q_proj.reparameterization::<LoraAdapter>().is_some());
        assert!(
            matches!(q_proj.base().dtype(), DType::QFloat(_)),
            "the base is still quantized"
        );
    }
}

#[test]
fn an_export_writes_the_quantized_base_as_its_float_values() {
    let device = Device::flex();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/tiny-llama");
    let (model, config) = CausalLm::from_hf_dir(&dir, &device).unwrap();
    let (CausalLm::Llama(quantized), bapo_model::ModelConfig::Llama(config)) = (
        model.with_quantized_matrices(BaseQuantization::Q4).unwrap(),
        config,
    ) else {
        unreachable!("tiny-llama is a Llama")
    };
    let dequantized = quantized.clone().map(&mut Dequantize);
    let out = std::env::temp_dir().join(format!("bapo-quantized-export-{}", std::process::id()));
    let export = |model: &bapo_model::Llama, name: &str| -> Vec<u8> {
        export_hf(model, &config, &out.join(name)).unwrap();
        std::fs::read(out.join(name).join("model.safetensors")).unwrap()
    };
    assert_eq!(export(&quantized, "q"), export(&dequantized, "d"));
    std::fs::remove_dir_all(&out).unwrap();
}

/// A checkpoint folder has no blocks to keep: `gguf` is refused, naming the folder and the
/// settings that do apply, for both families (a GPT-2 folder is quantized after loading, so
/// it is checked apart from the Llama reader).
#[test]
fn a_checkpoint_folder_refuses_the_file_blocks_base() {
    let device = Device::flex();
    for name in ["tiny-llama", "tiny-gpt2"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf")
            .join(name);
        let error = CausalLm::from_hf_dir_quantized(&dir, &device, BaseQuantization::Gguf)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(name) && error.contains("\"gguf\"") && error.contains("\"q8\""),
            "{name}: {error}"
        );
    }
}
