//! bapo's dequantisation of a real GGUF file against the `gguf` Python package, tensor by
//! tensor, bit for bit (sha256 of the f32 values). The files are hundreds of MB, so this runs
//! by hand, when the loader changes (fixtures/gguf/dequantised_hashes.py says how):
//! `BAPO_GGUF_FILE` is the file, `BAPO_GGUF_HASHES` the script's output.

use bapo_model::gguf::GgufFile;
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
