//! Export round trips: a LoRA-trained tiny Llama, Qwen2 and GPT-2, exported merged as a transformers
//! checkpoint, load back with the same logits; their adapters export in PEFT's layout.
//!
//! `crates/model/tests/fixtures/hf/check_export.py` checks the same exports with
//! `transformers` and `peft` themselves: run this test with `BAPO_KEEP_EXPORT=<dir>` to keep
//! the files, then the script on that folder.

mod common;

use std::path::PathBuf;

use bapo_model::{CausalModel, Llama, LoraSettings, apply_lora, export_hf, export_peft_adapter};
use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

fn fixture(name: &str) -> PathBuf {
    // The package folder at run time (not the one compiled in: see tests/hf.rs).
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/fixtures/hf")
        .join(name)
}

const IDS: [i64; 6] = [3, 17, 42, 99, 7, 64];

fn logits(model: &Llama) -> Vec<f32> {
    common::logits_of(model, &IDS, &Device::flex())
}

/// A LoRA model of `name` after one SGD step, so its adapters are not zero.
fn trained(name: &str) -> (Llama, bapo_model::LlamaConfig) {
    let device = Device::flex().autodiff();
    let (model, config) = Llama::from_hf_dir(&fixture(name), &device).unwrap();
    let model = apply_lora(
        model,
        &LoraSettings {
            rank: 4,
            alpha: 8.0,
            target: r"(q|v)_proj\.weight$".into(),
            ..LoraSettings::default()
        },
    )
    .unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(IDS.to_vec(), [1, 6]), &device);
    let grads =
        GradientsParams::from_grads(model.forward(ids).narrow(1, 5, 1).sum().backward(), &model);
    let model = SgdConfig::new().init().step(0.5, model, grads);
    (model.valid(), config)
}

fn out_dir(name: &str) -> PathBuf {
    match std::env::var_os("BAPO_KEEP_EXPORT") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => std::env::temp_dir().join(format!("bapo-export-{name}-{}", std::process::id())),
    }
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn merged_export_loads_back_with_the_same_logits() {
    for name in ["tiny-llama", "tiny-qwen2"] {
        let (model, config) = trained(name);
        let expected = logits(&model);
        let base = logits(&model.without_adapters());
        assert!(
            max_difference(&expected, &base) > 1e-4,
            "{name}: the adapters changed the model"
        );

        let dir = out_dir(&format!("{name}-merged"));
        export_hf(&model, &config, &dir).unwrap();
        let (reloaded, reloaded_config) = Llama::from_hf_dir(&dir, &Device::flex()).unwrap();
        assert_eq!(reloaded_config, config, "{name}");
        let diff = max_difference(&logits(&reloaded), &expected);
        assert!(diff <= 1e-5, "{name}: reloaded logits differ by {diff}");
        std::fs::write(dir.join("expected_logits.json"), format!("{expected:?}")).unwrap();

        // Exporting again into the same folder refuses to overwrite.
        let err = export_hf(&model, &config, &dir).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("overwrite"),
            "{err}"
        );
        if std::env::var_os("BAPO_KEEP_EXPORT").is_none() {
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}

#[test]
fn adapters_export_in_peft_layout() {
    let (model, _) = trained("tiny-llama");
    let dir = out_dir("tiny-llama-adapter");
    export_peft_adapter(&model, &fixture("tiny-llama").display().to_string(), &dir).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(tensors.len(), 2 * 2 * 2, "2 layers × q/v × A/B");
    let a = tensors
        .tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
        .unwrap();
    let b = tensors
        .tensor("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
        .unwrap();
    assert_eq!(a.shape(), [4, 32]);
    assert_eq!(
        b.shape(),
        [16, 4],
        "v_proj: 2 kv heads × head_dim 8 outputs"
    );
    let expected = logits(&model);
    std::fs::write(dir.join("expected_logits.json"), format!("{expected:?}")).unwrap();
    if std::env::var_os("BAPO_KEEP_EXPORT").is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// GPT-2 with LoRA on its fused attention projection, merged and exported, loads back with the
/// same logits.
#[test]
fn gpt2_merged_export_loads_back_with_the_same_logits() {
    use bapo_model::{Gpt2, export_gpt2_hf};
    let device = Device::flex().autodiff();
    let (model, config) = Gpt2::from_hf_dir(&fixture("tiny-gpt2"), &device).unwrap();
    let settings = LoraSettings {
        rank: 2,
        alpha: 4.0,
        target: r"c_attn\.weight$".into(),
        ..LoraSettings::default()
    };
    let model = apply_lora(model, &settings).unwrap();
    assert_eq!(bapo_model::adapter_count(&model), 2);
    let ids = Tensor::<2, Int>::from_data(TensorData::new(IDS.to_vec(), [1, 6]), &device);
    let grads =
        GradientsParams::from_grads(model.forward(ids).narrow(1, 5, 1).sum().backward(), &model);
    let model = SgdConfig::new().init().step(0.5, model, grads).valid();

    let plain = Device::flex();
    let run = |m: &Gpt2| common::logits_of(m, &IDS, &plain);
    let expected = run(&model);
    assert!(max_difference(&expected, &run(&model.without_adapters())) > 1e-4);
    let dir = out_dir("tiny-gpt2-merged");
    export_gpt2_hf(&model, &config, &dir).unwrap();
    let (reloaded, reloaded_config) = Gpt2::from_hf_dir(&dir, &plain).unwrap();
    assert_eq!(reloaded_config, config);
    let diff = max_difference(&run(&reloaded), &expected);
    assert!(diff <= 1e-5, "reloaded logits differ by {diff}");
    std::fs::write(dir.join("expected_logits.json"), format!("{expected:?}")).unwrap();
    if std::env::var_os("BAPO_KEEP_EXPORT").is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
}
