//! The GGUF reader on small files written here byte by byte: metadata of every type, each
//! supported tensor type dequantised against values computed from llama.cpp's block layouts
//! and, bit for bit, against the `gguf` Python package, and clear errors for bad input.

use std::path::Path;

use bapo_model::gguf::{GgmlType, GgufError, GgufFile, MetaValue};

use bapo_testkit::gguf::{GgufWriter as Writer, gguf_string as string};

/// Parses what a writer wrote.
trait Parse {
    fn parse(&self) -> Result<GgufFile, GgufError>;
}

impl Parse for Writer {
    fn parse(&self) -> Result<GgufFile, GgufError> {
        GgufFile::parse(Path::new("test.gguf"), self.bytes())
    }
}

fn f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

#[test]
fn reads_metadata_of_every_type() {
    let mut array = 4u32.to_le_bytes().to_vec(); // array of u32
    array.extend(2u64.to_le_bytes());
    array.extend(7u32.to_le_bytes());
    array.extend(9u32.to_le_bytes());
    let mut name = Vec::new();
    string(&mut name, "SmolLM2");
    let file = Writer::new()
        .meta("u8", 0, &[200])
        .meta("i8", 1, &[0xFF])
        .meta("u16", 2, &500u16.to_le_bytes())
        .meta("i16", 3, &(-5i16).to_le_bytes())
        .meta("u32", 4, &70_000u32.to_le_bytes())
        .meta("i32", 5, &(-70_000i32).to_le_bytes())
        .meta("f32", 6, &1.5f32.to_le_bytes())
        .meta("bool", 7, &[1])
        .meta("general.name", 8, &name)
        .meta("array", 9, &array)
        .meta("u64", 10, &(1u64 << 40).to_le_bytes())
        .meta("i64", 11, &(-3i64).to_le_bytes())
        .meta("f64", 12, &0.25f64.to_le_bytes())
        .parse()
        .unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.metadata["u8"], MetaValue::U8(200));
    assert_eq!(file.metadata["i8"], MetaValue::I8(-1));
    assert_eq!(file.get_u64("u16").unwrap(), 500);
    assert_eq!(file.metadata["i16"], MetaValue::I16(-5));
    assert_eq!(file.get_u64("u32").unwrap(), 70_000);
    assert_eq!(file.metadata["i32"], MetaValue::I32(-70_000));
    assert_eq!(file.get_f64("f32").unwrap(), 1.5);
    assert_eq!(file.metadata["bool"], MetaValue::Bool(true));
    assert_eq!(file.get_str("general.name").unwrap(), "SmolLM2");
    assert_eq!(
        file.metadata["array"],
        MetaValue::Array(vec![MetaValue::U32(7), MetaValue::U32(9)])
    );
    assert_eq!(file.get_u64("u64").unwrap(), 1 << 40);
    assert_eq!(file.metadata["i64"], MetaValue::I64(-3));
    assert_eq!(file.get_f64("f64").unwrap(), 0.25);
    assert!(matches!(
        file.get_u64("general.name"),
        Err(GgufError::WrongKeyType { .. })
    ));
    assert!(matches!(
        file.get("absent"),
        Err(GgufError::MissingKey { .. })
    ));
}

