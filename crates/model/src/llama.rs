//! The Llama family (Llama, SmolLM2; Qwen2 adds q/k/v biases): token embedding, pre-norm
//! blocks of grouped-query attention with rotate-half RoPE and a SwiGLU MLP, final RMSNorm and
//! a tied or separate LM head. One non-generic implementation: the backend is the device the
//! weights live on.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::activation::silu;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ModelError;
use crate::causal::{
    CausalModel, KvCache, append_to_cache, attend, key_mask, mixed_precision_causal_mask,
};
use crate::file_projections::{FileProjections, placeholder_weight, project};
use crate::file_tables::FileTables;
use crate::gguf::{BlockRows, GgufFile};
use crate::hf::SafetensorsWeights;
use crate::llama_config::GgufFamily;
pub use crate::llama_config::LlamaConfig;
use crate::logprobs::{AttentionPattern, target_logprobs};
use crate::lora::linear_without_adapter;
use crate::precision::{Precision, to_f32};
use crate::quantized::{BaseQuantization, quantize_matrix};
use crate::recompute::Blockwise;

/// Grouped-query self-attention.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// The frozen weights of q, k, v and o in the GGUF file's blocks (`lora.base_quantization =
    /// "gguf"`; their `Linear` weights are then zero placeholders).
    #[module(skip)]
    pub file_weights: Option<FileProjections>,
}

impl Attention {
    fn file_weight(&self, index: usize) -> Option<&BlockRows> {
        self.file_weights.as_ref().map(|w| w.weight(index))
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    /// The frozen weights of gate, up and down in the GGUF file's blocks (see `Attention`).
    #[module(skip)]
    pub file_weights: Option<FileProjections>,
}

impl Mlp {
    fn file_weight(&self, index: usize) -> Option<&BlockRows> {
        self.file_weights.as_ref().map(|w| w.weight(index))
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    pub input_norm: RmsNorm,
    pub attention: Attention,
    pub post_attention_norm: RmsNorm,
    pub mlp: Mlp,
}

/// A Llama-family causal language model.
#[derive(Module, Debug)]
pub struct Llama {
    /// `None` when `tables` holds the embedding.
    pub embed_tokens: Option<Embedding>,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when the LM head is tied to the token embedding, or when `tables` holds it.
    pub lm_head: Option<Linear>,
    pub rope_theta: f64,
    /// What the forward computes in (not part of the weights).
    #[module(skip)]
    pub precision: Precision,
    /// A frozen quantized base's embedding and LM head, kept in the GGUF file's blocks (not
    /// parameters: nothing trains them).
    #[module(skip)]
    pub tables: Option<FileTables>,
}

/// `cos` and `sin` tables `[rows, 1, tokens, head_dim]` of rotate-half RoPE, one row of
/// positions per sequence (or a single row shared by the batch).
fn rope_tables(
    positions: &[Vec<usize>],
    head_dim: usize,
    theta: f64,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let half = head_dim / 2;
    let rows = positions.len();
    let tokens = positions.first().map_or(0, Vec::len);
    let mut cos = Vec::with_capacity(rows * tokens * head_dim);
    let mut sin = Vec::with_capacity(rows * tokens * head_dim);
    for &t in positions.iter().flatten() {
        let angles: Vec<f64> = (0..half)
            .map(|i| t as f64 / theta.powf(2.0 * i as f64 / head_dim as f64))
            .collect();
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos() as f32));
            sin.extend(angles.iter().map(|a| a.sin() as f32));
        }
    }
    let table =
        |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [rows, 1, tokens, head_dim]), device);
    (table(cos), table(sin))
}

/// Applies RoPE to `[batch, heads, tokens, head_dim]`: `x·cos + rotate_half(x)·sin`.
fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [_, _, _, head_dim] = x.dims();
    let half = head_dim / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// What one forward pass needs besides the tokens: RoPE tables for their positions, and either
/// plain causal attention or an explicit mask `[batch, 1, queries, keys]` (`true` = masked)
/// for left-padded batches and cached decoding.
pub(crate) struct ForwardContext {
    cos: Tensor<4>,
    sin: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
    /// Under bf16 and plain causal attention, the causal mask every layer adds (built once).
    causal_mask: Option<Tensor<4, Bool>>,
    precision: Precision,
}

