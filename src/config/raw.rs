//! Raw experiment file types: shaped exactly like the YAML, `deny_unknown_fields` everywhere.
//! Strategy blocks stay as YAML mappings here because any of their parameters may be a list
//! (a grid axis); `config::strategy` expands and checks them.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExperiment {
    /// Schema version; 1 is the only one so far.
    #[serde(default = "default_version")]
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub seed: u64,
    pub models: Vec<RawModel>,
    pub prompts: Vec<RawPrompt>,
    /// Samples per (model, prompt, strategy) cell.
    #[serde(default = "default_samples")]
    pub samples: usize,
    pub max_new_tokens: usize,
    /// Strings that end a generation (the stop string itself is cut from the text).
    #[serde(default)]
    pub stop: Vec<String>,
    /// Strategy id that comparisons are made against (default: the first strategy).
    #[serde(default)]
    pub baseline: Option<String>,
    pub strategies: Vec<serde_yaml::Value>,
    /// How each model's own entropy distribution is measured for quantile thresholds.
    #[serde(default)]
    pub calibration: Option<RawCalibration>,
    /// A rule that picks one model (a checkpoint of a series) from the run's results.
    #[serde(default)]
    pub choose: Option<RawChoose>,
    /// The model id that scores every sample's text (`nll_ref`, `entropy_ref`), the same
    /// yardstick for every model and checkpoint.
    #[serde(default)]
    pub scorer: Option<String>,
    /// Best-of-N selectors applied to the samples of every cell (`crate::select`).
    #[serde(default)]
    pub select: Vec<serde_yaml::Value>,
}

/// `calibration:`: the pass that measures each model's entropy distribution before its
/// quantile thresholds (`{quantile: q}`) are resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCalibration {
    /// Tokens generated per prompt (default 64).
    #[serde(default)]
    pub tokens: Option<usize>,
    /// Sampling temperature of the calibration samples (default 1.0: the model's own
    /// distribution, unmodified).
    #[serde(default)]
    pub temperature: Option<f64>,
}

/// `choose:`: maximise (or minimise) one metric subject to bounds on others.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChoose {
    /// A checkpoint series id (`sft` for the models `sft@500`, `sft@1000`...); default: every
    /// model.
    #[serde(default)]
    pub among: Option<String>,
    /// The strategy whose samples decide (default: the baseline).
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub maximize: Option<String>,
    #[serde(default)]
    pub minimize: Option<String>,
    #[serde(default)]
    pub subject_to: Vec<RawBound>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBound {
    pub metric: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

fn default_version() -> u32 {
    1
}

fn default_samples() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: String,
    /// A folder holding exactly one `.gguf` file, and a `tokenizer.json` (used when present).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub gguf: Option<String>,
    /// A Hugging Face model folder (config.json, model.safetensors or shards).
    #[serde(default)]
    pub hf: Option<String>,
    /// The model a LoRA adapter applies to: a model id of this file, or a Hugging Face folder.
    #[serde(default)]
    pub base: Option<String>,
    /// A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors).
    #[serde(default)]
    pub lora: Option<String>,
    /// A tokenizer.json; without it the tokenizer is built from the GGUF's own metadata.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// A pattern of checkpoint folders (`runs/sft/checkpoint-*`): one model per folder, ordered
    /// by the step number that ends its name, with ids `<id>@<step>`.
    #[serde(default)]
    pub checkpoints: Option<String>,
    /// Extra end-of-generation tokens, as token strings (e.g. "<end_of_turn>").
    #[serde(default)]
    pub eos_tokens: Vec<String>,
    /// Render every prompt with the model's chat template (`engine::chat`).
    #[serde(default)]
    pub chat: bool,
}

/// Either `{id, text}` or `{file}` (one JSON object `{"id": ..., "text": ...}` per line).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrompt {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// A conversation, for models with `chat: true`.
    #[serde(default)]
    pub messages: Option<Vec<RawMessage>>,
    #[serde(default)]
    pub file: Option<String>,
}

/// One message of a conversation prompt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    pub role: String,
    pub content: String,
}

/// One line of a prompt file: `{"id", "text"}` or `{"id", "messages"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromptLine {
    pub id: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<RawMessage>>,
}
