//! Experiment files, parsed in two phases (ripgrep-style): `raw` mirrors the YAML with
//! `deny_unknown_fields`; `load` validates it into [`Experiment`], which later code cannot get
//! wrong. All problems found in a file are reported together, each with the YAML path (or the
//! line and column for syntax errors) and what is allowed.

pub mod raw;
pub mod strategy;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ConfigError;
use crate::strategy::StrategySpec;
use raw::{RawExperiment, RawPromptLine};

/// Grids above this many samples get a warning (at ~20 tokens/s they take hours).
pub const LARGE_GRID_SAMPLES: usize = 5_000;

/// Most samples one experiment file may ask for (models x prompts x strategies x samples),
/// counted without overflow before anything is allocated.
pub const MAX_TOTAL_SAMPLES: u64 = 10_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct ModelSpec {
    pub id: String,
    /// Serialised as `"gguf": path` for a GGUF (as before Hugging Face folders existed, so a
    /// GGUF experiment's config hash did not change) or `"hf": {folder, lora}`.
    #[serde(flatten)]
    pub weights: Weights,
    /// A tokenizer.json; `None`: the tokenizer is built from the GGUF's own metadata
    /// (`engine::gguf_tokenizer`). Always set for a Hugging Face folder.
    pub tokenizer: Option<PathBuf>,
    pub eos_tokens: Vec<String>,
    /// Prompts reach the model through its chat template (`engine::chat`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub chat: bool,
}

/// Where a model's weights are.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// A GGUF file.
    Gguf(PathBuf),
    /// A Hugging Face folder (`engine::hf`), with a PEFT LoRA adapter merged at load.
    Hf {
        folder: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        lora: Option<PathBuf>,
    },
}

impl Weights {
    /// The GGUF file or the folder.
    pub fn path(&self) -> &Path {
        match self {
            Weights::Gguf(p) => p,
            Weights::Hf { folder, .. } => folder,
        }
    }

    /// The GGUF file, for a GGUF model.
    pub fn gguf(&self) -> Option<&Path> {
        match self {
            Weights::Gguf(p) => Some(p),
            Weights::Hf { .. } => None,
        }
    }

    /// For messages and the manifest: the file, or the folder and its adapter.
    pub fn describe(&self) -> String {
        match self {
            Weights::Gguf(p) => p.display().to_string(),
            Weights::Hf { folder, lora: None } => folder.display().to_string(),
            Weights::Hf {
                folder,
                lora: Some(l),
            } => format!("{} + LoRA {}", folder.display(), l.display()),
        }
    }
}