impl Attention {
    fn forward(
        &self,
        x: Tensor<3>,
        context: &ForwardContext,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [batch, tokens, _] = x.dims();
        let precision = context.precision;
        let heads =
            |t: Tensor<3>, n: usize| t.reshape([batch, tokens, n, self.head_dim]).swap_dims(1, 2);
        // RoPE in f32, as transformers applies its f32 tables under autocast.
        let q = apply_rope(
            heads(
                to_f32(project(
                    precision,
                    &self.q_proj,
                    self.file_weight(0),
                    x.clone(),
                )),
                self.num_heads,
            ),
            &context.cos,
            &context.sin,
        );
        let mut k = apply_rope(
            heads(
                to_f32(project(
                    precision,
                    &self.k_proj,
                    self.file_weight(1),
                    x.clone(),
                )),
                self.num_kv_heads,
            ),
            &context.cos,
            &context.sin,
        );
        let v = project(precision, &self.v_proj, self.file_weight(2), x);
        let mut v = heads(v, self.num_kv_heads);
        if let Some(slot) = cache {
            (k, v) = append_to_cache(slot, k, v);
        }
        let repeat = self.num_heads / self.num_kv_heads;
        let out = match &context.mask {
            // Grouped-query attention with an explicit mask: the `repeat` query heads that
            // read one key/value head are folded into its query rows (HF's query head h
            // reads key/value head h / repeat), so keys and values are never copied per
            // query head. This is the decoding path, where that copy would dominate.
            Some(mask) => {
                let [_, _, keys, _] = k.dims();
                let q = q.reshape([batch, self.num_kv_heads, repeat * tokens, self.head_dim]);
                let mask = mask.clone().repeat_dim(2, repeat);
                debug_assert_eq!(mask.dims()[3], keys);
                attend(precision, q, k, v, Some(mask)).reshape([
                    batch,
                    self.num_heads,
                    tokens,
                    self.head_dim,
                ])
            }
            // Plain causal attention: query head h reads key/value head h / repeat.
            None => {
                let keys = k.dims()[2];
                let expand = |t: Tensor<4>| {
                    t.unsqueeze_dim::<5>(2).repeat_dim(2, repeat).reshape([
                        batch,
                        self.num_heads,
                        keys,
                        self.head_dim,
                    ])
                };
                attend(
                    precision,
                    q,
                    expand(k),
                    expand(v),
                    context.causal_mask.clone(),
                )
            }
        };
        let out = out
            .swap_dims(1, 2)
            .reshape([batch, tokens, self.num_heads * self.head_dim]);
        project(precision, &self.o_proj, self.file_weight(3), out)
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<3>, precision: Precision) -> Tensor<3> {
        // SiLU in f32 and rounded once, as torch's bf16 kernel computes it (Burn's bf16 SiLU
        // rounds its sigmoid before the product).
        let gate = project(precision, &self.gate_proj, self.file_weight(0), x.clone());
        let gate = precision.for_matmul(silu(to_f32(gate)));
        let up = project(precision, &self.up_proj, self.file_weight(1), x);
        project(precision, &self.down_proj, self.file_weight(2), gate * up)
    }
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        context: &ForwardContext,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        // The residual stream, and so every norm's input, stays f32.
        let attention = self
            .attention
            .forward(self.input_norm.forward(x.clone()), context, cache);
        let h = x + to_f32(attention);
        let mlp = self.mlp.forward(
            self.post_attention_norm.forward(h.clone()),
            context.precision,
        );
        h + to_f32(mlp)
    }
}

