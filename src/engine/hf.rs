//! Hugging Face checkpoint folders (what transformers' Trainer, TRL, axolotl and Unsloth write)
//! and PEFT LoRA adapters, read into declab's own forward (`decoder.rs`), the one checked
//! against llama.cpp, with f32 weights on [`super::dense`]'s batch-invariant kernel.
//!
//! * **Folders**: `config.json`; `model.safetensors`, or shards listed by
//!   `model.safetensors.index.json`; f32, bf16 or f16 tensors (held as f32). Families:
//!   `model_type: gemma3_text` (Gemma3ForCausalLM) and `llama`. Everything the forward does not
//!   implement (RoPE scaling, logit soft-capping, biases, another activation, quantised
//!   checkpoints) is refused by name, not ignored.
//! * **Conventions that differ from GGUF**, each from the published config and transformers'
//!   modelling code: Gemma's norms are stored as `w` and applied as `1 + w`
//!   (`Gemma3RMSNorm`; llama.cpp's converter adds the 1 into the GGUF); Llama's q/k
//!   projections are stored for RoPE on halves (`rotate_half`; the GGUF converter permutes
//!   them for interleaved pairs); Gemma's attention scale is `query_pre_attn_scalar^-1/2`; a
//!   Gemma layer is sliding or global as `layer_types` says (else every
//!   `sliding_window_pattern`-th is global); Llama's `post_attention_layernorm` is the norm
//!   before the MLP.
//! * **LoRA** (PEFT's `adapter_config.json` and `adapter_model.safetensors`): merged at load,
//!   `W + s B A` with `s = lora_alpha / r` (`lora_alpha / sqrt(r)` with `use_rslora`), for
//!   every module the adapter holds `lora_A`/`lora_B` for. DoRA, per-module rank or alpha
//!   patterns, biases and `modules_to_save` are refused.
//!
//! [`HfModel::open`] checks everything a load needs (every tensor present, of a known dtype,
//! with the shape `config.json` implies, inside its file; the adapter's matrices against the
//! base's) from the files' headers alone, so `validate` reports it before anything is written.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::decoder::Family;

/// A safetensors file's table of contents.
#[derive(Debug, Clone)]
struct TensorEntry {
    file: usize,
    dtype: StDtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StDtype {
    F32,
    Bf16,
    F16,
}

impl StDtype {
    fn size(self) -> usize {
        match self {
            StDtype::F32 => 4,
            StDtype::Bf16 | StDtype::F16 => 2,
        }
    }
}

/// Tensors of one or more safetensors files, by name.
#[derive(Debug, Clone, Default)]
struct Tensors {
    files: Vec<PathBuf>,
    map: BTreeMap<String, TensorEntry>,
}

impl Tensors {
    /// Read the headers of `files` (not their data), checking every range lies in its file.
    fn open(files: &[PathBuf]) -> Result<Tensors> {
        let mut t = Tensors {
            files: files.to_vec(),
            map: BTreeMap::new(),
        };
        for (i, path) in files.iter().enumerate() {
            let mut f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let len = f.metadata()?.len();
            let mut n = [0u8; 8];
            f.read_exact(&mut n)
                .map_err(|_| anyhow!("{} is not a safetensors file (too short)", path.display()))?;
            let n = u64::from_le_bytes(n);
            if n > 100 << 20 || 8 + n > len {
                bail!(
                    "{} is not a safetensors file (its header length {n} does not fit its {len} bytes); the file is truncated or of another format",
                    path.display()
                );
            }
            let mut header = vec![0u8; n as usize];
            f.read_exact(&mut header)?;
            let header: BTreeMap<String, Value> = serde_json::from_slice(&header).map_err(|e| {
                anyhow!(
                    "{}: the safetensors header is not valid JSON: {e}",
                    path.display()
                )
            })?;
            for (name, v) in header {
                if name == "__metadata__" {
                    continue;
                }
                let bad = || {
                    anyhow!(
                        "{}: the header entry of tensor `{name}` is malformed",
                        path.display()
                    )
                };
                let dtype = match v["dtype"].as_str().ok_or_else(bad)? {
                    "F32" => StDtype::F32,
                    "BF16" => StDtype::Bf16,
                    "F16" => StDtype::F16,
                    other => bail!(
                        "{}: tensor `{name}` is {other}; declab reads f32, bf16 and f16 checkpoints (a quantised checkpoint needs converting to GGUF, e.g. with llama.cpp's convert_hf_to_gguf.py)",
                        path.display()
                    ),
                };
                let shape: Vec<usize> = v["shape"]
                    .as_array()
                    .ok_or_else(bad)?
                    .iter()
                    .map(|d| d.as_u64().map(|d| d as usize).ok_or_else(bad))
                    .collect::<Result<_>>()?;
                let offs = v["data_offsets"].as_array().ok_or_else(bad)?;
                let (a, b) = match (
                    offs.first().and_then(Value::as_u64),
                    offs.get(1).and_then(Value::as_u64),
                ) {
                    (Some(a), Some(b)) if a <= b => (a, b),
                    _ => return Err(bad()),
                };
                let want = shape.iter().product::<usize>() * dtype.size();
                if (b - a) as usize != want {
                    bail!(
                        "{}: tensor `{name}` holds {} bytes but its shape {shape:?} needs {want}",
                        path.display(),
                        b - a
                    );
                }
                let (start, end) = (8 + n + a, 8 + n + b);
                if end > len {
                    bail!(
                        "{}: tensor `{name}` ends at byte {end} but the file has {len} bytes; the file is truncated",
                        path.display()
                    );
                }
                t.map.insert(
                    name,
                    TensorEntry {
                        file: i,
                        dtype,
                        shape,
                        start,
                        end,
                    },
                );
            }
        }
        Ok(t)
    }

    fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.map.get(name)
    }

    /// A tensor's values as f32, row-major.
    fn read(&self, name: &str) -> Result<Vec<f32>> {
        let e = self
            .get(name)
            .ok_or_else(|| anyhow!("no tensor `{name}`"))?;
        let path = &self.files[e.file];
        let mut f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        f.seek(SeekFrom::Start(e.start))?;
        let mut buf = vec![0u8; (e.end - e.start) as usize];
        f.read_exact(&mut buf)
            .with_context(|| format!("reading `{name}` from {}", path.display()))?;
        Ok(match e.dtype {
            StDtype::F32 => buf
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            StDtype::Bf16 => buf
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            StDtype::F16 => buf
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        })
    }
}

/// What `config.json` says, checked against what declab's forward implements.
#[derive(Debug, Clone)]
pub struct HfConfig {
    pub family: Family,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
    pub rope_theta: f32,
    /// Gemma 3's RoPE base on sliding layers.
    pub rope_local: f32,
    pub sliding_window: Option<usize>,
    /// Per layer: attends within the sliding window.
    pub sliding: Vec<bool>,
    /// The attention logits' scale.
    pub attn_scale: f64,
    pub context_length: usize,
    pub tied: bool,
    pub eos_ids: Vec<u32>,
}

impl HfConfig {
    /// The GGUF architecture name of the family (what the manifest records).
    pub fn architecture(&self) -> &'static str {
        Family::ALL
            .iter()
            .find(|(_, f)| *f == self.family)
            .map(|(n, _)| *n)
            .expect("every family has a name")
    }

    pub fn read(path: &Path) -> Result<HfConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let c: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{} is not valid JSON: {e}", path.display()))?;
        Self::from_json(&c).map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    fn from_json(c: &Value) -> Result<HfConfig> {
        let model_type = c["model_type"].as_str().unwrap_or_default();
        let family = match model_type {
            "gemma3_text" => Family::Gemma3,
            "llama" => Family::Llama,
            "gemma3" => bail!("model_type `gemma3` is the multimodal Gemma 3 (Gemma3ForConditionalGeneration); declab loads the text model, model_type `gemma3_text` (Gemma3ForCausalLM)"),
            "" => bail!("no `model_type`; this is not a transformers model config"),
            other => bail!("model_type `{other}` is not supported; declab loads Hugging Face folders of `gemma3_text` (Gemma 3) and `llama` (e.g. SmolLM2), or a GGUF of another architecture it supports"),
        };
        let usize_of = |k: &str| -> Result<usize> {
            c[k].as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| anyhow!("`{k}` is missing or not a whole number"))
        };
        let f64_of = |k: &str, default: Option<f64>| -> Result<f64> {
            match c.get(k) {
                Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or_default()),
                None | Some(Value::Null) => default.ok_or_else(|| anyhow!("`{k}` is missing")),
                Some(_) => bail!("`{k}` is not a number"),
            }
        };
        let must_be_null = |k: &str, why: &str| -> Result<()> {
            match c.get(k) {
                None | Some(Value::Null) => Ok(()),
                Some(Value::Object(o))
                    if k == "rope_scaling"
                        && o.get("rope_type").and_then(Value::as_str) == Some("default") =>
                {
                    Ok(())
                }
                Some(v) => bail!("`{k}` is {v}; {why} is not implemented in declab's forward"),
            }
        };
        let must_be_false = |k: &str| -> Result<()> {
            match c.get(k) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
                Some(v) => bail!("`{k}` is {v}; declab's forward has no {k}"),
            }
        };
        if c.get("quantization_config").is_some_and(|v| !v.is_null()) {
            bail!("the checkpoint is quantised (`quantization_config`); declab reads f32, bf16 and f16 folders (convert a quantised model to GGUF and give it as `gguf:`)");
        }
        let dtype = c
            .get("torch_dtype")
            .or_else(|| c.get("dtype"))
            .and_then(Value::as_str)
            .unwrap_or("float32");
        if !["float32", "bfloat16", "float16"].contains(&dtype) {
            bail!("torch_dtype `{dtype}` is not supported; declab reads float32, bfloat16 and float16 checkpoints");
        }
        must_be_null("rope_scaling", "RoPE scaling")?;
        must_be_false("attention_bias")?;
        must_be_false("mlp_bias")?;
        let act = c
            .get("hidden_activation")
            .or_else(|| c.get("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let hidden = usize_of("hidden_size")?;
        let heads = usize_of("num_attention_heads")?;
        let kv_heads = match c.get("num_key_value_heads") {
            None | Some(Value::Null) => heads,
            Some(_) => usize_of("num_key_value_heads")?,
        };
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            bail!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            );
        }
        let head_dim = match c.get("head_dim") {
            None | Some(Value::Null) => {
                if hidden % heads != 0 {
                    bail!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}; give `head_dim`");
                }
                hidden / heads
            }
            Some(_) => usize_of("head_dim")?,
        };
        let layers = usize_of("num_hidden_layers")?;
        let eos_ids = match c.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64().map(|v| v as u32))
                .collect(),
            _ => Vec::new(),
        };
        let rope_theta = f64_of("rope_theta", Some(10_000.0))? as f32;
        let (rope_local, sliding_window, sliding, attn_scale, tie_default) = match family {
            Family::Gemma3 => {
                if act != "gelu_pytorch_tanh" {
                    bail!("hidden_activation `{act}`: Gemma 3 uses gelu_pytorch_tanh, the one declab implements");
                }
                must_be_null("final_logit_softcapping", "logit soft-capping")?;
                must_be_null("attn_logit_softcapping", "attention soft-capping")?;
                must_be_false("use_bidirectional_attention")?;
                let window = usize_of("sliding_window")?;
                let sliding: Vec<bool> = match c.get("layer_types").and_then(Value::as_array) {
                    Some(types) => {
                        if types.len() != layers {
                            bail!(
                                "`layer_types` has {} entries for {layers} layers",
                                types.len()
                            );
                        }
                        types
                            .iter()
                            .map(|t| match t.as_str() {
                                Some("sliding_attention") => Ok(true),
                                Some("full_attention") => Ok(false),
                                _ => bail!("`layer_types` holds {t}; expected sliding_attention or full_attention"),
                            })
                            .collect::<Result<_>>()?
                    }
                    None => {
                        let pattern = c
                            .get("sliding_window_pattern")
                            .or_else(|| c.get("_sliding_window_pattern"))
                            .and_then(Value::as_u64)
                            .unwrap_or(6) as usize;
                        if pattern == 0 {
                            bail!("`sliding_window_pattern` is 0");
                        }
                        (0..layers).map(|i| (i + 1) % pattern > 0).collect()
                    }
                };
                let scalar = f64_of("query_pre_attn_scalar", Some(head_dim as f64))?;
                (
                    f64_of("rope_local_base_freq", Some(10_000.0))? as f32,
                    Some(window),
                    sliding,
                    1.0 / scalar.sqrt(),
                    true,
                )
            }
            Family::Llama => {
                if act != "silu" {
                    bail!("hidden_act `{act}`: declab's llama forward uses silu");
                }
                if c.get("sliding_window").is_some_and(|v| !v.is_null()) {
                    bail!(
                        "`sliding_window` is set; declab's llama forward attends to every position"
                    );
                }
                (
                    rope_theta,
                    None,
                    vec![false; layers],
                    1.0 / (head_dim as f64).sqrt(),
                    false,
                )
            }
        };
        Ok(HfConfig {
            family,
            vocab: usize_of("vocab_size")?,
            hidden,
            intermediate: usize_of("intermediate_size")?,
            layers,
            heads,
            kv_heads,
            head_dim,
            eps: f64_of("rms_norm_eps", None)?,
            rope_theta,
            rope_local,
            sliding_window,
            sliding,
            attn_scale,
            context_length: usize_of("max_position_embeddings")?,
            tied: c
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(tie_default),
            eos_ids,
        })
    }

    /// Every tensor the forward reads, with the shape this config implies.
    pub fn expected(&self) -> Vec<(String, Vec<usize>)> {
        let (h, q, kv, i) = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.intermediate,
        );
        let mut v = vec![
            ("model.embed_tokens.weight".to_string(), vec![self.vocab, h]),
            ("model.norm.weight".to_string(), vec![h]),
        ];
        if !self.tied {
            v.push(("lm_head.weight".into(), vec![self.vocab, h]));
        }
        for l in 0..self.layers {
            let n = LayerNames::new(self.family, l);
            v.extend([
                (n.q.clone(), vec![q, h]),
                (n.k.clone(), vec![kv, h]),
                (n.v.clone(), vec![kv, h]),
                (n.o.clone(), vec![h, q]),
                (n.gate.clone(), vec![i, h]),
                (n.up.clone(), vec![i, h]),
                (n.down.clone(), vec![h, i]),
                (n.attn_norm.clone(), vec![h]),
                (n.ffn_norm.clone(), vec![h]),
            ]);
            if let Some(g) = &n.gemma {
                v.extend([
                    (g.q_norm.clone(), vec![self.head_dim]),
                    (g.k_norm.clone(), vec![self.head_dim]),
                    (g.post_attn_norm.clone(), vec![h]),
                    (g.post_ffn_norm.clone(), vec![h]),
                ]);
            }
        }
        v
    }
}