#[test]
fn dequantises_each_supported_type() {
    // F32 and F16: a 2 × 3 matrix stored as dims [3, 2].
    let values = [1.0f32, -2.0, 0.5, 3.25, -0.125, 8.0];
    let f32_data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16_data: Vec<u8> = values.iter().flat_map(|v| f16(*v)).collect();

    // One block each of the quantised types, with nibbles/bytes q_j = j mod 16 (or j − 16).
    let qs: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
    let mut q4_0 = f16(0.5).to_vec();
    q4_0.extend(&qs);
    let mut q4_1 = f16(0.25).to_vec();
    q4_1.extend(f16(-1.0));
    q4_1.extend(&qs);
    let mut q8_0 = f16(0.125).to_vec();
    q8_0.extend((0..32).map(|j| (j as i8 - 16) as u8));

    let file = Writer::new()
        .tensor("f32", &[3, 2], 0, f32_data)
        .tensor("f16", &[3, 2], 1, f16_data)
        .tensor("q4_0", &[32], 2, q4_0)
        .tensor("q4_1", &[32], 3, q4_1)
        .tensor("q8_0", &[32], 8, q8_0)
        .parse()
        .unwrap();

    for name in ["f32", "f16"] {
        let (shape, got) = file.tensor_f32(name).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(got, values);
    }
    // Value j < 16 is the low nibble of byte j, value j + 16 its high nibble.
    let nibble = |j: usize| {
        if j < 16 {
            j as f32
        } else {
            (15 - (j - 16)) as f32
        }
    };
    let q4_0_expected: Vec<f32> = (0..32).map(|j| (nibble(j) - 8.0) * 0.5).collect();
    let q4_1_expected: Vec<f32> = (0..32).map(|j| nibble(j) * 0.25 - 1.0).collect();
    let q8_0_expected: Vec<f32> = (0..32).map(|j| (j as f32 - 16.0) * 0.125).collect();
    assert_eq!(file.tensor_f32("q4_0").unwrap().1, q4_0_expected);
    assert_eq!(file.tensor_f32("q4_1").unwrap().1, q4_1_expected);
    assert_eq!(file.tensor_f32("q8_0").unwrap().1, q8_0_expected);
    assert_eq!(file.info("q4_1").unwrap().ggml_type, GgmlType::Q4_1);
}

/// Every quantised type, k-quants included, dequantised bit for bit as the `gguf` Python
/// package (llama.cpp's gguf-py) dequantises three blocks of random bytes each
/// (fixtures/gguf/make_quant_blocks.py).
#[test]
fn dequantises_every_quantised_type_as_gguf_py_does() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/quant_blocks.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        8,
        "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K"
    );
    for case in cases {
        let name = case["type"].as_str().unwrap();
        let hex = case["bytes"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let values = case["values"].as_u64().unwrap();
        let type_id = case["type_id"].as_u64().unwrap() as u32;
        let file = Writer::new()
            .tensor("t", &[values], type_id, bytes)
            .parse()
            .unwrap();
        assert_eq!(file.info("t").unwrap().ggml_type.name(), name);
        let (shape, got) = file
            .tensor_f32("t")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(shape, vec![values as usize], "{name}");
        let expected = case["f32_bits"].as_array().unwrap();
        for (i, (value, bits)) in got.iter().zip(expected).enumerate() {
            let bits = bits.as_u64().unwrap() as u32;
            assert_eq!(
                value.to_bits(),
                bits,
                "{name}: value {i}: {value} vs gguf-py's {}",
                f32::from_bits(bits)
            );
        }
    }
}

#[test]
fn bad_input_gives_errors_naming_the_problem() {
    let mut bytes = Writer::new().bytes();
    bytes[0] = b'X';
    let err = GgufFile::parse(Path::new("bad.gguf"), bytes).unwrap_err();
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
    assert!(err.to_string().contains("bad.gguf"));

    let mut bytes = Writer::new().bytes();
    bytes[4] = 2;
    assert!(matches!(
        GgufFile::parse(Path::new("v2.gguf"), bytes),
        Err(GgufError::UnsupportedVersion { version: 2, .. })
    ));

    // Truncated anywhere in the header: an error, never a panic.
    let full = Writer::new()
        .meta("general.architecture", 8, &{
            let mut v = Vec::new();
            string(&mut v, "llama");
            v
        })
        .tensor("t", &[4], 0, vec![0; 16])
        .bytes();
    for cut in 0..full.len() - 32 {
        let result = GgufFile::parse(Path::new("cut.gguf"), full[..cut].to_vec());
        if let Ok(file) = result {
            assert!(
                file.tensor_f32("t").is_err(),
                "cut at {cut}: data past the end must fail"
            );
        }
    }

    // A type that exists in llama.cpp but not here is rejected by name.
    let file = Writer::new()
        .tensor("blk.0.attn_q.weight", &[256], 11, vec![0; 110])
        .parse()
        .unwrap();
    let err = file
        .tensor_f32("blk.0.attn_q.weight")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Q3_K") && err.contains("blk.0.attn_q.weight"),
        "{err}"
    );
    let err = file.tensor_f32("absent").unwrap_err().to_string();
    assert!(err.contains("absent"), "{err}");

    // A length that cannot fit in the file.
    let mut bytes = Writer::new().bytes();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        GgufFile::parse(Path::new("huge.gguf"), bytes),
        Err(GgufError::Corrupt { .. })
    ));
}