impl ModelSpec {
    /// Where the tokenizer comes from, for messages and the manifest.
    pub fn tokenizer_source(&self) -> String {
        match &self.tokenizer {
            Some(t) => t.display().to_string(),
            None => format!(
                "{} (its tokenizer.ggml metadata)",
                self.weights.path().display()
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prompt {
    pub id: String,
    /// The prompt's text; for a conversation, its last message's content (what the report and
    /// the prompt-relative metrics read).
    pub text: String,
    /// A conversation, rendered by each model's chat template (models with `chat: true` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
}

/// One message of a conversation prompt.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Prompt {
    /// `{id, text}` or `{id, messages}` (exactly one of the two), checked.
    fn new(
        id: &str,
        text: Option<&String>,
        messages: Option<&Vec<raw::RawMessage>>,
    ) -> Result<Prompt, String> {
        match (text, messages) {
            (Some(t), None) => Ok(Prompt {
                id: id.to_string(),
                text: t.clone(),
                messages: None,
            }),
            (None, Some(m)) => {
                let last = m
                    .last()
                    .ok_or("`messages` is empty; give at least one {role, content}")?;
                if let Some(bad) = m.iter().position(|m| m.role.trim().is_empty()) {
                    return Err(format!("messages[{bad}].role is empty"));
                }
                Ok(Prompt {
                    id: id.to_string(),
                    text: last.content.clone(),
                    messages: Some(
                        m.iter()
                            .map(|m| Message {
                                role: m.role.clone(),
                                content: m.content.clone(),
                            })
                            .collect(),
                    ),
                })
            }
            (Some(_), Some(_)) => Err("give `text` or `messages`, not both".into()),
            (None, None) => Err("give `text` or `messages` (a list of {role, content})".into()),
        }
    }
}

/// A validated experiment.
#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    pub models: Vec<ModelSpec>,
    pub prompts: Vec<Prompt>,
    pub samples: usize,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    pub strategies: Vec<StrategySpec>,
    pub baseline: String,
    /// The rule that picks one model (a checkpoint) from the results; it changes no sample,
    /// so it is left out of the config hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choose: Option<ChooseRule>,
    /// How quantile thresholds are calibrated; set when a strategy uses one (or when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// The model (an id of `models`, after a checkpoint series is expanded) under which every
    /// sample's text is scored after generation (`RefScore`). It does not change the samples,
    /// so it is left out of the config hash (adding one to a finished run scores its samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer: Option<String>,
    /// Best-of-N selectors applied to every cell's samples; they do not change the samples,
    /// so they are left out of the config hash (adding one to a finished run needs no sample).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub select: Vec<crate::select::SelectorSpec>,
    /// The experiment file and the sha256 of its bytes.
    pub source: PathBuf,
    pub source_sha256: String,
    /// Non-fatal remarks (e.g. a very large grid).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `choose:`, validated: among the models of `among` (a checkpoint series id: its models are
/// `<among>@<step>`) or every model, the one with the best mean (over prompts) of `objective`
/// under `strategy` whose means satisfy every bound (`crate::analysis::checkpoints`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ChooseRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub among: Option<String>,
    pub strategy: String,
    pub objective: String,
    pub maximize: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_to: Vec<Bound>,
}

/// A bound on a metric's mean over prompts: `min <= mean <= max`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Bound {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// The checkpoint series among `ids` (`<series>@<step>` ids, as `checkpoints:` names them),
/// each with its members in step order; a series has two members or more.
pub fn series_of(ids: &[String]) -> Vec<(String, Vec<(u64, String)>)> {
    let mut out: Vec<(String, Vec<(u64, String)>)> = Vec::new();
    for id in ids {
        let Some((series, step)) = id.rsplit_once('@') else {
            continue;
        };
        let Ok(step) = step.parse::<u64>() else {
            continue;
        };
        match out.iter_mut().find(|(s, _)| s == series) {
            Some((_, v)) => v.push((step, id.clone())),
            None => out.push((series.to_string(), vec![(step, id.clone())])),
        }
    }
    out.retain(|(_, v)| v.len() >= 2);
    for (_, v) in &mut out {
        v.sort();
    }
    out
}

fn validate_choose(
    c: &raw::RawChoose,
    models: &[ModelSpec],
    strategies: &[StrategySpec],
    baseline: &str,
    scorer: bool,
    errors: &mut Vec<String>,
) -> Option<ChooseRule> {
    let n = errors.len();
    let ids: Vec<String> = models.iter().map(|m| m.id.clone()).collect();
    let series = series_of(&ids);
    let candidates = match &c.among {
        Some(a) => match series.iter().find(|(s, _)| s == a) {
            Some((_, v)) => v.len(),
            None => {
                let known: Vec<String> = series.iter().map(|(s, _)| format!("{s:?}")).collect();
                errors.push(format!(
                    "choose.among: {a:?} is not a checkpoint series of this file (a `checkpoints:` model with two folders or more); {}",
                    if known.is_empty() { "there is none".to_string() } else { format!("series: {}", known.join(", ")) }
                ));
                0
            }
        },
        None => ids.len(),
    };
    if c.among.is_none() && candidates < 2 {
        errors.push("choose: there is one model to choose from; `choose` picks among two models or more (a checkpoint series, or the models of the file)".into());
    }
    let strategy = c.strategy.clone().unwrap_or_else(|| baseline.to_string());
    if !strategies.iter().any(|s| s.id == strategy) {
        errors.push(format!(
            "choose.strategy: {strategy:?} is not a strategy id; known ids: {}",
            strategies
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let check_metric = |path: &str, m: &str, errors: &mut Vec<String>| {
        match crate::metrics::find(m) {
        None => errors.push(format!(
            "{path}: unknown metric {m:?}; known metrics: {}",
            crate::metrics::REGISTRY.iter().map(|x| x.name).collect::<Vec<_>>().join(", ")
        )),
        Some(x) if x.needs.reference && !scorer => errors.push(format!(
            "{path}: {m} is a reference scorer's metric; add `scorer: <model id>` to the experiment, or choose by another metric"
        )),
        Some(_) => {}
    }
    };
    let (objective, maximize) = match (&c.maximize, &c.minimize) {
        (Some(m), None) => (m.clone(), true),
        (None, Some(m)) => (m.clone(), false),
        _ => {
            errors.push("choose: give exactly one of `maximize: <metric>` or `minimize: <metric>` (e.g. maximize: diversity_embed)".into());
            (String::new(), true)
        }
    };
    if !objective.is_empty() {
        check_metric(
            if maximize {
                "choose.maximize"
            } else {
                "choose.minimize"
            },
            &objective,
            errors,
        );
    }
    let mut subject_to = Vec::new();
    for (i, b) in c.subject_to.iter().enumerate() {
        let p = format!("choose.subject_to[{i}]");
        check_metric(&format!("{p}.metric"), &b.metric, errors);
        match (b.min, b.max) {
            (None, None) => errors.push(format!(
                "{p}: give `min`, `max` or both (e.g. {{metric: nll_ref, max: 3.0}})"
            )),
            (Some(lo), Some(hi)) if lo > hi => {
                errors.push(format!("{p}: min ({lo}) is above max ({hi})"))
            }
            _ => {}
        }
        subject_to.push(Bound {
            metric: b.metric.clone(),
            min: b.min,
            max: b.max,
        });
    }
    (errors.len() == n).then_some(ChooseRule {
        among: c.among.clone(),
        strategy,
        objective,
        maximize,
        subject_to,
    })
}

/// The calibration pass of quantile thresholds (see [`crate::calibrate`]): per model, one
/// sample of up to `tokens` tokens per prompt at `temperature`, seeded from the experiment seed;
/// the per-token entropies of the unmodified distribution make the model's distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub tokens: usize,
    pub temperature: f64,
}

impl Calibration {
    pub const DEFAULT_TOKENS: usize = 64;
}

impl Default for Calibration {
    /// 64 tokens per prompt at T = 1.0: the model's own distribution.
    fn default() -> Self {
        Calibration {
            tokens: Self::DEFAULT_TOKENS,
            temperature: 1.0,
        }
    }
}

impl Experiment {
    /// Whether any strategy has a quantile threshold to resolve per model.
    pub fn needs_calibration(&self) -> bool {
        self.strategies.iter().any(|s| s.needs_calibration())
    }

    pub fn total_samples(&self) -> usize {
        self.models.len() * self.prompts.len() * self.strategies.len() * self.samples
    }
}

/// Expand `${VAR}` and `${VAR:-default}` in a path string.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
        let expr = &after[..end];
        let (var, default) = match expr.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (expr, None),
        };
        match (std::env::var(var).ok().filter(|v| !v.is_empty()), default) {
            // a relative path in the environment is relative to the current directory, not to
            // the experiment file (DECLAB_MODELS=models means ./models)
            (Some(v), _) if out.is_empty() && Path::new(&v).is_relative() => {
                let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
                out.push_str(&cwd.join(v).to_string_lossy());
            }
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {var} is not set (used in {s:?}); set it or write ${{{var}:-default}}")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(base: &Path, s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(expand_env(s)?);
    Ok(if p.is_absolute() { p } else { base.join(p) })
}

/// Read and validate an experiment file. `check_files` also checks that model, tokenizer and
/// prompt files exist (off only for unit tests of the schema).
pub fn load(path: &Path) -> Result<Experiment, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new(path, vec![format!("cannot read the file: {e}")]))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| ConfigError::new(path, vec!["the file is not UTF-8 text".into()]))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let sha = hex(&Sha256::digest(&bytes));
    parse(&text, path, &base, sha)
}