/// One layer's tensor names in a transformers checkpoint.
#[derive(Debug, Clone)]
pub struct LayerNames {
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub gate: String,
    pub up: String,
    pub down: String,
    /// The norm before attention (`input_layernorm`).
    pub attn_norm: String,
    /// The norm before the MLP: Gemma's `pre_feedforward_layernorm`, Llama's
    /// `post_attention_layernorm`.
    pub ffn_norm: String,
    pub gemma: Option<GemmaNames>,
}

/// Gemma 3's extra norms.
#[derive(Debug, Clone)]
pub struct GemmaNames {
    pub q_norm: String,
    pub k_norm: String,
    pub post_attn_norm: String,
    pub post_ffn_norm: String,
}

impl LayerNames {
    pub fn new(family: Family, l: usize) -> LayerNames {
        let p = format!("model.layers.{l}");
        let w = |s: &str| format!("{p}.{s}.weight");
        let gemma = family == Family::Gemma3;
        LayerNames {
            q: w("self_attn.q_proj"),
            k: w("self_attn.k_proj"),
            v: w("self_attn.v_proj"),
            o: w("self_attn.o_proj"),
            gate: w("mlp.gate_proj"),
            up: w("mlp.up_proj"),
            down: w("mlp.down_proj"),
            attn_norm: w("input_layernorm"),
            ffn_norm: if gemma {
                w("pre_feedforward_layernorm")
            } else {
                w("post_attention_layernorm")
            },
            gemma: gemma.then(|| GemmaNames {
                q_norm: w("self_attn.q_norm"),
                k_norm: w("self_attn.k_norm"),
                post_attn_norm: w("post_attention_layernorm"),
                post_ffn_norm: w("post_feedforward_layernorm"),
            }),
        }
    }
}