impl CausalModel for Llama {
    /// Final hidden states `[batch, tokens, hidden]` for token ids `[batch, tokens]` under
    /// plain causal attention (right padding is harmless: real tokens never see later pads).
    fn hidden_states(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, tokens] = ids.dims();
        let positions = vec![(0..tokens).collect()];
        let device = ids.device();
        let (cos, sin) = rope_tables(&positions, self.head_dim(), self.rope_theta, &device);
        self.run(
            ids,
            &ForwardContext {
                cos,
                sin,
                mask: None,
                causal_mask: mixed_precision_causal_mask(self.precision, tokens, &device),
                precision: self.precision,
            },
            None,
        )
    }

    /// Hidden states of new tokens `[batch, queries]` appended to `cache`, with explicit
    /// positions `[batch][queries]` and a key mask `[batch][queries][cached + queries]`
    /// (`true` = may not attend). This is the decoding path: left-padded batches and one
    /// token at a time.
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

    /// LM-head logits `[.., vocab]` of hidden states `[.., hidden]`.
    fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        if let Some(tables) = &self.tables {
            return tables.logits(hidden, self.precision);
        }
        match (&self.lm_head, &self.embed_tokens) {
            (Some(head), _) => to_f32(self.precision.project(head, hidden)),
            (None, Some(embedding)) => self
                .precision
                .head_logits(hidden, embedding.weight.val().transpose()),
            (None, None) => unreachable!("a Llama without tables has its embedding"),
        }
    }

    fn target_logprobs_of_rows(&self, rows: Tensor<2>, targets: &[u32]) -> Tensor<1> {
        match &self.tables {
            Some(tables) => tables.target_logprobs(rows, targets, self.precision),
            None => target_logprobs(self.logits(rows), targets),
        }
    }
}

impl Blockwise for Llama {
    type Context = ForwardContext;

    fn stage_context(&self, ids: &Tensor<2, Int>, attention: &AttentionPattern) -> ForwardContext {
        let [rows, tokens] = ids.dims();
        let device = ids.device();
        let (positions, mask) = match attention {
            AttentionPattern::Causal => (vec![(0..tokens).collect()], None),
            AttentionPattern::Masked { positions, mask } => (
                positions.clone(),
                Some(key_mask(mask.clone(), [rows, tokens, tokens], &device)),
            ),
        };
        let (cos, sin) = rope_tables(&positions, self.head_dim(), self.rope_theta, &device);
        let causal_mask = if mask.is_none() {
            mixed_precision_causal_mask(self.precision, tokens, &device)
        } else {
            None
        };
        ForwardContext {
            cos,
            sin,
            mask,
            causal_mask,
            precision: self.precision,
        }
    }

    fn embed_stage(&self, ids: Tensor<2, Int>, _context: &ForwardContext) -> Tensor<3> {
        self.embed(ids)
    }

    fn block_count(&self) -> usize {
        self.layers.len()
    }

    fn block_stage(&self, index: usize, x: Tensor<3>, context: &ForwardContext) -> Tensor<3> {
        self.layers[index].forward(x, context, None)
    }

    fn norm_stage(&self, x: Tensor<3>) -> Tensor<3> {
        self.norm.forward(x)
    }
}

