//! AdamW and gradient clipping against PyTorch 2.9 (`torch.optim.AdamW`,
//! `torch.nn.utils.clip_grad_norm_`); the values below were printed by torch with the same
//! inputs.

use bapo_train::config::OptimizerSection;
use bapo_train::optimizer::{AdamW, clip_coefficient, global_grad_norm};
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

fn tensor(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// A `[2, 3]` parameter with the given values.
fn layer(values: &[f32], device: &Device) -> Linear {
    let mut linear = LinearConfig::new(2, 3).with_bias(false).init(device);
    linear.weight = Param::from_tensor(tensor(values, [2, 3], device).require_grad());
    linear
}

/// Gradients equal to `g`: the gradient of `Σ w ⊙ g`.
fn grads_of(linear: &Linear, g: &[f32], device: &Device) -> GradientsParams {
    let loss = (linear.weight.val() * tensor(g, [2, 3], device)).sum();
    GradientsParams::from_grads(loss.backward(), linear)
}

#[test]
fn adamw_matches_torch() {
    let device = Device::flex().autodiff();
    let mut linear = layer(&[0.5, -1.0, 2.0, 0.1, 0.0, -0.3], &device);
    let mut optimizer = AdamW::new(OptimizerSection {
        learning_rate: 0.1,
        ..OptimizerSection::default()
    });
    for g in [
        [1.0, -2.0, 0.5, 0.0, 3.0, -1.0],
        [0.2, 0.2, -0.4, 1.0, -1.0, 0.5],
        [-3.0, 1.0, 0.0, 0.3, 0.3, 0.3],
    ] {
        let mut grads = grads_of(&linear, &g, &device);
        linear = optimizer.step(linear, &mut grads, 0.1, 1.0);
    }
    let torch = [
        0.3590049147605896,
        -0.8254671692848206,
        1.8839061260223389,
        -0.04809735715389252,
        -0.17661932110786438,
        -0.16937987506389618,
    ];
    let ours = linear.weight.val().into_data().try_to_vec::<f32>().unwrap();
    for (a, b) in ours.iter().zip(torch) {
        assert!((f64::from(*a) - b).abs() < 1e-6, "{ours:?} vs {torch:?}");
    }
    assert!(linear.weight.val().is_require_grad(), "stays trainable");

    // The state survives a save/restore by path.
    let (tensors, steps) = optimizer.state_tensors();
    assert_eq!(steps.values().copied().collect::<Vec<_>>(), vec![3]);
    let mut restored = AdamW::new(optimizer.settings.clone());
    restored
        .load_state(&tensors, &steps, &device.clone().inner())
        .unwrap();
    assert_eq!(restored.state_tensors().0, tensors);
}

#[test]
fn global_norm_clipping_matches_torch() {
    // torch: clip_grad_norm_([a, b], 1.0) with grads [3, 0, 4] and [12, 0] returns 13 and
    // scales both by 1 / (13 + 1e-6).
    let device = Device::flex().autodiff();
    let linear = layer(&[0.0; 6], &device);
    let grads = grads_of(&linear, &[3.0, 0.0, 4.0, 12.0, 0.0, 0.0], &device);
    let norm = global_grad_norm(&linear, &grads);
    assert!((norm - 13.0).abs() < 1e-5, "{norm}");
    let coefficient = clip_coefficient(norm, 1.0);
    assert!((coefficient * 3.0 - 0.23076921701431274).abs() < 1e-6);
    assert!((coefficient * 12.0 - 0.923076868057251).abs() < 1e-6);
    assert_eq!(
        clip_coefficient(0.5, 1.0),
        1.0,
        "no clipping under the limit"
    );
    assert_eq!(clip_coefficient(100.0, 0.0), 1.0, "0 turns clipping off");
    let _ = linear.valid();
}