/// A PEFT LoRA adapter, checked against its base.
#[derive(Debug, Clone)]
struct Lora {
    tensors: Tensors,
    scale: f32,
    /// Base weight name to (lora_A name, lora_B name).
    pairs: BTreeMap<String, (String, String)>,
}

/// The files of an adapter folder.
fn adapter_files(dir: &Path) -> Vec<PathBuf> {
    ["adapter_config.json", "adapter_model.safetensors"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

/// Every file a folder's weights come from, for hashing: config.json, the safetensors files,
/// and the adapter's two files.
pub fn source_files(folder: &Path, lora: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut files = vec![folder.join("config.json")];
    files.extend(weight_files(folder)?);
    if let Some(l) = lora {
        files.extend(adapter_files(l));
    }
    Ok(files)
}

impl Lora {
    fn open(dir: &Path, base: &HfModel) -> Result<Lora> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "cannot read {} (a PEFT LoRA adapter folder holds adapter_config.json and adapter_model.safetensors)",
                cfg_path.display()
            )
        })?;
        let c: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{} is not valid JSON: {e}", cfg_path.display()))?;
        let ctx = |m: String| anyhow!("{}: {m}", cfg_path.display());
        match c.get("peft_type").and_then(Value::as_str) {
            None | Some("LORA") => {}
            Some(t) => {
                return Err(ctx(format!(
                    "peft_type `{t}` is not supported; declab merges LoRA adapters"
                )))
            }
        }
        let r = c["r"]
            .as_f64()
            .filter(|r| *r > 0.0)
            .ok_or_else(|| ctx("`r` is missing or not a positive number".into()))?;
        let alpha = c["lora_alpha"]
            .as_f64()
            .ok_or_else(|| ctx("`lora_alpha` is missing or not a number".into()))?;
        let on = |k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
        if on("use_dora") {
            return Err(ctx(
                "`use_dora` is true; DoRA adapters are not supported".into()
            ));
        }
        if on("fan_in_fan_out") {
            return Err(ctx("`fan_in_fan_out` is true; declab merges adapters of Linear layers (fan_in_fan_out false)".into()));
        }
        for k in ["rank_pattern", "alpha_pattern"] {
            if c.get(k)
                .and_then(Value::as_object)
                .is_some_and(|o| !o.is_empty())
            {
                return Err(ctx(format!(
                    "`{k}` gives modules their own rank or alpha, which declab does not support"
                )));
            }
        }
        if c.get("bias")
            .and_then(Value::as_str)
            .is_some_and(|b| b != "none")
        {
            return Err(ctx(
                "`bias` is not \"none\"; adapters that train biases are not supported".into(),
            ));
        }
        if c.get("modules_to_save")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return Err(ctx(
                "`modules_to_save` is set; adapters that carry whole modules are not supported"
                    .into(),
            ));
        }
        let scale = if on("use_rslora") {
            alpha / r.sqrt()
        } else {
            alpha / r
        } as f32;
        let st = dir.join("adapter_model.safetensors");
        if !st.is_file() {
            bail!(
                "{} does not exist (an adapter saved as adapter_model.bin is not supported: save it with safe_serialization, the default)",
                st.display()
            );
        }
        let tensors = Tensors::open(std::slice::from_ref(&st))?;
        let mut pairs: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        for name in tensors.map.keys() {
            let base_name = name.strip_prefix("base_model.model.").unwrap_or(name);
            let (module, which) = match base_name
                .strip_suffix(".lora_A.weight")
                .map(|m| (m, 0))
                .or_else(|| base_name.strip_suffix(".lora_B.weight").map(|m| (m, 1)))
            {
                Some(x) => x,
                None => bail!(
                    "{}: tensor `{name}` is not a lora_A or lora_B matrix of a linear layer; only those are supported",
                    st.display()
                ),
            };
            let weight = format!("{module}.weight");
            let e = pairs.entry(weight).or_default();
            if which == 0 {
                e.0 = Some(name.clone());
            } else {
                e.1 = Some(name.clone());
            }
        }
        if pairs.is_empty() {
            bail!("{}: no lora_A/lora_B tensors", st.display());
        }
        let mut out = BTreeMap::new();
        for (weight, (a, b)) in pairs {
            let (Some(a), Some(b)) = (a, b) else {
                bail!(
                    "{}: `{weight}` has only one of its lora_A and lora_B matrices",
                    st.display()
                );
            };
            let Some(w) = base.tensors.get(&weight) else {
                bail!(
                    "{}: the adapter changes `{weight}`, which the base model {} does not have; the adapter was trained on another model",
                    st.display(),
                    base.dir.display()
                );
            };
            let (sa, sb) = (&tensors.map[&a].shape, &tensors.map[&b].shape);
            let (out_f, in_f) = (w.shape[0], w.shape[1]);
            if sa.len() != 2 || sb.len() != 2 || sa[1] != in_f || sb[0] != out_f || sa[0] != sb[1] {
                bail!(
                    "{}: lora_A {sa:?} and lora_B {sb:?} of `{weight}` do not fit the base's {:?} weight ({out_f} x {in_f} needs A r x {in_f} and B {out_f} x r); the adapter was trained on another model",
                    st.display(),
                    w.shape
                );
            }
            if sa[0] as f64 != r {
                bail!(
                    "{}: `{weight}` has rank {} but adapter_config.json says r = {r}",
                    st.display(),
                    sa[0]
                );
            }
            out.insert(weight, (a, b));
        }
        Ok(Lora {
            tensors,
            scale,
            pairs: out,
        })
    }
}