/// Validate experiment YAML text; `file` names it in messages, `base` resolves relative paths.
pub fn parse(
    text: &str,
    file: &Path,
    base: &Path,
    source_sha256: String,
) -> Result<Experiment, ConfigError> {
    let raw: RawExperiment = serde_yaml::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let msg = match e.location() {
            Some(loc) => format!(
                "line {} column {}: {}",
                loc.line(),
                loc.column(),
                strip_location(&msg)
            ),
            None => msg,
        };
        ConfigError::new(file, vec![msg])
    })?;
    let mut errors: Vec<String> = Vec::new();
    let mut warnings = Vec::new();

    if raw.version != 1 {
        errors.push(format!(
            "version: {} is not supported; this declab reads schema version 1",
            raw.version
        ));
    }
    if raw.name.trim().is_empty() || raw.name.contains(['/', '\\']) || raw.name.starts_with('.') {
        errors.push(format!(
            "name: {:?} cannot be used as a results folder name; use letters, digits, '-', '_'",
            raw.name
        ));
    }
    if raw.max_new_tokens == 0 {
        errors.push("max_new_tokens: 0 generates nothing; use a positive number such as 64".into());
    }
    if raw.samples == 0 {
        errors.push("samples: 0 generates nothing; use 1 or more samples per prompt".into());
    }
    for (i, s) in raw.stop.iter().enumerate() {
        if s.is_empty() {
            errors.push(format!(
                "stop[{i}]: an empty stop string would end every generation at once"
            ));
        }
    }

    // models
    let models = resolve_models(&raw.models, base, &mut errors);
    // prompts
    let mut prompts = Vec::new();
    if raw.prompts.is_empty() {
        errors.push(
            "prompts: the list is empty; add {id, text} items or a {file: prompts.jsonl}".into(),
        );
    }
    for (i, rp) in raw.prompts.iter().enumerate() {
        let p = format!("prompts[{i}]");
        match (&rp.id, &rp.file) {
            (Some(id), None) => match Prompt::new(id, rp.text.as_ref(), rp.messages.as_ref()) {
                Ok(pr) => prompts.push(pr),
                Err(e) => errors.push(format!("{p}: {e}")),
            },
            (None, Some(f)) if rp.text.is_none() && rp.messages.is_none() => match resolve(base, f).map_err(|e| e.to_string()).and_then(|f| read_prompt_file(&f)) {
                Ok(list) => prompts.extend(list),
                Err(e) => errors.push(format!("{p}.file: {e}")),
            },
            _ => errors.push(format!("{p}: give either `id` and `text` (or `messages`), or `file` (a JSONL file with one {{\"id\", \"text\"}} or {{\"id\", \"messages\"}} per line)")),
        }
    }
    let mut seen = BTreeSet::new();
    let plain: Vec<&str> = models
        .iter()
        .filter(|m| !m.chat)
        .map(|m| m.id.as_str())
        .collect();
    for pr in &prompts {
        if pr.text.is_empty() && pr.messages.is_none() {
            errors.push(format!("prompts: prompt {:?} has empty text", pr.id));
        }
        if pr.messages.is_some() && !plain.is_empty() {
            errors.push(format!(
                "prompts: prompt {:?} is a conversation (`messages`), which only a chat model can take; set `chat: true` on model {} (it then renders every prompt with its chat template) or give the prompt as `text`",
                pr.id,
                plain.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", ")
            ));
        }
        if !seen.insert(pr.id.clone()) {
            errors.push(format!("prompts: duplicate prompt id {:?}", pr.id));
        }
    }

    // strategies
    let mut strategies = Vec::new();
    if raw.strategies.is_empty() {
        errors.push("strategies: the list is empty; add at least one, e.g. {kind: greedy}".into());
    }
    for (i, b) in raw.strategies.iter().enumerate() {
        match strategy::expand_block(b, &format!("strategies[{i}]")) {
            Ok(list) => strategies.extend(list),
            Err(es) => errors.extend(es.into_iter().map(|e| e.to_string())),
        }
    }
    let mut seen = BTreeSet::new();
    for s in &strategies {
        if !seen.insert(s.id.clone()) {
            errors.push(format!(
                "strategies: duplicate strategy id {:?}; give one of them a `name`",
                s.id
            ));
        }
    }
    let baseline = match &raw.baseline {
        Some(b) if strategies.iter().any(|s| &s.id == b) => b.clone(),
        Some(b) => {
            let known: Vec<&str> = strategies.iter().map(|s| s.id.as_str()).collect();
            errors.push(format!(
                "baseline: {b:?} is not a strategy id; known ids: {}",
                known.join(", ")
            ));
            String::new()
        }
        None => strategies.first().map(|s| s.id.clone()).unwrap_or_default(),
    };

    let calibration = match &raw.calibration {
        Some(c) => {
            let tokens = c.tokens.unwrap_or(Calibration::default().tokens);
            let temperature = c.temperature.unwrap_or(Calibration::default().temperature);
            if tokens == 0 || tokens > 4096 {
                errors.push(format!("calibration.tokens: {tokens} is out of range; allowed: 1 to 4096 tokens per prompt (default {})", Calibration::DEFAULT_TOKENS));
            }
            if !(temperature > 0.0 && temperature.is_finite()) {
                errors.push(format!("calibration.temperature: {temperature} is out of range; allowed: a temperature above 0 (default 1.0, the model's own distribution)"));
            }
            Some(Calibration {
                tokens,
                temperature,
            })
        }
        None if strategies.iter().any(|s| s.needs_calibration()) => Some(Calibration::default()),
        None => None,
    };
    let scorer = match &raw.scorer {
        Some(id) if models.iter().any(|m| &m.id == id) => Some(id.clone()),
        Some(id) => {
            let known: Vec<String> = models.iter().map(|m| format!("{:?}", m.id)).collect();
            errors.push(format!(
                "scorer: {id:?} is not a model id of this file; the scorer is one of `models` (after a checkpoint series is expanded): {}",
                known.join(", ")
            ));
            None
        }
        None => None,
    };

    let choose = raw.choose.as_ref().and_then(|c| {
        validate_choose(
            c,
            &models,
            &strategies,
            &baseline,
            scorer.is_some(),
            &mut errors,
        )
    });

    let select = match crate::select::parse_list(
        &raw.select,
        &crate::select::Limits {
            max_new_tokens: raw.max_new_tokens,
        },
        raw.samples,
    ) {
        Ok(s) => s,
        Err(es) => {
            errors.extend(es.into_iter().map(|e| e.to_string()));
            Vec::new()
        }
    };

    let total = [models.len(), prompts.len(), strategies.len(), raw.samples]
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64));
    if total.is_none_or(|t| t > MAX_TOTAL_SAMPLES) {
        errors.push(format!(
            "samples: the grid expands to {} samples ({} models x {} prompts x {} strategies x {} samples), above declab's limit of {MAX_TOTAL_SAMPLES} per experiment file; lower `samples` or split the experiment into several files",
            total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string()),
            models.len(),
            prompts.len(),
            strategies.len(),
            raw.samples
        ));
    }
    if !errors.is_empty() {
        return Err(ConfigError::new(file, errors));
    }
    let exp = Experiment {
        name: raw.name,
        description: raw.description,
        seed: raw.seed,
        models,
        prompts,
        samples: raw.samples,
        max_new_tokens: raw.max_new_tokens,
        stop: raw.stop,
        strategies,
        baseline,
        choose,
        calibration,
        scorer,
        select,
        source: file.to_path_buf(),
        source_sha256,
        warnings: vec![],
    };
    if exp.total_samples() > LARGE_GRID_SAMPLES {
        warnings.push(format!(
            "the grid expands to {} samples ({} models x {} prompts x {} strategies x {} samples); at ~20 tokens/s this takes hours",
            exp.total_samples(),
            exp.models.len(),
            exp.prompts.len(),
            exp.strategies.len(),
            exp.samples
        ));
    }
    Ok(Experiment { warnings, ..exp })
}

