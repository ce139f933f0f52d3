//! LoRA on the tiny transformers-made Llama: adapters start as a no-op, only the adapter
//! factors learn, a training step changes the model, and the adapter-free model is exactly the
//! original (the reference, without a second copy of the weights).

use std::path::PathBuf;

use bapo_model::{
    CausalModel, Llama, LoraError, LoraInit, LoraSettings, adapter_count, apply_lora,
};
use burn::module::{LoraAdapter, Module};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

fn tiny_llama(device: &Device) -> Llama {
    // The package folder at run time: a test binary built in another clone that shares the
    // target folder must not read that clone's fixtures.
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/fixtures/hf/tiny-llama");
    Llama::from_hf_dir(&dir, device).unwrap().0
}

fn ids(device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(vec![3i64, 17, 42, 99, 7, 64], [1, 6]),
        device,
    )
}

fn logits(model: &Llama, device: &Device) -> Vec<f32> {
    model
        .forward(ids(device))
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap()
}

#[test]
fn lora_trains_only_adapters_and_strips_back_to_the_base() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let base = tiny_llama(&device);
    let before = logits(&base.valid(), &plain);

    let model = apply_lora(
        base,
        &LoraSettings {
            rank: 4,
            alpha: 8.0,
            ..LoraSettings::default()
        },
    )
    .unwrap();
    assert_eq!(adapter_count(&model), 2 * 4, "q/k/v/o of both layers");
    assert!(
        model
            .embed_tokens
            .as_ref()
            .unwrap()
            .weight
            .reparameterization::<LoraAdapter>()
            .is_none()
    );
    assert_eq!(
        logits(&model.valid(), &plain),
        before,
        "B = 0: adapters start as a no-op"
    );

    // Gradients reach the adapter factors only.
    let loss = model.forward(ids(&device)).narrow(1, 5, 1).sum();
    let grads = loss.backward();
    let q = &model.layers[0].attention.q_proj.weight;
    let adapter = q.reparameterization::<LoraAdapter>().unwrap();
    let b_grad = adapter.b.val().grad(&grads).expect("B gets a gradient");
    assert!(b_grad.abs().sum().into_scalar::<f32>() > 0.0);
    assert!(q.base().grad(&grads).is_none(), "the base weight is frozen");
    assert!(
        model.layers[0]
            .mlp
            .up_proj
            .weight
            .val()
            .grad(&grads)
            .is_none(),
        "untargeted weights are frozen"
    );

    // One SGD step moves the adapted model; stripping the adapters gives the original back.
    let mut optimizer = SgdConfig::new().init();
    let grads = GradientsParams::from_grads(grads, &model);
    let model = optimizer.step(0.5, model, grads);
    let after = logits(&model.valid(), &plain);
    assert_ne!(after, before, "training changed the adapted model");
    let reference = model.valid().without_adapters();
    assert_eq!(adapter_count(&reference), 0);
    assert_eq!(
        logits(&reference, &plain),
        before,
        "the reference is the untouched base"
    );
}

#[test]
fn bad_lora_settings_are_errors() {
    let device = Device::flex();
    let bad = |settings: LoraSettings| {
        apply_lora(tiny_llama(&device), &settings)
            .map(|_| ())
            .unwrap_err()
    };
    assert_eq!(
        bad(LoraSettings {
            rank: 0,
            ..LoraSettings::default()
        }),
        LoraError::Rank
    );
    assert_eq!(
        bad(LoraSettings {
            alpha: -1.0,
            ..LoraSettings::default()
        }),
        LoraError::Alpha(-1.0)
    );
    assert!(matches!(
        bad(LoraSettings {
            target: "(".into(),
            ..LoraSettings::default()
        }),
        LoraError::Target { .. }
    ));
}

/// Every adapter's first factor A of the tiny Llama's attention projections (each `[32, r]`).
fn first_factors(model: &Llama) -> Vec<f32> {
    model
        .layers
        .iter()
        .flat_map(|block| {
            let a = &block.attention;
            [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj]
        })
        .flat_map(|linear| {
            let adapter = linear.weight.adapter().expect("an adapted projection");
            adapter
                .a
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap()
        })
        .collect()
}

fn mean_and_variance(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let variance = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, variance)
}

/// A is drawn as PEFT draws it: by default normal with standard deviation 1/r (PEFT's
/// `init_lora_weights="gaussian"`, Burn's), and with `init = "kaiming_uniform"`
/// U(−1/√in, 1/√in) (PEFT's default, `kaiming_uniform_(a=√5)` over `in` inputs). 4,096 values
/// each: the variance is checked to 10% (its sampling error is ~2%), the uniform's support
/// exactly. B is zero either way, so the adapted model starts as its base.
#[test]
fn the_first_factor_is_drawn_from_pefts_distributions() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let rank = 16;
    let base = tiny_llama(&device);
    let before = logits(&base.valid(), &plain);
    for init in [LoraInit::Gaussian, LoraInit::KaimingUniform] {
        let settings = LoraSettings {
            rank,
            init,
            ..LoraSettings::default()
        };
        let model = apply_lora(base.clone(), &settings).unwrap();
        assert_eq!(
            logits(&model.valid(), &plain),
            before,
            "{init:?}: B starts at zero"
        );
        let a = first_factors(&model);
        assert_eq!(a.len(), 2 * 4 * 32 * rank);
        let (mean, variance) = mean_and_variance(&a);
        let bound = 1.0 / 32f64.sqrt();
        let expected = match init {
            LoraInit::Gaussian => 1.0 / (rank * rank) as f64,
            LoraInit::KaimingUniform => bound * bound / 3.0,
        };
        assert!(
            (variance / expected - 1.0).abs() < 0.1,
            "{init:?}: variance {variance} instead of {expected}"
        );
        assert!(mean.abs() < 0.1 * expected.sqrt(), "{init:?}: mean {mean}");
        if init == LoraInit::KaimingUniform {
            let largest = a.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
            assert!(
                largest <= bound && largest > 0.95 * bound,
                "largest |A| {largest} against the bound {bound}"
            );
        }
        let trainable = model.layers[0].attention.q_proj.weight.adapter().unwrap();
        assert!(trainable.a.val().is_require_grad(), "{init:?}: A trains");
    }
}