/// A GGUF of an architecture bapo loads only from Hugging Face folders is refused by a message
/// that says so (it once said "`qwen2` is not supported (llama, qwen2 and gpt2 are)").
#[test]
fn a_gguf_of_another_architecture_is_refused_saying_where_it_loads() {
    let file = Writer::new()
        .meta("general.architecture", 8, &{
            let mut v = Vec::new();
            string(&mut v, "gpt2");
            v
        })
        .parse()
        .unwrap();
    let err = bapo_model::Llama::from_gguf(&file, &burn::tensor::Device::flex())
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("GGUF architecture `gpt2`")
            && err.contains("`qwen2` (Qwen2, Qwen2.5) load")
            && err.contains("Hugging Face folders"),
        "{err}"
    );
}

/// The GGUF name of a tensor of a transformers Qwen2 checkpoint, as llama.cpp's converter
/// names it.
fn gguf_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.", "token_embd."),
        ("model.norm.", "output_norm."),
        ("lm_head.", "output."),
    ];
    if let Some((from, to)) = fixed.iter().find(|(from, _)| hf.starts_with(from)) {
        return hf.replacen(from, to, 1);
    }
    let rest = hf.strip_prefix("model.layers.").expect("a layer's tensor");
    let (layer, part) = rest.split_once('.').expect("layer.part");
    let parts = [
        ("input_layernorm.", "attn_norm."),
        ("self_attn.q_proj.", "attn_q."),
        ("self_attn.k_proj.", "attn_k."),
        ("self_attn.v_proj.", "attn_v."),
        ("self_attn.o_proj.", "attn_output."),
        ("post_attention_layernorm.", "ffn_norm."),
        ("mlp.gate_proj.", "ffn_gate."),
        ("mlp.up_proj.", "ffn_up."),
        ("mlp.down_proj.", "ffn_down."),
    ];
    let (from, to) = parts
        .iter()
        .find(|(from, _)| part.starts_with(from))
        .unwrap_or_else(|| panic!("unknown tensor {hf}"));
    format!("blk.{layer}.{}", part.replacen(from, to, 1))
}

