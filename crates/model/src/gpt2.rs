//! GPT-2: learned position embeddings, pre-norm blocks of LayerNorm, fused-qkv multi-head
//! attention and a tanh-GELU MLP, final LayerNorm, LM head tied to the token embedding.
//! HF checkpoints store GPT-2's projections as `Conv1D`, whose weights are already
//! `[in, out]`: Burn's `Linear` layout, so they load without a transpose.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::gelu_approximate;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde_json::Value;

use crate::ModelError;
use crate::causal::{
    CausalModel, KvCache, append_to_cache, attend, key_mask, mixed_precision_causal_mask,
};
use crate::hf::SafetensorsWeights;
use crate::logprobs::AttentionPattern;
use crate::lora::linear_without_adapter;
use crate::precision::{Precision, to_f32};
use crate::recompute::Blockwise;

/// Shape of a GPT-2 model.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub max_positions: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub inner_size: usize,
    pub layer_norm_eps: f64,
}

impl Gpt2Config {
    /// Reads a GPT-2 `config.json`.
    pub fn from_hf(path: &Path) -> Result<Self, ModelError> {
        let format = |message: String| ModelError::Format {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
        let int = |key: &str| {
            json.get(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| format(format!("`{key}` is missing or not a non-negative integer")))
        };
        let activation = json
            .get("activation_function")
            .and_then(Value::as_str)
            .unwrap_or("gelu_new");
        if !matches!(activation, "gelu_new" | "gelu_pytorch_tanh") {
            return Err(format(format!(
                "activation `{activation}` is not supported (gelu_new is)"
            )));
        }
        let hidden_size = int("n_embd")?;
        Ok(Gpt2Config {
            vocab_size: int("vocab_size")?,
            max_positions: int("n_positions")?,
            hidden_size,
            num_layers: int("n_layer")?,
            num_heads: int("n_head")?,
            inner_size: json
                .get("n_inner")
                .and_then(Value::as_u64)
                .map_or(4 * hidden_size, |v| v as usize),
            layer_norm_eps: json
                .get("layer_norm_epsilon")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5),
        })
    }
}

/// One GPT-2 block.
#[derive(Module, Debug)]
pub struct Gpt2Block {
    pub ln_1: LayerNorm,
    /// Fused query/key/value projection, `[hidden, 3·hidden]`.
    pub c_attn: Linear,
    pub attn_proj: Linear,
    pub ln_2: LayerNorm,
    pub c_fc: Linear,
    pub mlp_proj: Linear,
    pub num_heads: usize,
}

/// A GPT-2 language model.
#[derive(Module, Debug)]
pub struct Gpt2 {
    pub wte: Embedding,
    pub wpe: Embedding,
    pub blocks: Vec<Gpt2Block>,
    pub ln_f: LayerNorm,
    /// What the forward computes in (not part of the weights).
    #[module(skip)]
    pub precision: Precision,
}