/// A checked Hugging Face folder (and adapter), ready to load.
#[derive(Debug, Clone)]
pub struct HfModel {
    pub dir: PathBuf,
    pub config: HfConfig,
    tensors: Tensors,
    lora: Option<Lora>,
}

/// Whether `dir` looks like a Hugging Face model folder (a config.json and safetensors).
pub fn is_hf_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && (dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file())
}

/// Whether `dir` is a PEFT adapter folder.
pub fn is_adapter_folder(dir: &Path) -> bool {
    dir.join("adapter_config.json").is_file()
}

/// The safetensors files of a folder: the shards `model.safetensors.index.json` names, else
/// `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{} is not valid JSON: {e}", index.display()))?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| anyhow!("{} has no `weight_map` object", index.display()))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for f in map.values() {
            let name = f
                .as_str()
                .filter(|s| !s.contains('/') && !s.contains('\\'))
                .ok_or_else(|| {
                    anyhow!(
                        "{}: `weight_map` holds {f}, not a file name in the folder",
                        index.display()
                    )
                })?;
            let p = dir.join(name);
            if !files.contains(&p) {
                if !p.is_file() {
                    bail!(
                        "{}: shard {name} is listed but missing from {} (copy the whole checkpoint folder)",
                        index.display(),
                        dir.display()
                    );
                }
                files.push(p);
            }
        }
        files.sort();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    bail!(
        "{} has neither model.safetensors nor model.safetensors.index.json (a checkpoint saved as pytorch_model.bin is not supported: save it with safe_serialization, the default)",
        dir.display()
    )
}

