//! Helpers shared by the model tests.

// Each test binary includes this module and uses only some of it.
#![allow(dead_code)]

use bapo_model::CausalModel;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Greedy decoding the slow way: the whole sequence recomputed for every new token, no cache.
/// Returns the new tokens (stopping after `stop` if it is produced).
pub fn greedy_by_recomputation<M: CausalModel>(
    model: &M,
    prompt: &[u32],
    steps: usize,
    stop: Option<u32>,
    device: &Device,
) -> Vec<u32> {
    let mut sequence = prompt.to_vec();
    for _ in 0..steps {
        let ids: Vec<i64> = sequence.iter().map(|&t| i64::from(t)).collect();
        let n = ids.len();
        let logits = model.forward(Tensor::<2, Int>::from_data(
            TensorData::new(ids, [1, n]),
            device,
        ));
        let last: Vec<f32> = logits
            .narrow(1, n - 1, 1)
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .unwrap();
        let next = last
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        sequence.push(next);
        if Some(next) == stop {
            break;
        }
    }
    sequence[prompt.len()..].to_vec()
}

/// Logits `[1, tokens, vocab]` of one sequence, flattened.
pub fn logits_of<M: CausalModel>(model: &M, ids: &[i64], device: &Device) -> Vec<f32> {
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), device);
    model
        .forward(input)
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap()
}