fn strip_location(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

/// The folders `pattern` matches (a glob: `runs/sft/checkpoint-*`), each with the step number
/// that ends its name (`checkpoint-500` is step 500), in step order.
fn checkpoint_folders(pattern: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let text = pattern.to_string_lossy();
    let paths = glob::glob(&text).map_err(|e| format!("{text:?} is not a valid pattern: {e}"))?;
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    for p in paths.filter_map(|p| p.ok()).filter(|p| p.is_dir()) {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let digits: String = name
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let step = digits.parse::<u64>().map_err(|_| {
            format!(
                "{} does not end in a step number (as checkpoint-500 does); narrow the pattern to the checkpoint folders",
                p.display()
            )
        })?;
        if let Some((_, other)) = out.iter().find(|(s, _)| *s == step) {
            return Err(format!(
                "{} and {} are both step {step}",
                other.display(),
                p.display()
            ));
        }
        out.push((step, p));
    }
    if out.is_empty() {
        return Err(format!("no folder matches {text}"));
    }
    out.sort();
    Ok(out)
}

/// The validated models of the file: `gguf:`/`tokenizer:`, `path:` (a folder with one .gguf, or
/// a Hugging Face folder), `hf:`, `base:` + `lora:`, and `checkpoints:` series (of GGUF folders,
/// Hugging Face folders, or, with `base:`, LoRA adapter folders).
fn resolve_models(raw: &[raw::RawModel], base: &Path, errors: &mut Vec<String>) -> Vec<ModelSpec> {
    let mut models = Vec::new();
    if raw.is_empty() {
        errors.push("models: the list is empty; declare at least one model".into());
    }
    let mut seen = BTreeSet::new();
    for (i, m) in raw.iter().enumerate() {
        let p = format!("models[{i}]");
        if !seen.insert(m.id.clone()) {
            errors.push(format!("{p}.id: duplicate model id {:?}", m.id));
        }
        let sources = [
            m.path.is_some(),
            m.gguf.is_some(),
            m.hf.is_some(),
            m.lora.is_some(),
            m.checkpoints.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            errors.push(format!("{p}: give exactly one of `path` (a folder with one .gguf, or a Hugging Face folder), `gguf` (a .gguf file), `hf` (a Hugging Face folder: config.json and safetensors), `lora` (a PEFT adapter folder, with `base`) or `checkpoints` (a pattern of checkpoint folders)"));
            continue;
        }
        if m.base.is_some() && m.lora.is_none() && m.checkpoints.is_none() {
            errors.push(format!("{p}.base: `base` is the model a LoRA adapter applies to; give the adapter as `lora` (or a series of adapter checkpoints as `checkpoints`)"));
            continue;
        }
        if m.lora.is_some() && m.base.is_none() {
            errors.push(format!("{p}.lora: give `base`, the model the adapter was trained on (a model id of this file with `hf:`, or a Hugging Face folder)"));
            continue;
        }
        // a `tokenizer:` given for the model (or a whole series)
        let tok = match &m.tokenizer {
            None => None,
            Some(t) => match resolve(base, t) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(format!("{p}.tokenizer: {e}"));
                    continue;
                }
            },
        };
        // the base folder of a LoRA entry, with its tokenizer
        let lora_base = match &m.base {
            None => None,
            Some(b) => match lora_base(raw, base, b) {
                Ok(x) => Some(x),
                Err(e) => {
                    errors.push(format!("{p}.base: {e}"));
                    continue;
                }
            },
        };
        let folder_tokenizer =
            |dir: &Path| Some(dir.join("tokenizer.json")).filter(|t| t.is_file());
        let make = |id: String, weights: Weights, tokenizer: Option<PathBuf>, at: &str| {
            if let (Weights::Hf { folder, .. }, None) = (&weights, &tokenizer) {
                return Err(format!("{p}{at}: {} has no tokenizer.json; give the tokenizer the model was trained with as `tokenizer:`", folder.display()));
            }
            if let Some(t) = tokenizer.as_ref().filter(|t| !t.is_file()) {
                return Err(format!("{p}.tokenizer: {} does not exist (run `make models` to fetch the default tokenizer, or leave `tokenizer` out to use the model's own)", t.display()));
            }
            Ok(ModelSpec {
                id,
                weights,
                tokenizer,
                eos_tokens: m.eos_tokens.clone(),
                chat: m.chat,
            })
        };
        let mut push = |r: Result<ModelSpec, String>, errors: &mut Vec<String>| match r {
            Ok(s) => models.push(s),
            Err(e) => errors.push(e),
        };
        if let Some(pattern) = &m.checkpoints {
            let list = match resolve(base, pattern).and_then(|pat| checkpoint_folders(&pat)) {
                Ok(l) => l,
                Err(e) => {
                    errors.push(format!("{p}.checkpoints: {e}"));
                    continue;
                }
            };
            for (step, dir) in list {
                let id = format!("{}@{step}", m.id);
                if !seen.insert(id.clone()) {
                    errors.push(format!(
                        "{p}: checkpoint id {id:?} is also another model's id"
                    ));
                }
                let t = tok.clone().or_else(|| folder_tokenizer(&dir));
                if crate::engine::hf::is_adapter_folder(&dir) {
                    match &lora_base {
                        Some((folder, base_tok)) => push(make(id, Weights::Hf { folder: folder.clone(), lora: Some(dir) }, t.or_else(|| base_tok.clone()), ".checkpoints"), errors),
                        None => errors.push(format!("{p}.checkpoints: {} holds a LoRA adapter (adapter_config.json); give `base`, the model it was trained on", dir.display())),
                    }
                } else if lora_base.is_some() {
                    errors.push(format!("{p}.checkpoints: {} is not a LoRA adapter folder (no adapter_config.json), but `base` is given; leave `base` out for full checkpoints", dir.display()));
                } else if crate::engine::hf::is_hf_folder(&dir) {
                    push(
                        make(
                            id,
                            Weights::Hf {
                                folder: dir,
                                lora: None,
                            },
                            t,
                            ".checkpoints",
                        ),
                        errors,
                    );
                } else {
                    match find_gguf(&dir) {
                        Ok(g) => push(make(id, Weights::Gguf(g), t, ".checkpoints"), errors),
                        Err(e) => errors.push(format!("{p}.checkpoints: {e}, and it is not a Hugging Face folder (config.json and model.safetensors) or a LoRA adapter")),
                    }
                }
            }
            continue;
        }
        if let Some(l) = &m.lora {
            let (folder, base_tok) = lora_base.expect("checked above");
            match resolve(base, l) {
                Ok(dir) if crate::engine::hf::is_adapter_folder(&dir) => {
                    let t = tok.or_else(|| folder_tokenizer(&dir)).or(base_tok);
                    push(make(m.id.clone(), Weights::Hf { folder, lora: Some(dir) }, t, ".lora"), errors);
                }
                Ok(dir) => errors.push(format!("{p}.lora: {} has no adapter_config.json; give a PEFT LoRA adapter folder (adapter_config.json and adapter_model.safetensors)", dir.display())),
                Err(e) => errors.push(format!("{p}.lora: {e}")),
            }
            continue;
        }
        if let Some(h) = &m.hf {
            match resolve(base, h) {
                Ok(dir) if dir.is_dir() => {
                    let t = tok.or_else(|| folder_tokenizer(&dir));
                    push(make(m.id.clone(), Weights::Hf { folder: dir, lora: None }, t, ".hf"), errors);
                }
                Ok(dir) => errors.push(format!("{p}.hf: {} is not a folder; give the Hugging Face model folder (config.json and model.safetensors)", dir.display())),
                Err(e) => errors.push(format!("{p}.hf: {e}")),
            }
            continue;
        }
        if let Some(dir) = &m.path {
            if m.tokenizer.is_some() {
                errors.push(format!("{p}: give either `path` (a folder with one .gguf, and a tokenizer.json unless the GGUF's own tokenizer is wanted) or `gguf` (and optionally `tokenizer`, a tokenizer.json to use instead of the GGUF's own)"));
                continue;
            }
            match resolve(base, dir) {
                Ok(d) if crate::engine::hf::is_hf_folder(&d) => {
                    let t = folder_tokenizer(&d);
                    push(
                        make(
                            m.id.clone(),
                            Weights::Hf {
                                folder: d,
                                lora: None,
                            },
                            t,
                            ".path",
                        ),
                        errors,
                    );
                }
                Ok(d) => match find_gguf(&d) {
                    Ok(g) => {
                        let t = folder_tokenizer(&d);
                        push(make(m.id.clone(), Weights::Gguf(g), t, ".path"), errors);
                    }
                    Err(e) => errors.push(format!("{p}.path: {e}")),
                },
                Err(e) => errors.push(format!("{p}.path: {e}")),
            }
            continue;
        }
        let g = m.gguf.as_ref().expect("one source, checked above");
        match resolve(base, g) {
            Ok(g) if g.is_dir() => errors.push(format!(
                "{p}.gguf: {} is a folder; give the path of the .gguf file in it (or `hf:` for a Hugging Face folder)",
                g.display()
            )),
            Ok(g) if !g.is_file() => {
                errors.push(format!(
                    "{p}.gguf: {} does not exist (run `make models` to fetch the default model)",
                    g.display()
                ));
                if let Some(t) = tok.as_ref().filter(|t| !t.is_file()) {
                    errors.push(format!("{p}.tokenizer: {} does not exist (run `make models` to fetch the default tokenizer, or leave `tokenizer` out to use the GGUF's own)", t.display()));
                }
            }
            Ok(g) => push(make(m.id.clone(), Weights::Gguf(g), tok, ".gguf"), errors),
            Err(e) => errors.push(format!("{p}.gguf: {e}")),
        }
    }
    models
}