impl Llama {
    fn head_dim(&self) -> usize {
        self.layers.first().map_or(0, |b| b.attention.head_dim)
    }

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
        let keys = cache.as_ref().map_or(0, |c| c.len()) + queries;
        let device = ids.device();
        let (cos, sin) = rope_tables(positions, self.head_dim(), self.rope_theta, &device);
        let mask = key_mask(mask, [batch, queries, keys], &device);
        self.run(
            ids,
            &ForwardContext {
                cos,
                sin,
                mask: Some(mask),
                causal_mask: None,
                precision: self.precision,
            },
            cache,
        )
    }

    fn run(
        &self,
        ids: Tensor<2, Int>,
        context: &ForwardContext,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        if let Some(cache) = cache.as_deref_mut() {
            cache.reserve_layers(self.layers.len());
        }
        let mut x = self.embed(ids);
        for (i, block) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| c.layer(i));
            x = block.forward(x, context, slot);
        }
        self.norm.forward(x)
    }

    /// Loads a Llama-family GGUF (llama.cpp layout, `llama` or `qwen2`) onto `device`,
    /// dequantising to f32.
    ///
    /// For `llama`, llama.cpp's converter permutes the rows of `attn_q` and `attn_k` for its
    /// interleaved RoPE; they are un-permuted here so the HF rotate-half RoPE above applies.
    pub fn from_gguf(file: &GgufFile, device: &Device) -> Result<(Self, LlamaConfig), ModelError> {
        Self::from_gguf_quantized(file, device, BaseQuantization::None)
    }

    /// [`from_gguf`](Self::from_gguf) with the decoder blocks' projections held as
    /// `quantization` says from the moment each is read: the f32 model never exists whole.
    pub fn from_gguf_quantized(
        file: &GgufFile,
        device: &Device,
        quantization: BaseQuantization,
    ) -> Result<(Self, LlamaConfig), ModelError> {
        let config = LlamaConfig::from_gguf(file)?;
        let permuted_qk = GgufFamily::of(file)?.permutes_qk();
        let model = Self::load(
            &WeightLoader {
                source: file,
                layout: Layout::Gguf { permuted_qk },
                device,
                quantization,
            },
            &config,
        )?;
        Ok((model, config))
    }

    /// Loads a Hugging Face checkpoint folder (`config.json`, `model.safetensors` or sharded
    /// `model.safetensors.index.json`) of model type `llama` or `qwen2` onto `device`.
    pub fn from_hf_dir(dir: &Path, device: &Device) -> Result<(Self, LlamaConfig), ModelError> {
        Self::from_hf_dir_quantized(dir, device, BaseQuantization::None)
    }

    /// [`from_hf_dir`](Self::from_hf_dir) with the decoder blocks' projections held as
    /// `quantization` says from the moment each is read: the f32 model never exists whole on
    /// the device.
    pub fn from_hf_dir_quantized(
        dir: &Path,
        device: &Device,
        quantization: BaseQuantization,
    ) -> Result<(Self, LlamaConfig), ModelError> {
        let (_, config) = LlamaConfig::from_hf(&dir.join("config.json"))?;
        let weights = SafetensorsWeights::open(dir)?;
        weights.check_layer_count("model.layers.", ("num_hidden_layers", config.num_layers))?;
        let model = Self::load(
            &WeightLoader {
                source: &weights,
                layout: Layout::Hf,
                device,
                quantization,
            },
            &config,
        )?;
        Ok((model, config))
    }

    /// A model of `config`'s shape with made-up weights, as transformers initialises Llama:
    /// matrices normal with standard deviation `std` (its `initializer_range`), norms 1. The
    /// same `seed` gives the same model. For benchmarks, where speed does not depend on the
    /// values, and for shapes too large to ship. `qkv_bias` gives the q/k/v projections
    /// biases (zero), as Qwen2 has.
    pub fn random(
        config: &LlamaConfig,
        qkv_bias: bool,
        std: f32,
        seed: u64,
        device: &Device,
    ) -> Self {
        let weights = RandomWeights {
            seed,
            qkv_bias,
            std,
        };
        let loader = WeightLoader {
            source: &weights,
            layout: Layout::Hf,
            device,
            quantization: BaseQuantization::None,
        };
        // Made-up tensors always have the shape asked for, so loading cannot fail.
        Self::load(&loader, config).expect("made-up weights have every shape asked for")
    }

    fn load(loader: &WeightLoader<'_>, c: &LlamaConfig) -> Result<Self, ModelError> {
        c.check().map_err(|message| ModelError::Format {
            path: loader.source.origin(),
            message,
        })?;
        let (q_rows, kv_rows) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let layers = (0..c.num_layers)
            .map(|i| {
                let l = Some(i);
                Ok(Block {
                    input_norm: loader.rms_norm(Part::AttentionNorm, l, c)?,
                    attention: {
                        let q = loader.projection(Part::Q, i, [q_rows, h], Some(c.num_heads))?;
                        let k =
                            loader.projection(Part::K, i, [kv_rows, h], Some(c.num_kv_heads))?;
                        let v = loader.projection(Part::V, i, [kv_rows, h], None)?;
                        let o = loader.projection(Part::O, i, [h, q_rows], None)?;
                        Attention {
                            file_weights: file_projections([&q.1, &k.1, &v.1, &o.1]),
                            q_proj: q.0,
                            k_proj: k.0,
                            v_proj: v.0,
                            o_proj: o.0,
                            num_heads: c.num_heads,
                            num_kv_heads: c.num_kv_heads,
                            head_dim: c.head_dim,
                        }
                    },
                    post_attention_norm: loader.rms_norm(Part::MlpNorm, l, c)?,
                    mlp: {
                        let gate = loader.projection(Part::Gate, i, [f, h], None)?;
                        let up = loader.projection(Part::Up, i, [f, h], None)?;
                        let down = loader.projection(Part::Down, i, [h, f], None)?;
                        Mlp {
                            file_weights: file_projections([&gate.1, &up.1, &down.1]),
                            gate_proj: gate.0,
                            up_proj: up.0,
                            down_proj: down.0,
                        }
                    },
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let table_shape = [c.vocab_size, c.hidden_size];
        let tables = loader.file_tables(table_shape, c.tied_embeddings)?;
        let (embed_tokens, lm_head) = match tables {
            Some(_) => (None, None),
            None => {
                let embedding = loader.matrix(Part::Embedding, None, table_shape, None)?;
                let lm_head = if c.tied_embeddings {
                    None
                } else {
                    Some(loader.linear(Part::LmHead, None, table_shape, None)?)
                };
                let weight = Param::from_tensor(embedding);
                (Some(Embedding { weight }), lm_head)
            }
        };
        Ok(Llama {
            embed_tokens,
            layers,
            norm: loader.rms_norm(Part::FinalNorm, None, c)?,
            lm_head,
            rope_theta: c.rope_theta,
            precision: Precision::F32,
            tables,
        })
    }
}

impl Llama {
    /// This model with every LoRA adapter switched off: the frozen base weights, shared with
    /// `self` (no copy). On a `valid()` module this is the reference of DPO-style training.
    pub fn without_adapters(&self) -> Llama {
        let mut model = self.clone();
        for block in &mut model.layers {
            let a = &mut block.attention;
            for linear in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj] {
                *linear = linear_without_adapter(linear);
            }
            let m = &mut block.mlp;
            for linear in [&mut m.gate_proj, &mut m.up_proj, &mut m.down_proj] {
                *linear = linear_without_adapter(linear);
            }
        }
        model.embed_tokens = self.embed_tokens.as_ref().map(|embedding| Embedding {
            weight: Param::from_tensor(embedding.weight.base()),
        });
        model.lm_head = self.lm_head.as_ref().map(linear_without_adapter);
        model
    }

    /// The embeddings `[batch, tokens, width]` of `ids` `[batch, tokens]`, in f32.
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        match (&self.tables, &self.embed_tokens) {
            (Some(tables), _) => tables.embed(ids),
            (None, Some(embedding)) => to_f32(embedding.forward(ids)),
            (None, None) => unreachable!("a Llama without tables has its embedding"),
        }
    }

    /// The width of the residual stream (the hidden size).
    pub fn width(&self) -> usize {
        self.norm.gamma.dims()[0]
    }

    /// The token embedding `[vocab, width]` in f32 as a tensor, from `tables` when they hold
    /// it (whole: for an export).
    pub fn embedding_weight(&self) -> Tensor<2> {
        match (&self.tables, &self.embed_tokens) {
            (Some(tables), _) => tables.embedding_f32(&self.norm.gamma.device()),
            (None, Some(embedding)) => embedding.weight.val(),
            (None, None) => unreachable!("a Llama without tables has its embedding"),
        }
    }

    /// A separate LM head as a linear layer, from `tables` when they hold it (whole: for an
    /// export); `None` when tied.
    pub fn head_linear(&self) -> Option<Linear> {
        match &self.tables {
            Some(tables) => tables
                .head_f32(&self.norm.gamma.device())
                .map(|rows| Linear {
                    weight: Param::from_tensor(rows.transpose()),
                    bias: None,
                }),
            None => self.lm_head.clone(),
        }
    }

    /// For an LM head held in `tables` (frozen): the gradient with respect to `rows`
    /// `[n, width]` of `Σ_t weights_t · log p_t(targets_t)` ([`FileTables::head_gradient`]);
    /// `None` for a head held as parameters (autodiff computes it).
    pub fn frozen_head_gradient(
        &self,
        rows: Tensor<2>,
        targets: &[u32],
        weights: Tensor<1>,
    ) -> Option<Tensor<2>> {
        let tables = self.tables.as_ref()?;
        Some(tables.head_gradient(rows, targets, weights, self.precision))
    }
}

/// Where named f32 tensors come from: a GGUF file or safetensors files.
pub(crate) trait WeightSource {
    /// The file or folder, for messages.
    fn origin(&self) -> PathBuf;
    fn contains(&self, name: &str) -> bool;
    /// Row-major shape and values.
    fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError>;
    /// A 2-D tensor kept in its own quantized blocks, where the source has them (a GGUF
    /// file); `None` where it does not.
    fn block_rows(&self, _name: &str) -> Result<Option<BlockRows>, ModelError> {
        Ok(None)
    }
    /// The tensor `name`, which the model expects to have `shape`: read (and checked by the
    /// caller) for stored weights, made in that shape for made-up ones.
    fn tensor_of_shape(
        &self,
        name: &str,
        _shape: &[usize],
    ) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        self.tensor_f32(name)
    }
}