impl Gpt2Block {
    fn forward(
        &self,
        x: Tensor<3>,
        mask: Option<&Tensor<4, Bool>>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
        precision: Precision,
    ) -> Tensor<3> {
        let [batch, tokens, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        let qkv = precision.project(&self.c_attn, self.ln_1.forward(x.clone()));
        let heads = |i: usize| {
            qkv.clone()
                .narrow(2, i * hidden, hidden)
                .reshape([batch, tokens, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let (q, mut k, mut v) = (heads(0), heads(1), heads(2));
        if let Some(slot) = cache {
            (k, v) = append_to_cache(slot, k, v);
        }
        let out = attend(precision, q, k, v, mask.cloned());
        let out = out.swap_dims(1, 2).reshape([batch, tokens, hidden]);
        // The residual stream, and so every norm's input, stays f32.
        let h = x + to_f32(precision.project(&self.attn_proj, out));
        let inner = precision.project(&self.c_fc, self.ln_2.forward(h.clone()));
        // GELU in f32 and rounded once, as torch's bf16 `gelu(approximate="tanh")` kernel
        // computes it.
        let activation = precision.for_matmul(gelu_approximate(to_f32(inner)));
        h + to_f32(precision.project(&self.mlp_proj, activation))
    }
}

impl Gpt2 {
    /// Token plus position embeddings, f32 (the start of the residual stream).
    fn embeddings(&self, ids: Tensor<2, Int>, positions: Tensor<2, Int>) -> Tensor<3> {
        to_f32(self.wte.forward(ids)) + to_f32(self.wpe.forward(positions))
    }

    fn run(
        &self,
        ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        mask: Option<Tensor<4, Bool>>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        if let Some(cache) = cache.as_deref_mut() {
            cache.reserve_layers(self.blocks.len());
        }
        let [_, tokens] = ids.dims();
        let mask =
            mask.or_else(|| mixed_precision_causal_mask(self.precision, tokens, &ids.device()));
        let mut x = self.embeddings(ids, positions);
        for (i, block) in self.blocks.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| c.layer(i));
            x = block.forward(x, mask.as_ref(), slot, self.precision);
        }
        self.ln_f.forward(x)
    }

    /// Loads a GPT-2 HF checkpoint folder (`config.json` + safetensors).
    pub fn from_hf_dir(dir: &Path, device: &Device) -> Result<(Self, Gpt2Config), ModelError> {
        let c = Gpt2Config::from_hf(&dir.join("config.json"))?;
        let weights = SafetensorsWeights::open(dir)?;
        // GPT2LMHeadModel prefixes `transformer.`; a bare GPT2Model does not.
        let prefix = if weights.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        weights.check_layer_count(&format!("{prefix}h."), ("n_layer", c.num_layers))?;
        let loader = Gpt2Loader {
            dir,
            weights: &weights,
            prefix,
            config: &c,
            device,
        };
        let blocks = (0..c.num_layers)
            .map(|i| loader.block(i))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let d = c.hidden_size;
        let model = Gpt2 {
            wte: Embedding {
                weight: Param::from_tensor(loader.matrix("wte.weight", [c.vocab_size, d])?),
            },
            wpe: Embedding {
                weight: Param::from_tensor(loader.matrix("wpe.weight", [c.max_positions, d])?),
            },
            blocks,
            ln_f: loader.layer_norm("ln_f")?,
            precision: Precision::F32,
        };
        Ok((model, c))
    }
}

/// Reads a GPT-2 checkpoint's tensors by name into Burn modules, checking each one's shape.
struct Gpt2Loader<'a> {
    dir: &'a Path,
    weights: &'a SafetensorsWeights,
    /// `transformer.` or nothing, put before every tensor name.
    prefix: &'a str,
    config: &'a Gpt2Config,
    device: &'a Device,
}

impl Gpt2Loader<'_> {
    /// The values of tensor `name`, refused unless its shape is `shape`.
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let name = format!("{}{name}", self.prefix);
        let (found, values) = self.weights.tensor_f32(&name)?;
        if found != shape {
            return Err(ModelError::Shape {
                path: self.dir.to_path_buf(),
                tensor: name,
                expected: shape.to_vec(),
                found,
            });
        }
        Ok(values)
    }

    /// A 2-D tensor of the given shape.
    fn matrix(&self, name: &str, shape: [usize; 2]) -> Result<Tensor<2>, ModelError> {
        Ok(Tensor::from_data(
            TensorData::new(self.load(name, &shape)?, shape),
            self.device,
        ))
    }

    /// A 1-D tensor of the given length.
    fn vector(&self, name: &str, len: usize) -> Result<Tensor<1>, ModelError> {
        Ok(Tensor::from_data(
            TensorData::new(self.load(name, &[len])?, [len]),
            self.device,
        ))
    }

    /// A Conv1D projection: weight `[in, out]`, bias `[out]`.
    fn linear(&self, name: &str, inputs: usize, outputs: usize) -> Result<Linear, ModelError> {
        Ok(Linear {
            weight: Param::from_tensor(self.matrix(&format!("{name}.weight"), [inputs, outputs])?),
            bias: Some(Param::from_tensor(
                self.vector(&format!("{name}.bias"), outputs)?,
            )),
        })
    }

    /// A LayerNorm over the hidden size, with its weight and bias.
    fn layer_norm(&self, name: &str) -> Result<LayerNorm, ModelError> {
        let c = self.config;
        let mut norm = LayerNormConfig::new(c.hidden_size)
            .with_epsilon(c.layer_norm_eps)
            .init(self.device);
        norm.gamma = Param::from_tensor(self.vector(&format!("{name}.weight"), c.hidden_size)?);
        norm.beta = Some(Param::from_tensor(
            self.vector(&format!("{name}.bias"), c.hidden_size)?,
        ));
        Ok(norm)
    }

    /// Block `i` (`h.{i}.*`).
    fn block(&self, i: usize) -> Result<Gpt2Block, ModelError> {
        let c = self.config;
        let d = c.hidden_size;
        Ok(Gpt2Block {
            ln_1: self.layer_norm(&format!("h.{i}.ln_1"))?,
            c_attn: self.linear(&format!("h.{i}.attn.c_attn"), d, 3 * d)?,
            attn_proj: self.linear(&format!("h.{i}.attn.c_proj"), d, d)?,
            ln_2: self.layer_norm(&format!("h.{i}.ln_2"))?,
            c_fc: self.linear(&format!("h.{i}.mlp.c_fc"), d, c.inner_size)?,
            mlp_proj: self.linear(&format!("h.{i}.mlp.c_proj"), c.inner_size, d)?,
            num_heads: c.num_heads,
        })
    }
}

