//! A frozen base's embedding and LM head kept in the GGUF file's blocks (`file_tables`): rows
//! read from the blocks are exactly `tensor_f32`'s, for every block type; the head applied a
//! slice of the vocabulary at a time gives the logits, the log-probs and (written out) the
//! gradient that the whole f32 head gives under autodiff.

use std::path::Path;

use bapo_model::file_tables::FileTables;
use bapo_model::gguf::{BlockRows, GgufFile};
use bapo_model::target_logprobs;
use bapo_testkit::gguf::GgufWriter;
use burn::tensor::{Device, Int, Tensor, TensorData};

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn assert_close(what: &str, found: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(found.len(), expected.len(), "{what}");
    for (i, (a, b)) in found.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= tolerance * b.abs().max(1.0),
            "{what}: value {i}: {a} against {b}"
        );
    }
}

/// Each quantised type's three fixture blocks, laid out as three rows of one block: any row,
/// any gather of rows, equals the whole tensor's dequantisation row for row, bit for bit.
#[test]
fn rows_read_from_blocks_are_the_whole_tensors_rows() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/quant_blocks.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["type"].as_str().unwrap();
        let hex = case["bytes"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let cols = case["values"].as_u64().unwrap() / 3;
        let type_id = case["type_id"].as_u64().unwrap() as u32;
        let bytes = GgufWriter::new()
            .tensor("t", &[cols, 3], type_id, bytes)
            .bytes();
        let file = GgufFile::parse(Path::new("t.gguf"), bytes).unwrap();
        let (_, whole) = file.tensor_f32("t").unwrap();
        let rows = file.tensor_rows("t").unwrap();
        let cols = cols as usize;
        assert_eq!(rows.shape(), [3, cols], "{name}");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&rows.rows_f32(0..3)), bits(&whole), "{name}: all rows");
        assert_eq!(
            bits(&rows.rows_f32(1..3)),
            bits(&whole[cols..]),
            "{name}: rows 1..3"
        );
        let mut expected = whole[2 * cols..].to_vec();
        expected.extend_from_slice(&whole[..cols]);
        expected.extend_from_slice(&whole[2 * cols..]);
        assert_eq!(
            bits(&rows.gather_f32(&[2, 0, 2])),
            bits(&expected),
            "{name}: rows 2, 0, 2"
        );
    }
}

/// A row that does not start on a block boundary cannot be read alone: refused, naming the
/// tensor.
#[test]
fn rows_that_split_a_block_are_refused() {
    // Q8_0 (type 8): one block of 32 values, 34 bytes, as 2 rows of 16.
    let bytes = GgufWriter::new()
        .tensor("t", &[16, 2], 8, vec![0; 34])
        .bytes();
    let file = GgufFile::parse(Path::new("t.gguf"), bytes).unwrap();
    let error = file.tensor_rows("t").unwrap_err().to_string();
    assert!(
        error.contains("t.gguf") && error.contains("`t`") && error.contains("blocks of 32"),
        "{error}"
    );
}

/// Made-up `[vocab, width]` tables, vocabulary not a multiple of the slice (4 rows): slices of
/// 4, 4 and 3 rows.
const VOCAB: usize = 11;
const WIDTH: usize = 6;

fn table(seed: u32) -> Vec<f32> {
    (0..VOCAB * WIDTH)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
        .collect()
}

fn rows(device: &Device) -> Tensor<2> {
    let values: Vec<f32> = (0..5 * WIDTH)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
        .collect();
    Tensor::from_data(TensorData::new(values, [5, WIDTH]), device)
}

const TARGETS: [u32; 5] = [0, 10, 4, 7, 3];

#[test]
fn the_head_in_slices_gives_the_whole_heads_logits_logprobs_and_gradient() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    for tied in [false, true] {
        let embedding = table(1);
        let head = if tied { table(1) } else { table(2) };
        let tables = FileTables::new(
            BlockRows::from_f32([VOCAB, WIDTH], &embedding),
            (!tied).then(|| BlockRows::from_f32([VOCAB, WIDTH], &head)),
        )
        .with_slice_rows(4);
        let what = if tied { "tied" } else { "separate head" };
        let weight =
            || Tensor::<2>::from_data(TensorData::new(head.clone(), [VOCAB, WIDTH]), &device);

        // The embedding: rows looked up.
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 0, 10, 3], [2, 2]), &plain);
        let embedded = tables.embed(ids).reshape([4, WIDTH]);
        let mut expected = Vec::new();
        for id in [3, 0, 10, 3] {
            expected.extend_from_slice(&embedding[id * WIDTH..(id + 1) * WIDTH]);
        }
        assert_eq!(values(embedded), expected, "{what}: embedding rows");

        // The logits and the log-probs.
        let whole_logits = rows(&plain).matmul(weight().inner().transpose());
        let sliced_logits = tables.logits(rows(&plain), bapo_model::Precision::F32);
        assert_close(
            &format!("{what}: logits"),
            &values(sliced_logits),
            &values(whole_logits.clone()),
            1e-6,
        );
        let expected = target_logprobs(whole_logits, &TARGETS);
        let found = tables.target_logprobs(rows(&plain), &TARGETS, bapo_model::Precision::F32);
        let as_vec = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert_close(
            &format!("{what}: log-probs"),
            &as_vec(found),
            &as_vec(expected),
            1e-5,
        );

        // The gradient of Σ w · log p with respect to the rows, against autodiff.
        let weights = [0.5f32, -1.0, 2.0, 0.0, 1.5];
        let leaf = Tensor::from_inner(rows(&plain)).require_grad();
        let logprobs = target_logprobs(leaf.clone().matmul(weight().transpose()), &TARGETS);
        let w = Tensor::<1>::from_data(TensorData::new(weights.to_vec(), [5]), &device);
        let grads = (logprobs * w).sum().backward();
        let expected = values(leaf.grad(&grads).unwrap());
        let w = Tensor::<1>::from_data(TensorData::new(weights.to_vec(), [5]), &plain);
        let found = tables.head_gradient(rows(&plain), &TARGETS, w, bapo_model::Precision::F32);
        assert_close(
            &format!("{what}: gradient"),
            &values(found),
            &expected,
            1e-5,
        );
    }
}