/// The folder (and its tokenizer) a LoRA entry's `base` names: a model id of this file given
/// as a Hugging Face folder, or a folder.
fn lora_base(
    raw: &[raw::RawModel],
    base: &Path,
    b: &str,
) -> Result<(PathBuf, Option<PathBuf>), String> {
    let tokenizer_of = |m: &raw::RawModel, dir: &Path| -> Result<Option<PathBuf>, String> {
        match &m.tokenizer {
            Some(t) => resolve(base, t).map(Some).map_err(|e| e.to_string()),
            None => Ok(Some(dir.join("tokenizer.json")).filter(|t| t.is_file())),
        }
    };
    if let Some(m) = raw.iter().find(|m| m.id == b) {
        let dir = match (&m.hf, &m.path) {
            (Some(h), _) => resolve(base, h).map_err(|e| e.to_string())?,
            (None, Some(d)) => {
                let d = resolve(base, d).map_err(|e| e.to_string())?;
                if !crate::engine::hf::is_hf_folder(&d) {
                    return Err(format!("model {b:?} ({}) is not a Hugging Face folder; a LoRA adapter applies to an f32/bf16/f16 Hugging Face checkpoint (`hf:`), not to a GGUF", d.display()));
                }
                d
            }
            _ => {
                return Err(format!("model {b:?} is not a Hugging Face folder (`hf:`); a LoRA adapter applies to an f32/bf16/f16 Hugging Face checkpoint, not to a GGUF, a series or another adapter"))
            }
        };
        let t = tokenizer_of(m, &dir)?;
        return Ok((dir, t));
    }
    let dir = resolve(base, b).map_err(|e| e.to_string())?;
    if !dir.is_dir() {
        return Err(format!(
            "{b:?} is neither a model id of this file nor a folder; give the id of an `hf:` model or the base model's Hugging Face folder"
        ));
    }
    let t = Some(dir.join("tokenizer.json")).filter(|t| t.is_file());
    Ok((dir, t))
}