/// Made-up weights in the HF layout (`Llama::random`): each tensor drawn from its own stream,
/// seeded by `seed` and its name, so that a tensor does not depend on the order of loading.
struct RandomWeights {
    seed: u64,
    qkv_bias: bool,
    std: f32,
}

/// One draw from N(0, 1) (Box–Muller; `1 − u` keeps the logarithm's argument above 0).
fn standard_normal(rng: &mut StdRng) -> f32 {
    let u: f64 = rng.random();
    let v: f64 = rng.random();
    ((-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

impl WeightSource for RandomWeights {
    fn origin(&self) -> PathBuf {
        PathBuf::from("(random weights)")
    }
    fn contains(&self, name: &str) -> bool {
        self.qkv_bias
            && ["q_proj.bias", "k_proj.bias", "v_proj.bias"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
    }
    fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        Err(ModelError::MissingTensor {
            path: self.origin(),
            tensor: name.to_string(),
        })
    }
    fn tensor_of_shape(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        let len = shape.iter().product();
        let values = if name.contains("norm") {
            vec![1.0; len]
        } else if name.ends_with(".bias") {
            vec![0.0; len]
        } else {
            // FNV-1a of the name, mixed with the seed, starts this tensor's stream.
            let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            let mut rng = StdRng::seed_from_u64(self.seed ^ name_hash);
            (0..len)
                .map(|_| self.std * standard_normal(&mut rng))
                .collect()
        };
        Ok((shape.to_vec(), values))
    }
}

impl WeightSource for GgufFile {
    fn origin(&self) -> PathBuf {
        self.path.clone()
    }
    fn contains(&self, name: &str) -> bool {
        self.has_tensor(name)
    }
    fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        Ok(GgufFile::tensor_f32(self, name)?)
    }
    fn block_rows(&self, name: &str) -> Result<Option<BlockRows>, ModelError> {
        Ok(Some(self.tensor_rows(name)?))
    }
}

impl WeightSource for SafetensorsWeights {
    fn origin(&self) -> PathBuf {
        self.dir().to_path_buf()
    }
    fn contains(&self, name: &str) -> bool {
        SafetensorsWeights::contains(self, name)
    }
    fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        SafetensorsWeights::tensor_f32(self, name)
    }
}

/// The weights of a Llama-family model, by role.
#[derive(Debug, Clone, Copy)]
enum Part {
    Embedding,
    FinalNorm,
    LmHead,
    AttentionNorm,
    Q,
    K,
    V,
    O,
    MlpNorm,
    Gate,
    Up,
    Down,
}

/// Tensor naming conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// llama.cpp: `blk.N.attn_q.weight`, q/k rows permuted for an interleaved RoPE when
    /// `permuted_qk` (see [`GgufFamily::permutes_qk`]).
    Gguf { permuted_qk: bool },
    /// transformers: `model.layers.N.self_attn.q_proj.weight`.
    Hf,
}

