//! The GGUF seed: the tiny chat fixture's Llama written as a GGUF v3 file, as llama.cpp lays
//! it out (metadata, tensor directory, 32-byte aligned data), with its tensors stored in every
//! type the reader dequantises (F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and
//! a byte-level BPE vocabulary.
//! Only the layout matters to the fuzzer: it must load, so that mutations start from a file
//! that reaches every part of the loader.

use std::path::Path;

use bapo_testkit::gguf::{GgufWriter, gguf_string};
use safetensors::SafeTensors;

const STRING: u32 = 8;
const ARRAY: u32 = 9;
const U32: u32 = 4;
const I32: u32 = 5;
const F32: u32 = 6;

/// The seed under construction: typed metadata and f32 tensors on top of the testkit's
/// byte-level writer.
#[derive(Default)]
struct Writer(GgufWriter);

impl Writer {
    fn entry(&mut self, key: &str, type_id: u32, value: &[u8]) {
        self.0 = std::mem::take(&mut self.0).meta(key, type_id, value);
    }

    fn u32(&mut self, key: &str, value: u32) {
        self.entry(key, U32, &value.to_le_bytes());
    }

    fn f32(&mut self, key: &str, value: f32) {
        self.entry(key, F32, &value.to_le_bytes());
    }

    fn str(&mut self, key: &str, value: &str) {
        let mut bytes = Vec::new();
        gguf_string(&mut bytes, value);
        self.entry(key, STRING, &bytes);
    }

    fn strings(&mut self, key: &str, values: &[String]) {
        let mut bytes = STRING.to_le_bytes().to_vec();
        bytes.extend((values.len() as u64).to_le_bytes());
        for v in values {
            gguf_string(&mut bytes, v);
        }
        self.entry(key, ARRAY, &bytes);
    }

    fn i32s(&mut self, key: &str, values: &[i32]) {
        let mut bytes = I32.to_le_bytes().to_vec();
        bytes.extend((values.len() as u64).to_le_bytes());
        for v in values {
            bytes.extend(v.to_le_bytes());
        }
        self.entry(key, ARRAY, &bytes);
    }

    /// A `[rows, cols]` (or `[cols]`) tensor, stored as `type_id`.
    fn tensor(&mut self, name: &str, shape: &[usize], values: &[f32], type_id: u32) {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        self.0 = std::mem::take(&mut self.0).tensor(name, &dims, type_id, encode(values, type_id));
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.bytes()
    }
}

fn f16_bits(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// `values` in ggml's layout of `type_id`: F32 (0), F16 (1), Q4_0 (2), Q4_1 (3), Q5_0 (6),
/// Q5_1 (7), Q8_0 (8), Q4_K (12), Q5_K (13), Q6_K (14). Quantised blocks use the block's
/// largest magnitude as scale, as llama.cpp's reference quantiser does; the k-quants give
/// every sub-block the same scale (the seed needs a file that loads, not a good model).
fn encode(values: &[f32], type_id: u32) -> Vec<u8> {
    match type_id {
        0 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        1 => values.iter().flat_map(|&v| f16_bits(v)).collect(),
        2 | 3 | 8 => values
            .chunks(32)
            .flat_map(|block| quantise_block(block, type_id))
            .collect(),
        6 | 7 => values
            .chunks(32)
            .flat_map(|block| quantise_five_bit_block(block, type_id))
            .collect(),
        12..=14 => values
            .chunks(256)
            .flat_map(|block| quantise_k_block(block, type_id))
            .collect(),
        other => panic!("the seed writer has no encoder for ggml type {other}"),
    }
}

/// A Q5_0 (6) or Q5_1 (7) block: 32 five-bit values, their high bits packed in a u32.
fn quantise_five_bit_block(block: &[f32], type_id: u32) -> Vec<u8> {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d, offset) = if type_id == 6 {
        (amax / 16.0, 16.0)
    } else {
        (2.0 * amax / 31.0, 0.0)
    };
    let q: Vec<u8> = block
        .iter()
        .map(|&v| {
            let shifted = if type_id == 6 { v } else { v + amax };
            let q = if d > 0.0 {
                (shifted / d).round() + offset
            } else {
                offset
            };
            q.clamp(0.0, 31.0) as u8
        })
        .collect();
    let mut out = f16_bits(d).to_vec();
    if type_id == 7 {
        out.extend(f16_bits(-amax));
    }
    let high = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (j, &q)| h | (u32::from(q >> 4) << j));
    out.extend(high.to_le_bytes());
    out.extend((0..16).map(|j| (q[j] & 15) | ((q[j + 16] & 15) << 4)));
    out
}

