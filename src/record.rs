//! The sample record: one generated sample with its per-token trace, as stored one per line in
//! `samples.jsonl`. Timing fields (`trace.forward_ms`, `trace.sampler_us`, `timing`) are the
//! only ones allowed to differ between two runs of the same experiment.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub model: String,
    pub prompt_id: String,
    pub strategy: String,
    pub kind: String,
    pub params: serde_json::Value,
    pub sample_index: usize,
    pub seed: u64,
    /// "ok" or "failed".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub prompt: String,
    /// What a chat model was given: the prompt rendered by its chat template (`chat: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_prompt: Option<String>,
    pub text: String,
    pub prompt_tokens: usize,
    pub token_ids: Vec<u32>,
    /// End of each token's text in `text` (a byte offset; one per token id, non-decreasing):
    /// token i wrote `text[ends[i-1]..ends[i]]`, empty where its bytes end inside a character
    /// ([`crate::engine::offsets`]). Empty in records written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_ends: Vec<u32>,
    /// "eos", "stop_string", "max_tokens", "context" or "error".
    pub stop_reason: String,
    pub trace: Trace,
    pub timing: Timing,
    /// The text scored under the experiment's reference model (`scorer:`), filled after
    /// generation; absent without a scorer, for failed samples, and until the scoring pass ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<RefScore>,
}

/// A sample's text teacher-forced through the experiment's reference model ([`crate::teacher`]):
/// the prompt encoded as the scorer encodes it, then the text tokenized by the scorer's own
/// tokenizer (no special tokens), one entry per scorer token. The same text gets the same
/// score whichever model wrote it, so these fields compare across models and checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefScore {
    /// The scorer's model id.
    pub model: String,
    /// Entropy of the scorer's next-token distribution before each text token (nats).
    pub entropy: Vec<f32>,
    /// ln p of each text token under the scorer.
    pub logprob: Vec<f32>,
    /// Why the text could not be scored (longer than the scorer's context...); the arrays are
    /// then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Per-token trace, one entry per generated token (struct of arrays, compact in JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Entropy of the unmodified next-token distribution (nats).
    pub entropy: Vec<f32>,
    /// Varentropy of the unmodified distribution (nats²).
    pub varentropy: Vec<f32>,
    /// Effective temperature (0 = greedy step).
    pub temperature: Vec<f32>,
    /// Entropy of the distribution actually sampled from (nats).
    pub final_entropy: Vec<f32>,
    /// Candidates with non-zero final probability.
    pub kept: Vec<u32>,
    /// ln p of the chosen token under the unmodified distribution.
    pub logprob: Vec<f32>,
    /// p of the chosen token under the final distribution.
    pub p_final: Vec<f32>,
    /// Self-certainty of the unmodified distribution, KL(U ‖ p) (nats; see
    /// [`crate::strategy::Confidence`]). Empty in records written before it existed.
    #[serde(default)]
    pub self_certainty: Vec<f32>,
    /// DeepConf token confidence of the unmodified distribution, −mean ln p of its 20 most
    /// likely tokens (nats). Empty in records written before it existed.
    #[serde(default)]
    pub confidence: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Controller state per token (mirostat's mu, a solved/controlled temperature); null on
    /// steps where the branch taken has no controller.
    pub controller: Option<Vec<Option<f32>>>,
    /// How target_entropy's solve ended per token (`met`, `clamped_min`, `clamped_max`,
    /// `missed`); null on steps where no solve ran; absent when none ever ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solve: Option<Vec<Option<crate::strategy::SolveFlag>>>,
    /// Wall time of the forward pass that consumed each token (the last token is not fed).
    pub forward_ms: Vec<f32>,
    /// Wall time of the sampler (apply + draw + accept) for each token.
    pub sampler_us: Vec<f32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// The prompt's prefill, shared by every sample of the prompt (reported on each).
    pub prefill_ms: f64,
    pub total_ms: f64,
}

impl SampleRecord {
    /// Identity of a sample within an experiment.
    pub fn key(&self) -> (String, String, String, usize) {
        (
            self.model.clone(),
            self.prompt_id.clone(),
            self.strategy.clone(),
            self.sample_index,
        )
    }

    /// The record with every timing field cleared, for reproducibility comparisons.
    pub fn without_timing(&self) -> SampleRecord {
        let mut r = self.clone();
        r.trace.forward_ms.clear();
        r.trace.sampler_us.clear();
        r.timing = Timing::default();
        r
    }

    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

pub fn mean(v: &[f32]) -> Option<f64> {
    if v.is_empty() {
        None
    } else {
        Some(v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64)
    }
}

/// Median of an f32 series (the traces), via [`crate::stats::median`].
pub fn median(v: &[f32]) -> Option<f64> {
    crate::stats::median(&v.iter().map(|&x| x as f64).collect::<Vec<_>>())
}