/// A `qwen2` GGUF holds q/k as transformers does (llama.cpp permutes them for `llama` only;
/// tests/gguf_oracle.rs checks the real Qwen2.5 files against transformers): the tiny Qwen2
/// checkpoint written as an f32 GGUF, with its biases, computes what the checkpoint computes.
#[test]
fn a_qwen2_gguf_computes_as_its_hugging_face_checkpoint() {
    use bapo_model::hf::SafetensorsWeights;
    use bapo_model::{BaseQuantization, CausalLm, Llama, TokenBatch, sequence_logprobs};
    let device = burn::tensor::Device::flex();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/tiny-qwen2");
    let (hf, config) = Llama::from_hf_dir(&dir, &device).unwrap();
    let weights = SafetensorsWeights::open(&dir).unwrap();

    let text = |s: &str| {
        let mut v = Vec::new();
        string(&mut v, s);
        v
    };
    let u32_of = |n: usize| (n as u32).to_le_bytes();
    let f32_of = |x: f64| (x as f32).to_le_bytes();
    let mut writer = Writer::new()
        .meta("general.architecture", 8, &text("qwen2"))
        .meta("qwen2.embedding_length", 4, &u32_of(config.hidden_size))
        .meta("qwen2.block_count", 4, &u32_of(config.num_layers))
        .meta(
            "qwen2.feed_forward_length",
            4,
            &u32_of(config.intermediate_size),
        )
        .meta("qwen2.attention.head_count", 4, &u32_of(config.num_heads))
        .meta(
            "qwen2.attention.head_count_kv",
            4,
            &u32_of(config.num_kv_heads),
        )
        .meta("qwen2.rope.freq_base", 6, &f32_of(config.rope_theta))
        .meta(
            "qwen2.attention.layer_norm_rms_epsilon",
            6,
            &f32_of(config.rms_norm_eps),
        );
    let mut with_bias = 0;
    for name in weights.names() {
        let (shape, values) = weights.tensor_f32(name).unwrap();
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        with_bias += usize::from(name.ends_with("_proj.bias"));
        writer = writer.tensor(&gguf_name(name), &dims, 0, data);
    }
    assert_eq!(
        with_bias,
        3 * config.num_layers,
        "q/k/v biases in every layer"
    );
    let gguf = Llama::from_gguf(&writer.parse().unwrap(), &device)
        .unwrap()
        .0;

    let prompt: Vec<u32> = vec![5, 17, 99, 3, 42, 7];
    let completion: Vec<u32> = vec![11, 64, 2, 127, 30];
    let batch = TokenBatch::from_pairs([(prompt.as_slice(), completion.as_slice())], 0);
    let scores = |model: &Llama| {
        sequence_logprobs(model, &batch, &device)
            .unwrap()
            .per_token
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(
        scores(&gguf),
        scores(&hf),
        "the same values, the same arithmetic"
    );

    // Quantized as it loads, from the GGUF file and from the checkpoint folder: the same base
    // as the float model quantized afterwards.
    let file = writer.parse().unwrap();
    for quantization in [BaseQuantization::Q8, BaseQuantization::Q4] {
        let (as_loaded, _) = Llama::from_gguf_quantized(&file, &device, quantization).unwrap();
        // The embedding and head stay in the file's blocks (here F32), out of the parameters.
        assert!(
            as_loaded.tables.is_some()
                && as_loaded.embed_tokens.is_none()
                && as_loaded.lm_head.is_none(),
            "{quantization:?}: the tables are held in the file's blocks"
        );
        let (folder_as_loaded, _) =
            Llama::from_hf_dir_quantized(&dir, &device, quantization).unwrap();
        let CausalLm::Llama(afterwards) = CausalLm::Llama(gguf.clone())
            .with_quantized_matrices(quantization)
            .unwrap()
        else {
            unreachable!()
        };
        assert_eq!(scores(&as_loaded), scores(&afterwards), "{quantization:?}");
        assert_eq!(
            scores(&folder_as_loaded),
            scores(&afterwards),
            "{quantization:?}: the folder"
        );
        assert_ne!(
            scores(&as_loaded),
            scores(&hf),
            "{quantization:?}: quantized"
        );
    }

    // Held in the file's own blocks (here F32): the file's values exactly, the same scores
    // and the same export; a checkpoint folder has no blocks to keep.
    let (in_blocks, gguf_config) =
        Llama::from_gguf_quantized(&file, &device, BaseQuantization::Gguf).unwrap();
    assert!(
        in_blocks
            .layers
            .iter()
            .all(|b| b.attention.file_weights.is_some() && b.mlp.file_weights.is_some()),
        "every projection is held in the file's blocks"
    );
    assert_eq!(scores(&in_blocks), scores(&gguf), "the file's blocks");
    let out = std::env::temp_dir().join(format!("bapo-gguf-blocks-{}", std::process::id()));
    let export = |model: &Llama, name: &str| -> Vec<u8> {
        bapo_model::export_hf(model, &gguf_config, &out.join(name)).unwrap();
        std::fs::read(out.join(name).join("model.safetensors")).unwrap()
    };
    assert_eq!(export(&in_blocks, "blocks"), export(&gguf, "f32"), "export");
    std::fs::remove_dir_all(&out).unwrap();
    let error = Llama::from_hf_dir_quantized(&dir, &device, BaseQuantization::Gguf)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("tiny-qwen2") && error.contains("\"gguf\"") && error.contains("\"q8\""),
        "{error}"
    );
}