impl Layout {
    /// The tensor name of a part's `weight` (or `bias`) in layer `layer`.
    fn name(self, part: Part, layer: Option<usize>, suffix: &str) -> String {
        let n = layer.unwrap_or(0);
        match self {
            Layout::Gguf { .. } => match part {
                Part::Embedding => format!("token_embd.{suffix}"),
                Part::FinalNorm => format!("output_norm.{suffix}"),
                Part::LmHead => format!("output.{suffix}"),
                Part::AttentionNorm => format!("blk.{n}.attn_norm.{suffix}"),
                Part::Q => format!("blk.{n}.attn_q.{suffix}"),
                Part::K => format!("blk.{n}.attn_k.{suffix}"),
                Part::V => format!("blk.{n}.attn_v.{suffix}"),
                Part::O => format!("blk.{n}.attn_output.{suffix}"),
                Part::MlpNorm => format!("blk.{n}.ffn_norm.{suffix}"),
                Part::Gate => format!("blk.{n}.ffn_gate.{suffix}"),
                Part::Up => format!("blk.{n}.ffn_up.{suffix}"),
                Part::Down => format!("blk.{n}.ffn_down.{suffix}"),
            },
            Layout::Hf => match part {
                Part::Embedding => format!("model.embed_tokens.{suffix}"),
                Part::FinalNorm => format!("model.norm.{suffix}"),
                Part::LmHead => format!("lm_head.{suffix}"),
                Part::AttentionNorm => format!("model.layers.{n}.input_layernorm.{suffix}"),
                Part::Q => format!("model.layers.{n}.self_attn.q_proj.{suffix}"),
                Part::K => format!("model.layers.{n}.self_attn.k_proj.{suffix}"),
                Part::V => format!("model.layers.{n}.self_attn.v_proj.{suffix}"),
                Part::O => format!("model.layers.{n}.self_attn.o_proj.{suffix}"),
                Part::MlpNorm => format!("model.layers.{n}.post_attention_layernorm.{suffix}"),
                Part::Gate => format!("model.layers.{n}.mlp.gate_proj.{suffix}"),
                Part::Up => format!("model.layers.{n}.mlp.up_proj.{suffix}"),
                Part::Down => format!("model.layers.{n}.mlp.down_proj.{suffix}"),
            },
        }
    }
}