fn find_gguf(dir: &Path) -> Result<PathBuf, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read folder {}: {e}", dir.display()))?;
    let ggufs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match ggufs.len() {
        1 => Ok(ggufs.into_iter().next().expect("one")),
        0 => Err(format!("no .gguf file in {}", dir.display())),
        n => Err(format!(
            "{n} .gguf files in {}; name one with `gguf:`",
            dir.display()
        )),
    }
}

fn read_prompt_file(path: &Path) -> Result<Vec<Prompt>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p: RawPromptLine = serde_json::from_str(line).map_err(|e| {
            format!(
                "{}:{}: not a JSON object {{\"id\": ..., \"text\": ...}} or {{\"id\": ..., \"messages\": [...]}}: {e}",
                path.display(),
                i + 1
            )
        })?;
        out.push(
            Prompt::new(&p.id, p.text.as_ref(), p.messages.as_ref())
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?,
        );
    }
    if out.is_empty() {
        return Err(format!(
            "{} holds no prompts (expected one JSON object per line)",
            path.display()
        ));
    }
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Experiment, String> {
        parse(yaml, Path::new("x.yaml"), Path::new("."), String::new()).map_err(|e| e.to_string())
    }

    const MODELS: &str = "models: [{id: m, gguf: Cargo.toml, tokenizer: Cargo.toml}]\n";

    #[test]
    fn reports_syntax_errors_with_line_and_column() {
        let e = check("name: x\nseed: [1\n").unwrap_err();
        assert!(e.contains("x.yaml") && e.contains("line "), "{e}");
    }

    #[test]
    fn unknown_top_level_key() {
        let e = check(&format!("name: x\nseed: 1\n{MODELS}prompts: [{{id: a, text: b}}]\nmax_new_tokens: 4\nstrategies: [{{kind: greedy}}]\nsampels: 3\n")).unwrap_err();
        assert!(e.contains("unknown field `sampels`"), "{e}");
    }

    #[test]
    fn collects_all_errors() {
        let e = check(&format!(
            "name: x\nseed: 1\n{MODELS}prompts: [{{id: a, text: b}}, {{id: a, text: c}}]\nmax_new_tokens: 0\nsamples: 0\nstrategies: [{{kind: top_p, top_p: 2}}]\nbaseline: nope\n"
        ))
        .unwrap_err();
        for needle in [
            "max_new_tokens",
            "samples: 0",
            "duplicate prompt id",
            "strategies[0].top_p",
            "baseline",
        ] {
            assert!(e.contains(needle), "missing {needle}: {e}");
        }
    }

    #[test]
    fn missing_model_file_names_make_models() {
        let e = check("name: x\nseed: 1\nmodels: [{id: m, gguf: nope.gguf, tokenizer: nope.json}]\nprompts: [{id: a, text: b}]\nmax_new_tokens: 4\nstrategies: [{kind: greedy}]\n").unwrap_err();
        assert!(
            e.contains("models[0].gguf") && e.contains("make models"),
            "{e}"
        );
    }

    #[test]
    fn gguf_alone_uses_the_gguf_tokenizer_and_path_prefers_a_tokenizer_json() {
        let rest = "prompts: [{id: a, text: b}]\nmax_new_tokens: 4\nstrategies: [{kind: greedy}]\n";
        let e = check(&format!(
            "name: x\nseed: 1\nmodels: [{{id: m, gguf: Cargo.toml}}]\n{rest}"
        ))
        .unwrap();
        assert_eq!(e.models[0].tokenizer, None);
        assert!(e.models[0].tokenizer_source().contains("tokenizer.ggml"));
        let e = check(&format!("name: x\nseed: 1\n{MODELS}{rest}")).unwrap();
        assert_eq!(e.models[0].tokenizer, Some(PathBuf::from("./Cargo.toml")));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.gguf"), b"").unwrap();
        let yaml = format!(
            "name: x\nseed: 1\nmodels: [{{id: m, path: {}}}]\n{rest}",
            dir.path().display()
        );
        assert_eq!(check(&yaml).unwrap().models[0].tokenizer, None);
        std::fs::write(dir.path().join("tokenizer.json"), b"{}").unwrap();
        assert_eq!(
            check(&yaml).unwrap().models[0].tokenizer,
            Some(dir.path().join("tokenizer.json"))
        );
        // a tokenizer.json that is named but missing is still an error, with the way out
        let e = check(&format!(
            "name: x\nseed: 1\nmodels: [{{id: m, gguf: Cargo.toml, tokenizer: nope.json}}]\n{rest}"
        ))
        .unwrap_err();
        assert!(
            e.contains("models[0].tokenizer") && e.contains("leave `tokenizer` out"),
            "{e}"
        );
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("DECLAB_TEST_ENV_X", "/abc");
        assert_eq!(
            expand_env("${DECLAB_TEST_ENV_X}/m.gguf").unwrap(),
            "/abc/m.gguf"
        );
        assert_eq!(
            expand_env("${DECLAB_TEST_UNSET_Y:-../models}/m").unwrap(),
            "../models/m"
        );
        assert!(expand_env("${DECLAB_TEST_UNSET_Y}/m").is_err());
    }

    #[test]
    fn valid_file_defaults_baseline_to_first_strategy() {
        let e = check(&format!("name: x\nseed: 1\n{MODELS}prompts: [{{id: a, text: b}}]\nmax_new_tokens: 4\nstrategies: [{{kind: greedy}}, {{kind: temperature, temperature: [0.7, 1.0]}}]\n")).unwrap();
        assert_eq!(e.baseline, "greedy");
        assert_eq!(e.strategies.len(), 3);
        assert_eq!(e.samples, 1);
    }
}