impl Gpt2 {
    /// This model with every LoRA adapter switched off (see [`Llama::without_adapters`]).
    ///
    /// [`Llama::without_adapters`]: crate::llama::Llama::without_adapters
    pub fn without_adapters(&self) -> Gpt2 {
        let mut model = self.clone();
        for block in &mut model.blocks {
            for linear in [
                &mut block.c_attn,
                &mut block.attn_proj,
                &mut block.c_fc,
                &mut block.mlp_proj,
            ] {
                *linear = linear_without_adapter(linear);
            }
        }
        model.wte.weight = Param::from_tensor(self.wte.weight.base());
        model.wpe.weight = Param::from_tensor(self.wpe.weight.base());
        model
    }
}

impl Gpt2 {
    /// A forward with explicit positions `[batch][queries]` and a key mask `[batch · queries ·
    /// (cached + queries)]`, appending to `cache` if there is one.
    fn run_masked(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        mask: Vec<bool>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [batch, queries] = ids.dims();
        let device = ids.device();
        let keys = cache.as_ref().map_or(0, |c| c.len()) + queries;
        let flat: Vec<i64> = positions.iter().flatten().map(|&p| p as i64).collect();
        let positions = Tensor::from_data(TensorData::new(flat, [batch, queries]), &device);
        let mask = key_mask(mask, [batch, queries, keys], &device);
        self.run(ids, positions, Some(mask), cache)
    }
}

/// What every stage of a GPT-2 forward shares: positions `[rows, tokens]` and the mask.
pub(crate) struct Gpt2Context {
    positions: Tensor<2, Int>,
    mask: Option<Tensor<4, Bool>>,
}

impl Blockwise for Gpt2 {
    type Context = Gpt2Context;

    fn stage_context(&self, ids: &Tensor<2, Int>, attention: &AttentionPattern) -> Gpt2Context {
        let [rows, tokens] = ids.dims();
        let device = ids.device();
        let (positions, mask): (Vec<i64>, _) = match attention {
            AttentionPattern::Causal => (
                (0..rows).flat_map(|_| 0..tokens as i64).collect(),
                mixed_precision_causal_mask(self.precision, tokens, &device),
            ),
            AttentionPattern::Masked { positions, mask } => (
                positions.iter().flatten().map(|&p| p as i64).collect(),
                Some(key_mask(mask.clone(), [rows, tokens, tokens], &device)),
            ),
        };
        Gpt2Context {
            positions: Tensor::from_data(TensorData::new(positions, [rows, tokens]), &device),
            mask,
        }
    }

    fn embed_stage(&self, ids: Tensor<2, Int>, context: &Gpt2Context) -> Tensor<3> {
        self.embeddings(ids, context.positions.clone())
    }

    fn block_count(&self) -> usize {
        self.blocks.len()
    }

    fn block_stage(&self, index: usize, x: Tensor<3>, context: &Gpt2Context) -> Tensor<3> {
        self.blocks[index].forward(x, context.mask.as_ref(), None, self.precision)
    }

    fn norm_stage(&self, x: Tensor<3>) -> Tensor<3> {
        self.ln_f.forward(x)
    }
}

impl CausalModel for Gpt2 {
    fn hidden_states(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, tokens] = ids.dims();
        let device = ids.device();
        let positions: Vec<i64> = (0..batch).flat_map(|_| 0..tokens as i64).collect();
        let positions = Tensor::from_data(TensorData::new(positions, [batch, tokens]), &device);
        self.run(ids, positions, None, None)
    }

    fn hidden_states_cached(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        mask: Vec<bool>,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        self.run_masked(ids, positions, mask, Some(cache))
    }

    fn hidden_states_masked(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        mask: Vec<bool>,
    ) -> Tensor<3> {
        self.run_masked(ids, positions, mask, None)
    }

    fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        self.precision
            .head_logits(hidden, self.wte.weight.val().transpose())
    }
}