/// A k-quant super-block of 256 values: Q4_K (12), Q5_K (13) or Q6_K (14), every sub-block
/// with the largest scale (and, for Q4_K/Q5_K, minimum) so that one super-scale spans
/// [−amax, amax].
fn quantise_k_block(block: &[f32], type_id: u32) -> Vec<u8> {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let level = |v: f32, levels: f32| -> u8 {
        let q = if amax > 0.0 {
            ((v + amax) / (2.0 * amax) * levels).round()
        } else {
            0.0
        };
        q.clamp(0.0, levels) as u8
    };
    let mut out = Vec::new();
    match type_id {
        12 | 13 => {
            let levels = if type_id == 12 { 15.0 } else { 31.0 };
            // value = (d·63)·q − dmin·63, scale and minimum 63 in every sub-block (all 12
            // packed bytes 0xFF).
            out.extend(f16_bits(2.0 * amax / (63.0 * levels)));
            out.extend(f16_bits(amax / 63.0));
            out.extend([0xFF; 12]);
            let q: Vec<u8> = block.iter().map(|&v| level(v, levels)).collect();
            if type_id == 13 {
                out.extend(
                    (0..32).map(|l| (0..8).fold(0u8, |h, sub| h | ((q[32 * sub + l] >> 4) << sub))),
                );
            }
            for pair in q.chunks(64) {
                out.extend((0..32).map(|l| (pair[l] & 15) | ((pair[l + 32] & 15) << 4)));
            }
        }
        _ => {
            // value = (d·127)·(q − 32), every sub-block scale 127.
            let q: Vec<u8> = block.iter().map(|&v| level(v, 63.0)).collect();
            let mut low = vec![0u8; 128];
            let mut high = vec![0u8; 64];
            for half in 0..2 {
                for l in 0..32 {
                    let at = |quarter: usize| q[128 * half + 32 * quarter + l];
                    low[64 * half + l] = (at(0) & 15) | ((at(2) & 15) << 4);
                    low[64 * half + l + 32] = (at(1) & 15) | ((at(3) & 15) << 4);
                    high[32 * half + l] =
                        (0..4).fold(0u8, |h, quarter| h | ((at(quarter) >> 4) << (2 * quarter)));
                }
            }
            out.extend(low);
            out.extend(high);
            out.extend([127u8; 16]);
            out.extend(f16_bits(amax / (127.0 * 31.5)));
        }
    }
    out
}

fn quantise_block(block: &[f32], type_id: u32) -> Vec<u8> {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut out = Vec::new();
    match type_id {
        8 => {
            let d = amax / 127.0;
            out.extend(f16_bits(d));
            out.extend(block.iter().map(|v| {
                let q = if d > 0.0 { (v / d).round() } else { 0.0 };
                q as i8 as u8
            }));
        }
        2 => {
            let d = amax / 8.0;
            out.extend(f16_bits(d));
            let q = |v: f32| -> u8 {
                let q = if d > 0.0 { (v / d + 8.5) as i32 } else { 8 };
                q.clamp(0, 15) as u8
            };
            out.extend((0..16).map(|j| q(block[j]) | (q(block[j + 16]) << 4)));
        }
        _ => {
            let min = block.iter().copied().fold(f32::INFINITY, f32::min);
            let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 15.0;
            out.extend(f16_bits(d));
            out.extend(f16_bits(min));
            let q = |v: f32| -> u8 {
                let q = if d > 0.0 {
                    ((v - min) / d + 0.5) as i32
                } else {
                    0
                };
                q.clamp(0, 15) as u8
            };
            out.extend((0..16).map(|j| q(block[j]) | (q(block[j + 16]) << 4)));
        }
    }
    out
}

