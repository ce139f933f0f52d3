//! bapo's dequantisation of a real GGUF file against the `gguf` Python package, tensor by
//! tensor, bit for bit (sha256 of the f32 values). The files are hundreds of MB, so this runs
//! by hand, when the loader changes (fixtures/gguf/dequantised_hashes.py says how):
//! `BAPO_GGUF_FILE` is the file, `BAPO_GGUF_HASHES` the script's output.
//!
//! And, with `BAPO_GGUF_FILE` alone: the file opened with a quantized base keeps its embedding
//! and LM head in its own blocks (`file_tables`) with exactly the f32 path's values, and its
//! head applied in slices of the real vocabulary gives the whole head's log-probs and gradient.

use std::path::Path;

use bapo_model::gguf::GgufFile;
use bapo_model::{BaseQuantization, CausalLm, CausalModel, LoadedModel, target_logprobs};
use burn::tensor::{Device, Int, Tensor, TensorData};
use sha2::{Digest, Sha256};

#[test]
#[ignore = "needs a real GGUF file and its hashes (BAPO_GGUF_FILE, BAPO_GGUF_HASHES)"]
fn a_real_file_dequantises_as_gguf_py_does() {
    let (Some(file), Some(hashes)) = (
        std::env::var_os("BAPO_GGUF_FILE"),
        std::env::var_os("BAPO_GGUF_HASHES"),
    ) else {
        panic!("set BAPO_GGUF_FILE and BAPO_GGUF_HASHES (fixtures/gguf/dequantised_hashes.py)");
    };
    let gguf = GgufFile::open(&file).unwrap();
    let hashes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hashes).unwrap()).unwrap();
    let hashes = hashes.as_object().unwrap();
    assert_eq!(hashes.len(), gguf.tensors.len(), "one hash per tensor");
    let mut by_type = std::collections::BTreeMap::<String, usize>::new();
    for info in &gguf.tensors {
        let expected = &hashes[&info.name];
        let (_, values) = gguf
            .tensor_f32(&info.name)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(values.len() as u64, expected["values"].as_u64().unwrap());
        let mut hasher = Sha256::new();
        for v in &values {
            hasher.update(v.to_le_bytes());
        }
        assert_eq!(
            format!("{:x}", hasher.finalize()),
            expected["sha256"].as_str().unwrap(),
            "{} ({})",
            info.name,
            expected["type"]
        );
        *by_type.entry(info.ggml_type.name()).or_default() += 1;
    }
    println!("bit for bit as gguf-py: {by_type:?}");
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn llama(model: &CausalLm) -> &bapo_model::Llama {
    match model {
        CausalLm::Llama(m) => m,
        CausalLm::Gpt2(_) => panic!("a Llama-family file"),
    }
}

/// The largest `|a − b|`.
fn largest_difference(found: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(found.len(), expected.len());
    found
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// The largest `|a − b| / max(|b|, 1)`.
fn worst_gap(found: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(found.len(), expected.len());
    found
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f32::max)
}

#[test]
#[ignore = "needs a real GGUF file (BAPO_GGUF_FILE)"]
fn a_real_file_opened_quantized_keeps_its_embedding_and_head_exactly() {
    let Some(file) = std::env::var_os("BAPO_GGUF_FILE") else {
        panic!("set BAPO_GGUF_FILE");
    };
    let path = Path::new(&file);
    let device = Device::flex();
    let dense = LoadedModel::from_gguf(path, &device).unwrap();
    let opened = LoadedModel::open_quantized(path, &device, BaseQuantization::Q8).unwrap();
    let (dense_llama, opened_llama) = (llama(&dense.model), llama(&opened.model));
    assert!(
        opened_llama.tables.is_some(),
        "the tables are held in blocks"
    );
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert!(
        bits(values(opened_llama.embedding_weight()))
            == bits(values(dense_llama.embedding_weight())),
        "the embedding's values are the f32 path's"
    );
    let head = |m: &bapo_model::Llama| m.head_linear().map(|h| values(h.weight.val()));
    assert!(
        head(opened_llama).map(bits) == head(dense_llama).map(bits),
        "the LM head's values are the f32 path's"
    );

    // The same blocks quantized after loading: the opened model scores as it does, its head
    // applied a slice of the vocabulary at a time.
    let afterwards = dense
        .model
        .clone()
        .with_quantized_matrices(BaseQuantization::Q8)
        .unwrap();
    let text = "The capital of France is Paris. def double(x):\n    return 2 * x  # 東京";
    let ids = dense.encode(text).unwrap();
    let n = ids.len() - 1;
    let targets: Vec<u32> = ids[1..].to_vec();
    let as_i64: Vec<i64> = ids[..n].iter().map(|&t| i64::from(t)).collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(as_i64, [1, n]), &device);
    let rows = |model: &CausalLm| -> Tensor<2> {
        let width = llama(model).width();
        model.hidden_states(input.clone()).reshape([n, width])
    };
    let expected = values(target_logprobs(
        afterwards.logits(rows(&afterwards)),
        &targets,
    ));
    let found = values(
        opened
            .model
            .target_logprobs_of_rows(rows(&opened.model), &targets),
    );
    let logprob_gap = largest_difference(&found, &expected);
    assert!(
        logprob_gap <= 1e-4,
        "per-token log-probs differ by {logprob_gap}"
    );

    // The head's input gradient, written out, against autodiff through the whole head.
    let weights: Vec<f32> = (0..n).map(|i| 1.0 - 0.1 * i as f32).collect();
    let autodiff = device.clone().autodiff();
    let leaf = Tensor::from_inner(rows(&opened.model)).require_grad();
    let whole_head = match opened_llama.head_linear() {
        Some(head) => head.weight.val(),
        None => opened_llama.embedding_weight().transpose(),
    };
    let logprobs = target_logprobs(
        leaf.clone().matmul(Tensor::from_inner(whole_head)),
        &targets,
    );
    let w = Tensor::<1>::from_data(TensorData::new(weights.clone(), [n]), &autodiff);
    let grads = (logprobs * w).sum().backward();
    let expected = values(leaf.grad(&grads).unwrap());
    let w = Tensor::<1>::from_data(TensorData::new(weights, [n]), &device);
    let found = values(
        opened_llama
            .frozen_head_gradient(rows(&opened.model), &targets, w)
            .unwrap(),
    );
    let gradient_gap = worst_gap(&found, &expected);
    assert!(
        gradient_gap <= 1e-4,
        "the head's gradient differs by {gradient_gap}"
    );
    println!(
        "{n} tokens: log-probs within {logprob_gap:.2e} of the whole head's, \
         the head's input gradient within {gradient_gap:.2e} (relative)"
    );

    // Every projection held in the file's own blocks too (`gguf`): the f32 model's values, so
    // its per-token log-probs.
    drop((opened, afterwards));
    let in_blocks = LoadedModel::open_quantized(path, &device, BaseQuantization::Gguf).unwrap();
    let expected = values(target_logprobs(
        dense.model.logits(rows(&dense.model)),
        &targets,
    ));
    let found = values(
        in_blocks
            .model
            .target_logprobs_of_rows(rows(&in_blocks.model), &targets),
    );
    let blocks_gap = largest_difference(&found, &expected);
    assert!(
        blocks_gap <= 1e-4,
        "the file's blocks: log-probs differ by {blocks_gap}"
    );
    println!(
        "projections in the file's blocks: log-probs within {blocks_gap:.2e} of the f32 model's"
    );
}
