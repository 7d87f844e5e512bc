//! `manifest.json`: what produced a results folder (declab version, resolved config and its
//! hash, model files and their hashes, host, shard) and how far the run got.

use serde::Serialize;

use crate::config::Experiment;
use crate::grid::Shard;

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Manifest {
    pub declab_version: String,
    pub git_commit: Option<String>,
    pub experiment: String,
    pub config_file: String,
    pub config_sha256: String,
    pub resolved_config: serde_json::Value,
    pub seed: u64,
    pub models: Vec<ModelInfo>,
    pub threads: usize,
    pub host_cpu: String,
    /// The host's name (for messages that say where samples were made).
    #[serde(default)]
    pub host: String,
    /// The class of arithmetic the samples were computed with ([`crate::engine::Numerics`]):
    /// hosts of one class give the same bits, so resume and merge refuse to mix classes.
    /// Empty in manifests written before it was recorded.
    #[serde(default)]
    pub numerics: String,
    /// The kernel tiers the run used on this host, for the record (they do not change the
    /// samples within one class).
    #[serde(default)]
    pub kernels: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub samples_total: usize,
    pub samples_done: usize,
    pub samples_failed: usize,
    /// Set on a shard's manifest; absent on single-process and merged runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Each model's entropy calibration and the quantile thresholds resolved from it (only when
    /// a strategy has one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<crate::calibrate::ModelCalibration>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub id: String,
    /// The GGUF file, or the Hugging Face folder (and its LoRA adapter).
    #[serde(alias = "gguf")]
    pub weights: String,
    /// The GGUF's sha256, or that of a Hugging Face folder's listing
    /// ([`crate::engine::weights_sha256`]).
    #[serde(alias = "gguf_sha256")]
    pub weights_sha256: String,
    pub tokenizer: String,
    pub tokenizer_sha256: String,
    pub architecture: String,
    pub vocab_size: usize,
    pub context_length: usize,
    pub load_ms: f64,
}

pub fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// This host's name (`gethostname`), or "unknown".
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL or the end.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if ok && !s.is_empty() => s.to_string(),
        _ => "unknown".into(),
    }
}

/// A hash of what determines the samples (the resolved config), used to refuse resuming a folder
/// written by a different configuration.
pub fn config_hash(exp: &Experiment) -> String {
    use sha2::{Digest, Sha256};
    let mut v = serde_json::to_value(exp).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("source");
        o.remove("source_sha256");
        o.remove("description");
        o.remove("select");
        o.remove("scorer");
        o.remove("choose");
    }
    crate::config::hex(&Sha256::digest(serde_json::to_vec(&v).unwrap_or_default()))
}

/// The manifest's timestamps: UTC, RFC 3339, whole seconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The commit declab was built from, when the build recorded one.
pub fn git_commit() -> Option<String> {
    option_env!("DECLAB_GIT_COMMIT")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