/// The GGUF name and storage type of an HF tensor of the tiny Llama.
fn gguf_name(hf: &str) -> Option<(String, u32)> {
    if hf == "model.embed_tokens.weight" {
        return Some(("token_embd.weight".into(), 0));
    }
    if hf == "model.norm.weight" {
        return Some(("output_norm.weight".into(), 0));
    }
    if hf == "lm_head.weight" {
        return Some(("output.weight".into(), 1));
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    // Layer 0 in the legacy types, the others in the 5-bit and k-quant ones (every
    // projection of the tiny model is a whole number of 256-value super-blocks).
    let legacy = layer == "0";
    let (name, type_id) = match part {
        "input_layernorm.weight" => ("attn_norm", 0),
        "post_attention_layernorm.weight" => ("ffn_norm", 0),
        "self_attn.q_proj.weight" => ("attn_q", if legacy { 8 } else { 12 }),
        "self_attn.k_proj.weight" => ("attn_k", if legacy { 2 } else { 13 }),
        "self_attn.v_proj.weight" => ("attn_v", if legacy { 3 } else { 14 }),
        "self_attn.o_proj.weight" => ("attn_output", if legacy { 1 } else { 6 }),
        "mlp.gate_proj.weight" => ("ffn_gate", if legacy { 8 } else { 7 }),
        "mlp.up_proj.weight" => ("ffn_up", 0),
        "mlp.down_proj.weight" => ("ffn_down", if legacy { 2 } else { 14 }),
        _ => return None,
    };
    Some((format!("blk.{layer}.{name}.weight"), type_id))
}

/// The tiny chat fixture (`dir`: config.json, model.safetensors, tokenizer.json) as GGUF.
pub fn tiny_gguf(dir: &Path) -> Result<Vec<u8>, String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let config: serde_json::Value =
        serde_json::from_slice(&read("config.json")?).map_err(|e| e.to_string())?;
    let number = |key: &str| {
        config[key]
            .as_u64()
            .map(|v| v as u32)
            .ok_or(format!("config.json has no `{key}`"))
    };
    let mut w = Writer::default();
    w.str("general.architecture", "llama");
    w.u32("llama.embedding_length", number("hidden_size")?);
    w.u32("llama.attention.head_count", number("num_attention_heads")?);
    w.u32(
        "llama.attention.head_count_kv",
        number("num_key_value_heads")?,
    );
    w.u32("llama.block_count", number("num_hidden_layers")?);
    w.u32("llama.feed_forward_length", number("intermediate_size")?);
    w.u32("llama.context_length", number("max_position_embeddings")?);
    w.f32("llama.rope.freq_base", 10_000.0);
    w.f32("llama.attention.layer_norm_rms_epsilon", 1e-6);

    // A byte-level BPE vocabulary of the fixture's size: the special tokens, then words in
    // GPT-2's byte-level spelling (a leading space is `Ġ`), with the merges that build them.
    let vocab_size = number("vocab_size")? as usize;
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    let letters = "abcdefghijklmnopqrstuvwxyz.?";
    tokens.extend(letters.chars().map(String::from));
    let merges: Vec<String> = ["Ġ b", "Ġb l", "Ġbl u", "Ġblu e", "i s", "Ġ i"]
        .map(String::from)
        .to_vec();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("Ġ".into());
    while tokens.len() < vocab_size {
        tokens.push(format!("<|unused{}|>", tokens.len()));
    }
    tokens.truncate(vocab_size);
    w.str("tokenizer.ggml.model", "gpt2");
    w.str("tokenizer.ggml.pre", "smollm");
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| if i < 3 { 3 } else { 1 })
        .collect();
    w.strings("tokenizer.ggml.tokens", &tokens);
    w.strings("tokenizer.ggml.merges", &merges);
    w.i32s("tokenizer.ggml.token_type", &types);
    w.u32("tokenizer.ggml.bos_token_id", 1);
    w.u32("tokenizer.ggml.eos_token_id", 2);
    w.u32("tokenizer.ggml.padding_token_id", 2);
    w.str(
        "tokenizer.chat_template",
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    );

    let weights = read("model.safetensors")?;
    let file = SafeTensors::deserialize(&weights).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    for hf in names {
        let Some((name, type_id)) = gguf_name(&hf) else {
            return Err(format!("the seed writer does not know tensor `{hf}`"));
        };
        let view = file.tensor(&hf).map_err(|e| e.to_string())?;
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        w.tensor(&name, view.shape(), &values, type_id);
    }
    Ok(w.bytes())
}