/// Reads a model's parts into Burn modules, checking every shape.
struct WeightLoader<'a> {
    source: &'a dyn WeightSource,
    layout: Layout,
    device: &'a Device,
    /// How the decoder blocks' projections are held as they load (`lora.base_quantization`).
    quantization: BaseQuantization,
}

impl WeightLoader<'_> {
    fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let (found, values) = self.source.tensor_of_shape(name, shape)?;
        if found != shape {
            return Err(ModelError::Shape {
                path: self.source.origin(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found,
            });
        }
        Ok(values)
    }

    /// A row-major `[rows, cols]` matrix. In the GGUF layout, `unpermute_heads` puts the rows
    /// of that many heads back from llama.cpp's interleaved order to rotate-half order.
    fn matrix(
        &self,
        part: Part,
        layer: Option<usize>,
        shape: [usize; 2],
        unpermute_heads: Option<usize>,
    ) -> Result<Tensor<2>, ModelError> {
        let mut values = self.values(&self.layout.name(part, layer, "weight"), &shape)?;
        if let (Layout::Gguf { permuted_qk: true }, Some(heads)) = (self.layout, unpermute_heads) {
            values = unpermute_rows(&values, heads, shape[0] / heads, shape[1]);
        }
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            self.device,
        ))
    }

    /// Tensor `name` kept in the file's blocks, checked to have `shape`; `None` where the
    /// source has no blocks (a checkpoint folder).
    fn checked_block_rows(
        &self,
        name: &str,
        shape: [usize; 2],
    ) -> Result<Option<BlockRows>, ModelError> {
        let Some(rows) = self.source.block_rows(name)? else {
            return Ok(None);
        };
        if rows.shape() != shape {
            return Err(ModelError::Shape {
                path: self.source.origin(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found: rows.shape().to_vec(),
            });
        }
        Ok(Some(rows))
    }

    /// The embedding and (unless `tied`) the LM head, `shape` each, kept in the file's blocks:
    /// for a quantized base read from a GGUF file, `None` otherwise.
    fn file_tables(&self, shape: [usize; 2], tied: bool) -> Result<Option<FileTables>, ModelError> {
        if self.quantization.is_none() {
            return Ok(None);
        }
        let rows =
            |part: Part| self.checked_block_rows(&self.layout.name(part, None, "weight"), shape);
        let Some(embedding) = rows(Part::Embedding)? else {
            return Ok(None);
        };
        let head = if tied {
            None
        } else {
            match rows(Part::LmHead)? {
                Some(head) => Some(head),
                None => return Ok(None),
            }
        };
        Ok(Some(FileTables::new(embedding, head)))
    }

    /// A linear layer from an `[out, in]` matrix (Burn stores `[in, out]`), with its bias when
    /// the checkpoint has one (Qwen2's q/k/v).
    fn linear(
        &self,
        part: Part,
        layer: Option<usize>,
        shape: [usize; 2],
        unpermute_heads: Option<usize>,
    ) -> Result<Linear, ModelError> {
        let weight = self
            .matrix(part, layer, shape, unpermute_heads)?
            .transpose();
        // The blocks' projections (not the LM head) as the run holds them.
        let weight = match layer {
            Some(_) => quantize_matrix(
                weight,
                self.quantization,
                &self.layout.name(part, layer, "weight"),
            )?,
            None => Param::from_tensor(weight),
        };
        let bias = self.bias(part, layer, shape[0], unpermute_heads)?;
        Ok(Linear { weight, bias })
    }

    /// The bias of `rows` outputs, when the checkpoint has one (Qwen2's q/k/v).
    fn bias(
        &self,
        part: Part,
        layer: Option<usize>,
        rows: usize,
        unpermute_heads: Option<usize>,
    ) -> Result<Option<Param<Tensor<1>>>, ModelError> {
        let name = self.layout.name(part, layer, "bias");
        if !self.source.contains(&name) {
            return Ok(None);
        }
        let mut values = self.values(&name, &[rows])?;
        if let (Layout::Gguf { permuted_qk: true }, Some(heads)) = (self.layout, unpermute_heads) {
            values = unpermute_rows(&values, heads, rows / heads, 1);
        }
        Ok(Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(values, [rows]),
            self.device,
        ))))
    }

    /// A decoder block's projection of `shape` `[out, in]`: its linear layer and, for a base
    /// held in the GGUF file's blocks (`BaseQuantization::Gguf`), its frozen weight there (the
    /// layer's weight then a zero placeholder, `crate::file_projections`).
    fn projection(
        &self,
        part: Part,
        layer: usize,
        shape: [usize; 2],
        unpermute_heads: Option<usize>,
    ) -> Result<(Linear, Option<Arc<BlockRows>>), ModelError> {
        let l = Some(layer);
        if self.quantization != BaseQuantization::Gguf {
            return Ok((self.linear(part, l, shape, unpermute_heads)?, None));
        }
        let name = self.layout.name(part, l, "weight");
        let Some(mut rows) = self.checked_block_rows(&name, shape)? else {
            return Err(not_a_gguf_file(&self.source.origin()));
        };
        if let (Layout::Gguf { permuted_qk: true }, Some(heads)) = (self.layout, unpermute_heads) {
            rows = rows.with_row_order(&unpermuted_order(heads, shape[0] / heads));
        }
        let linear = Linear {
            weight: placeholder_weight([shape[1], shape[0]], self.device),
            bias: self.bias(part, l, shape[0], unpermute_heads)?,
        };
        Ok((linear, Some(Arc::new(rows))))
    }

    fn rms_norm(
        &self,
        part: Part,
        layer: Option<usize>,
        c: &LlamaConfig,
    ) -> Result<RmsNorm, ModelError> {
        let values = self.values(&self.layout.name(part, layer, "weight"), &[c.hidden_size])?;
        let gamma = Tensor::from_data(TensorData::new(values, [c.hidden_size]), self.device);
        Ok(RmsNorm {
            gamma: Param::from_tensor(gamma),
            epsilon: c.rms_norm_eps,
        })
    }
}