impl HfModel {
    /// Check a folder (and adapter) from headers alone: config, every tensor's presence, dtype,
    /// shape and extent, and the adapter's fit.
    pub fn open(dir: &Path, lora: Option<&Path>) -> Result<HfModel> {
        if !dir.is_dir() {
            bail!("{} is not a folder", dir.display());
        }
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            bail!(
                "{} has no config.json; a Hugging Face model folder holds config.json and model.safetensors (or shards)",
                dir.display()
            );
        }
        let config = HfConfig::read(&cfg_path)?;
        let files = weight_files(dir)?;
        let tensors = Tensors::open(&files)?;
        for (name, shape) in config.expected() {
            match tensors.get(&name) {
                None => bail!(
                    "{}: tensor `{name}` is missing from {}; the folder is incomplete (copy the whole checkpoint) or its config.json belongs to another model",
                    dir.display(),
                    files.iter().map(|f| f.file_name().unwrap_or_default().to_string_lossy().to_string()).collect::<Vec<_>>().join(", ")
                ),
                Some(e) if e.shape != shape => bail!(
                    "{}: tensor `{name}` in {} is {:?} but config.json implies {shape:?}; config.json and the weights do not belong together",
                    dir.display(),
                    tensors.files[e.file].display(),
                    e.shape
                ),
                Some(_) => {}
            }
        }
        let mut m = HfModel {
            dir: dir.to_path_buf(),
            config,
            tensors,
            lora: None,
        };
        if let Some(l) = lora {
            m.lora = Some(Lora::open(l, &m)?);
        }
        Ok(m)
    }

    /// A tensor as f32, with the adapter's `s B A` added when it changes it.
    pub fn read(&self, name: &str) -> Result<Vec<f32>> {
        let mut w = self
            .tensors
            .read(name)
            .with_context(|| format!("{}", self.dir.display()))?;
        if let Some(l) = &self.lora {
            if let Some((a, b)) = l.pairs.get(name) {
                let (sa, sb) = (&l.tensors.map[a].shape, &l.tensors.map[b].shape);
                let (r, k, n) = (sa[0], sa[1], sb[0]);
                let (av, bv) = (l.tensors.read(a)?, l.tensors.read(b)?);
                merge_lora(&mut w, &av, &bv, n, r, k, l.scale);
            }
        }
        Ok(w)
    }
}

/// `w += s * (B A)`: `w` is n x k, B n x r, A r x k, all row-major; each product summed over
/// the rank in order, in f32, then scaled and added (as PEFT's merge, `W + (B @ A) * s`).
fn merge_lora(w: &mut [f32], a: &[f32], b: &[f32], n: usize, r: usize, k: usize, s: f32) {
    for i in 0..n {
        let brow = &b[i * r..(i + 1) * r];
        let wrow = &mut w[i * k..(i + 1) * k];
        for (j, wv) in wrow.iter_mut().enumerate() {
            let mut d = 0f32;
            for (t, &bv) in brow.iter().enumerate() {
                d += bv * a[t * k + j];
            }
            *wv += d * s;
        }
    }
}

/// How [`write_from_gguf`] stores the weights.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// bf16 instead of f32.
    pub bf16: bool,
    /// Safetensors files (more than one: shards with `model.safetensors.index.json`).
    pub shards: usize,
}