/// Undoes llama.cpp's q/k permutation: within each head, GGUF row `2i + j` holds HF row
/// `j·(head_dim/2) + i`.
fn unpermute_rows(values: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    for from in unpermuted_order(heads, head_dim) {
        out.extend_from_slice(&values[from * cols..(from + 1) * cols]);
    }
    out
}

/// For each row of the un-permuted matrix, the llama.cpp row it comes from: within each head,
/// row `j·half + i` (rotate-half order) is llama.cpp's row `2i + j` (interleaved order).
fn unpermuted_order(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut order = vec![0; heads * head_dim];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                order[h * head_dim + j * half + i] = h * head_dim + 2 * i + j;
            }
        }
    }
    order
}

/// `lora.base_quantization = "gguf"` asked of a model that is not read from a GGUF file.
pub(crate) fn not_a_gguf_file(origin: &Path) -> ModelError {
    ModelError::Format {
        path: origin.to_path_buf(),
        message: "a base held in its file's own blocks (lora.base_quantization = \"gguf\") \
                  needs a GGUF file; use \"q8\" or \"q4\" for a checkpoint folder"
            .into(),
    }
}

/// The file-held weights of one block's projections, when the file holds them all.
fn file_projections<const N: usize>(
    parts: [&Option<Arc<BlockRows>>; N],
) -> Option<FileProjections> {
    parts
        .into_iter()
        .cloned()
        .collect::<Option<Vec<_>>>()
        .map(FileProjections)
}