/// Write a Hugging Face folder (config.json, safetensors) holding a GGUF's weights, dequantised,
/// under transformers' names and conventions: the inverse of llama.cpp's
/// `convert_hf_to_gguf.py` for these families (Gemma's norms stored as `w - 1`, Llama's q/k
/// permutation undone). The tests check declab's folder loader against the GGUF path and
/// against candle-transformers' models with it. No tokenizer is written.
pub fn write_from_gguf(gguf: &Path, dir: &Path, opts: WriteOptions) -> Result<()> {
    use candle_core::quantized::gguf_file;
    use candle_core::{DType, Device, Tensor};
    let (mut f, _) = super::open_gguf(gguf)?;
    let ct = gguf_file::Content::read(&mut f).map_err(|e| anyhow!("{}: {e}", gguf.display()))?;
    let md = |k: &str| ct.metadata.get(k);
    let arch = md("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let family =
        Family::of(&arch).ok_or_else(|| anyhow!("architecture {arch} is not supported"))?;
    let u = |k: &str| -> Result<usize> {
        md(&format!("{arch}.{k}"))
            .and_then(|v| v.to_u32().ok())
            .map(|v| v as usize)
            .ok_or_else(|| anyhow!("{}: no {arch}.{k}", gguf.display()))
    };
    let fl = |k: &str, d: f32| {
        md(&format!("{arch}.{k}"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(d)
    };
    let (hidden, heads, layers) = (
        u("embedding_length")?,
        u("attention.head_count")?,
        u("block_count")?,
    );
    let kv = u("attention.head_count_kv").unwrap_or(heads);
    let head_dim = u("attention.key_length").unwrap_or(hidden / heads);
    let dev = Device::Cpu;
    let gemma = family == Family::Gemma3;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut intermediate = 0;
    let mut vocab = 0;
    let mut tied = true;
    for name in ct.tensor_infos.keys() {
        let t = ct.tensor(&mut f, name, &dev)?.dequantize(&dev)?;
        let hf_name = if let Some(rest) = name.strip_prefix("blk.") {
            let (l, what) = rest
                .split_once('.')
                .ok_or_else(|| anyhow!("tensor {name}"))?;
            let what = what
                .strip_suffix(".weight")
                .ok_or_else(|| anyhow!("tensor {name}"))?;
            let to = match what {
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "attn_norm" => "input_layernorm",
                "post_attention_norm" => "post_attention_layernorm",
                "ffn_norm" if gemma => "pre_feedforward_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "post_ffw_norm" => "post_feedforward_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                other => bail!(
                    "{}: tensor {name} ({other}) has no Hugging Face name here",
                    gguf.display()
                ),
            };
            if what == "ffn_gate" {
                intermediate = t.dim(0)?;
            }
            format!("model.layers.{l}.{to}.weight")
        } else {
            match name.as_str() {
                "token_embd.weight" => {
                    vocab = t.dim(0)?;
                    "model.embed_tokens.weight".into()
                }
                "output_norm.weight" => "model.norm.weight".into(),
                "output.weight" => {
                    tied = false;
                    "lm_head.weight".into()
                }
                other => bail!(
                    "{}: tensor {other} has no Hugging Face name here",
                    gguf.display()
                ),
            }
        };
        let t = if gemma && hf_name.ends_with("norm.weight") {
            (t - 1.0)?
        } else if !gemma && (name.ends_with("attn_q.weight") || name.ends_with("attn_k.weight")) {
            // undo convert_hf_to_gguf's permute:
            // w.reshape(n_head, 2, d/n_head/2, k).swapaxes(1, 2).reshape(w.shape)
            let n_head = if name.ends_with("attn_q.weight") {
                heads
            } else {
                kv
            };
            let (n, k) = t.dims2()?;
            t.reshape((n_head, n / n_head / 2, 2, k))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((n, k))?
        } else {
            t
        };
        let t = if opts.bf16 {
            t.to_dtype(DType::BF16)?
        } else {
            t
        };
        tensors.push((hf_name, t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let eos: Vec<u32> = md("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok())
        .into_iter()
        .collect();
    let mut config = serde_json::json!({
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "num_hidden_layers": layers,
        "rms_norm_eps": fl("attention.layer_norm_rms_epsilon", 1e-6),
        "vocab_size": vocab,
        "max_position_embeddings": u("context_length")?,
        "tie_word_embeddings": tied,
        "torch_dtype": if opts.bf16 { "bfloat16" } else { "float32" },
        "eos_token_id": eos,
        "rope_scaling": null,
        "attention_bias": false,
    });
    let c = config.as_object_mut().expect("an object");
    if gemma {
        let pattern = u("attention.sliding_window_type").unwrap_or(6);
        let types: Vec<&str> = (0..layers)
            .map(|i| {
                if (i + 1) % pattern > 0 {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        for (k, v) in [
            ("architectures", serde_json::json!(["Gemma3ForCausalLM"])),
            ("model_type", serde_json::json!("gemma3_text")),
            ("hidden_activation", serde_json::json!("gelu_pytorch_tanh")),
            ("rope_theta", serde_json::json!(fl("rope.freq_base", 1e6))),
            (
                "rope_local_base_freq",
                serde_json::json!(fl("rope.local_freq_base", 1e4)),
            ),
            (
                "sliding_window",
                serde_json::json!(u("attention.sliding_window")?),
            ),
            ("sliding_window_pattern", serde_json::json!(pattern)),
            ("layer_types", serde_json::json!(types)),
            ("query_pre_attn_scalar", serde_json::json!(head_dim)),
            ("final_logit_softcapping", serde_json::Value::Null),
            ("attn_logit_softcapping", serde_json::Value::Null),
        ] {
            c.insert(k.into(), v);
        }
    } else {
        for (k, v) in [
            ("architectures", serde_json::json!(["LlamaForCausalLM"])),
            ("model_type", serde_json::json!("llama")),
            ("hidden_act", serde_json::json!("silu")),
            ("rope_theta", serde_json::json!(fl("rope.freq_base", 1e4))),
            ("mlp_bias", serde_json::json!(false)),
        ] {
            c.insert(k.into(), v);
        }
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let shards = opts.shards.max(1);
    let per = tensors.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in tensors.chunks(per).enumerate() {
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{shards:05}.safetensors", i + 1)
        };
        let map: std::collections::HashMap<String, Tensor> = chunk.iter().cloned().collect();
        candle_core::safetensors::save(&map, dir.join(&file))?;
        for (n, _) in chunk {
            weight_map.insert(n.clone(), serde_json::json!(file));
        }
    }
    if shards > 1 {
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "metadata": {},
                "weight_map": weight_map,
            }))?,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma_config() -> Value {
        serde_json::json!({
            "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
            "hidden_size": 640, "intermediate_size": 2048, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 256, "num_hidden_layers": 18,
            "rms_norm_eps": 1e-6, "rope_theta": 1e6, "rope_local_base_freq": 1e4,
            "sliding_window": 512, "query_pre_attn_scalar": 256, "vocab_size": 262144,
            "max_position_embeddings": 32768, "hidden_activation": "gelu_pytorch_tanh",
            "final_logit_softcapping": null, "attn_logit_softcapping": null,
            "rope_scaling": null, "torch_dtype": "bfloat16", "eos_token_id": [1, 106],
            "layer_types": (0..18).map(|i| if (i + 1) % 6 == 0 { "full_attention" } else { "sliding_attention" }).collect::<Vec<_>>()
        })
    }

    /// Gemma 3 270M's published config reads as the GGUF's metadata says (sliding layers,
    /// tied output, the attention scale).
    #[test]
    fn gemma_config_reads_like_the_published_one() {
        let c = HfConfig::from_json(&gemma_config()).unwrap();
        assert_eq!(c.family, Family::Gemma3);
        assert!(c.tied);
        assert_eq!(c.sliding.iter().filter(|s| !**s).count(), 3);
        assert!(!c.sliding[5] && c.sliding[4]);
        assert_eq!(c.attn_scale, 1.0 / 16.0);
        assert_eq!(c.eos_ids, vec![1, 106]);
        // without layer_types, the pattern gives the same layers
        let mut v = gemma_config();
        v.as_object_mut().unwrap().remove("layer_types");
        assert_eq!(HfConfig::from_json(&v).unwrap().sliding, c.sliding);
    }

    /// What the forward does not implement is refused by name.
    #[test]
    fn unimplemented_features_are_refused() {
        for (key, value, needle) in [
            (
                "hidden_activation",
                serde_json::json!("silu"),
                "gelu_pytorch_tanh",
            ),
            (
                "final_logit_softcapping",
                serde_json::json!(30.0),
                "soft-capping",
            ),
            (
                "rope_scaling",
                serde_json::json!({"rope_type": "linear", "factor": 8.0}),
                "RoPE scaling",
            ),
            ("model_type", serde_json::json!("gemma3"), "gemma3_text"),
            ("model_type", serde_json::json!("qwen2"), "not supported"),
            ("attention_bias", serde_json::json!(true), "attention_bias"),
            ("torch_dtype", serde_json::json!("int8"), "torch_dtype"),
            (
                "quantization_config",
                serde_json::json!({"quant_method": "bitsandbytes"}),
                "quantised",
            ),
        ] {
            let mut v = gemma_config();
            v[key] = value;
            let e = HfConfig::from_json(&v).unwrap_err().to_string();
            assert!(e.contains(needle), "{key}: {e}");
        }
        let mut v = gemma_config();
        v["rope_scaling"] = serde_json::json!({"rope_type": "default"});
        assert!(HfConfig::from_json(&v).is_ok());
    }

    /// The merge is W + s B A.
    #[test]
    fn lora_merge_adds_the_scaled_product() {
        // W 2x3, A 1x3, B 2x1
        let mut w = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        merge_lora(&mut w, &[1.0, 0.0, -1.0], &[2.0, 3.0], 2, 1, 3, 0.5);
        assert_eq!(w, vec![2.0, 2.0, 2.0, 5.5, 5.0, 4.5]);
    }
}
