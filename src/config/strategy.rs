//! Strategy blocks: grid expansion, per-kind parameter checking and stable ids.
//!
//! A block is a YAML mapping with a `kind` and parameters. Any scalar parameter given as a list
//! is a grid axis; the block expands to the cartesian product of its axes, in the order the keys
//! are written, the last key varying fastest. Nested structures (`chain`, the branches of
//! `entropy_switch`) are never expanded. Each expanded block is then deserialised into a
//! kind-specific struct with `deny_unknown_fields`, so a misspelt parameter is an error for
//! every kind, and its values are range-checked.

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::strategy::{ProcSpec, StrategySpec, TargetMode, TargetSignal, Unit};

/// Every strategy kind declab knows.
pub const KINDS: &[&str] = &[
    "greedy",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "top_n_sigma",
    "chain",
    "entropy_switch",
    "target_entropy",
    "mirostat",
    "dynatemp",
    "edt",
];

/// Keys whose values are structures, never grid axes.
const NESTED_KEYS: &[&str] = &["chain", "low", "mid", "high"];

/// An error at a YAML path inside the experiment file.
#[derive(Debug, Clone, PartialEq)]
pub struct PathError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn err(path: &str, message: impl Into<String>) -> PathError {
    PathError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Expand one strategy block into its grid of validated strategies.
pub fn expand_block(block: &Value, path: &str) -> Result<Vec<StrategySpec>, Vec<PathError>> {
    let map = block.as_mapping().ok_or_else(|| {
        vec![err(
            path,
            "a strategy must be a mapping with a `kind`, e.g. {kind: top_p, top_p: 0.9}",
        )]
    })?;
    let kind = kind_of(map, path).map_err(|e| vec![e])?;
    let _ = kind;
    let mut combos: Vec<Mapping> = vec![Mapping::new()];
    let mut axes = 0;
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        match v {
            Value::Sequence(items) if !NESTED_KEYS.contains(&key) => {
                if items.is_empty() {
                    return Err(vec![err(&format!("{path}.{key}"), "an empty list expands the grid to zero strategies; give at least one value")]);
                }
                axes += 1;
                let mut next = Vec::with_capacity(combos.len() * items.len());
                for c in &combos {
                    for item in items {
                        let mut m = c.clone();
                        m.insert(k.clone(), item.clone());
                        next.push(m);
                    }
                }
                combos = next;
            }
            _ => {
                for c in &mut combos {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let _ = axes;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, m) in combos.iter().enumerate() {
        let p = if combos.len() > 1 {
            format!("{path} (grid point {i})")
        } else {
            path.to_string()
        };
        match parse_single(m, &p) {
            Ok(s) => out.push(s),
            Err(e) => {
                errors.extend(e);
                break; // the same mistake would repeat for every grid point
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn kind_of(map: &Mapping, path: &str) -> Result<String, PathError> {
    match map.get("kind") {
        None => Err(err(
            path,
            format!("missing `kind`; one of: {}", KINDS.join(", ")),
        )),
        Some(Value::String(k)) if KINDS.contains(&k.as_str()) => Ok(k.clone()),
        Some(Value::String(k)) => Err(err(
            &format!("{path}.kind"),
            format!("unknown strategy kind `{k}`; one of: {}", KINDS.join(", ")),
        )),
        Some(_) => Err(err(&format!("{path}.kind"), "`kind` must be a string")),
    }
}

/// Parse one block with scalar parameters (no grid lists) into a strategy.
pub fn parse_single(map: &Mapping, path: &str) -> Result<StrategySpec, Vec<PathError>> {
    let kind = kind_of(map, path).map_err(|e| vec![e])?;
    let name = match map.get("name") {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(_) => {
            return Err(vec![err(
                &format!("{path}.name"),
                "`name` must be a non-empty string",
            )])
        }
    };
    let processors = processors_for(&kind, map, path)?;
    let id = name.unwrap_or_else(|| strategy_id(&kind, map));
    let params = serde_json::to_value(map).unwrap_or(serde_json::Value::Null);
    Ok(StrategySpec {
        id,
        kind,
        processors,
        params,
    })
}

fn de<T: for<'de> Deserialize<'de>>(map: &Mapping, path: &str) -> Result<T, Vec<PathError>> {
    serde_yaml::from_value(Value::Mapping(map.clone())).map_err(|e| {
        let msg = e.to_string();
        // serde_yaml reports lists where scalars belong as "invalid type: sequence"
        let msg = if msg.contains("invalid type: sequence") {
            format!("{msg} (grid lists are only expanded at the top level of a strategy block)")
        } else {
            msg
        };
        vec![err(path, msg)]
    })
}

struct Checker<'a> {
    path: &'a str,
    errors: Vec<PathError>,
}

impl Checker<'_> {
    fn check(&mut self, key: &str, value: Option<f64>, ok: bool, allowed: &str) {
        if let Some(v) = value {
            if !ok || !v.is_finite() {
                self.errors.push(err(
                    &format!("{}.{key}", self.path),
                    format!("{v} is out of range; allowed: {allowed}"),
                ));
            }
        }
    }
    fn prob(&mut self, key: &str, v: Option<f64>) {
        self.check(
            key,
            v,
            v.is_some_and(|x| x > 0.0 && x <= 1.0),
            "0 < value <= 1",
        );
    }
    fn open_prob(&mut self, key: &str, v: Option<f64>) {
        self.check(
            key,
            v,
            v.is_some_and(|x| x > 0.0 && x < 1.0),
            "0 < value < 1",
        );
    }
    fn temperature(&mut self, key: &str, v: Option<f64>) {
        self.check(
            key,
            v,
            v.is_some_and(|x| (0.0..=100.0).contains(&x)),
            "0 <= temperature <= 100 (0 means greedy)",
        );
    }
    fn positive(&mut self, key: &str, v: Option<f64>) {
        self.check(key, v, v.is_some_and(|x| x > 0.0), "value > 0");
    }
    fn non_negative(&mut self, key: &str, v: Option<f64>) {
        self.check(key, v, v.is_some_and(|x| x >= 0.0), "value >= 0");
    }
    fn done<T>(self, value: T) -> Result<T, Vec<PathError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }
}

/// Parameters shared by the plain sampling kinds; applied in Hugging Face's order
/// (repetition penalty, temperature, top_k, top_p, min_p, typical_p, epsilon, eta, then top_n_sigma),
/// or with temperature last (llama.cpp's order) when `temperature_last: true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flat {
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    temperature: Option<f64>,
    #[serde(default)]
    temperature_last: bool,
    top_k: Option<usize>,
    top_p: Option<f64>,
    min_p: Option<f64>,
    typical_p: Option<f64>,
    epsilon_cutoff: Option<f64>,
    eta_cutoff: Option<f64>,
    top_n_sigma: Option<f64>,
    repetition_penalty: Option<f64>,
}

impl Flat {
    fn check(&self, path: &str) -> Result<(), Vec<PathError>> {
        let mut c = Checker {
            path,
            errors: vec![],
        };
        c.temperature("temperature", self.temperature);
        if self.top_k == Some(0) {
            c.errors.push(err(
                &format!("{path}.top_k"),
                "0 is out of range; allowed: top_k >= 1",
            ));
        }
        c.prob("top_p", self.top_p);
        c.prob("min_p", self.min_p);
        c.prob("typical_p", self.typical_p);
        c.open_prob("epsilon_cutoff", self.epsilon_cutoff);
        c.open_prob("eta_cutoff", self.eta_cutoff);
        c.positive("top_n_sigma", self.top_n_sigma);
        c.positive("repetition_penalty", self.repetition_penalty);
        c.done(())
    }

    /// Truncation processors in HF order (no temperature).
    fn truncation(&self) -> Vec<ProcSpec> {
        let mut v = Vec::new();
        if let Some(top_k) = self.top_k {
            v.push(ProcSpec::TopK { top_k });
        }
        if let Some(top_p) = self.top_p {
            v.push(ProcSpec::TopP { top_p });
        }
        if let Some(min_p) = self.min_p {
            v.push(ProcSpec::MinP { min_p });
        }
        if let Some(typical_p) = self.typical_p {
            v.push(ProcSpec::TypicalP { typical_p });
        }
        if let Some(epsilon_cutoff) = self.epsilon_cutoff {
            v.push(ProcSpec::EpsilonCutoff { epsilon_cutoff });
        }
        if let Some(eta_cutoff) = self.eta_cutoff {
            v.push(ProcSpec::EtaCutoff { eta_cutoff });
        }
        if let Some(top_n_sigma) = self.top_n_sigma {
            v.push(ProcSpec::TopNSigma { top_n_sigma });
        }
        v
    }

    fn chain(&self) -> Vec<ProcSpec> {
        let mut v = Vec::new();
        if let Some(repetition_penalty) = self.repetition_penalty {
            v.push(ProcSpec::RepetitionPenalty { repetition_penalty });
        }
        let t = self
            .temperature
            .map(|temperature| ProcSpec::Temperature { temperature });
        if !self.temperature_last {
            v.extend(t.clone());
        }
        v.extend(self.truncation());
        if self.temperature_last {
            v.extend(t);
        }
        if v.is_empty() {
            v.push(ProcSpec::Temperature { temperature: 1.0 });
        }
        v
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GreedyBlock {
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    repetition_penalty: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainBlock {
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    chain: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBlock {
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "nats")]
    unit: Unit,
    entropy_low: f64,
    entropy_high: f64,
    varentropy_low: Option<f64>,
    varentropy_high: Option<f64>,
    low: Value,
    mid: Value,
    high: Value,
}

fn nats() -> Unit {
    Unit::Nats
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Solve,
    Feedback,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBlock {
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    target: f64,
    #[serde(default = "nats")]
    unit: Unit,
    #[serde(default = "solve")]
    mode: Mode,
    #[serde(default = "t_min")]
    t_min: f64,
    #[serde(default = "t_max")]
    t_max: f64,
    signal: Option<TargetSignal>,
    kp: Option<f64>,
    ki: Option<f64>,
    t_init: Option<f64>,
    top_p: Option<f64>,
    min_p: Option<f64>,
}

fn solve() -> Mode {
    Mode::Solve
}
fn t_min() -> f64 {
    0.05
}
fn t_max() -> f64 {
    5.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirostatBlock {
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "two")]
    version: u8,
    #[serde(default = "tau")]
    mirostat_tau: f64,
    #[serde(default = "eta")]
    mirostat_eta: f64,
    #[serde(default = "one")]
    temperature: f64,
}

fn two() -> u8 {
    2
}
fn tau() -> f64 {
    5.0
}
fn eta() -> f64 {
    0.1
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DynatempBlock {
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "dyn_t")]
    temperature: f64,
    dynatemp_range: f64,
    #[serde(default = "one")]
    dynatemp_exponent: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    min_p: Option<f64>,
}

fn dyn_t() -> f64 {
    0.8
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdtBlock {
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "one")]
    temperature: f64,
    edt_theta: f64,
    #[serde(default = "edt_n")]
    edt_n: f64,
    top_p: Option<f64>,
    min_p: Option<f64>,
}

fn edt_n() -> f64 {
    0.8
}

fn truncation_after(top_p: Option<f64>, min_p: Option<f64>) -> Vec<ProcSpec> {
    let mut v = Vec::new();
    if let Some(top_p) = top_p {
        v.push(ProcSpec::TopP { top_p });
    }
    if let Some(min_p) = min_p {
        v.push(ProcSpec::MinP { min_p });
    }
    v
}

/// The processor chain for one expanded block.
fn processors_for(kind: &str, map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    match kind {
        "greedy" => {
            let b: GreedyBlock = de(map, path)?;
            let mut c = Checker {
                path,
                errors: vec![],
            };
            c.positive("repetition_penalty", b.repetition_penalty);
            let mut v: Vec<ProcSpec> = b
                .repetition_penalty
                .map(|repetition_penalty| ProcSpec::RepetitionPenalty { repetition_penalty })
                .into_iter()
                .collect();
            v.push(ProcSpec::Greedy);
            c.done(v)
        }
        "temperature" | "top_k" | "top_p" | "min_p" | "typical_p" | "epsilon_cutoff"
        | "eta_cutoff" | "top_n_sigma" => {
            let f: Flat = de(map, path)?;
            let present = match kind {
                "temperature" => f.temperature.is_some(),
                "top_k" => f.top_k.is_some(),
                "top_p" => f.top_p.is_some(),
                "min_p" => f.min_p.is_some(),
                "typical_p" => f.typical_p.is_some(),
                "epsilon_cutoff" => f.epsilon_cutoff.is_some(),
                "eta_cutoff" => f.eta_cutoff.is_some(),
                _ => f.top_n_sigma.is_some(),
            };
            if !present {
                return Err(vec![err(
                    path,
                    format!(
                        "kind `{kind}` needs its parameter `{kind}` (e.g. {kind}: {})",
                        example(kind)
                    ),
                )]);
            }
            f.check(path)?;
            Ok(f.chain())
        }
        "chain" => {
            let b: ChainBlock = de(map, path)?;
            if b.chain.is_empty() {
                return Err(vec![err(&format!("{path}.chain"), "an empty chain; list processors such as [{top_k: 40}, {top_p: 0.9}, {temperature: 0.8}]")]);
            }
            let mut v = Vec::new();
            let mut errors = Vec::new();
            for (i, item) in b.chain.iter().enumerate() {
                match chain_item(item, &format!("{path}.chain[{i}]")) {
                    Ok(p) => v.extend(p),
                    Err(e) => errors.extend(e),
                }
            }
            if errors.is_empty() {
                Ok(v)
            } else {
                Err(errors)
            }
        }
        "entropy_switch" => {
            let b: SwitchBlock = de(map, path)?;
            let mut c = Checker {
                path,
                errors: vec![],
            };
            c.non_negative("entropy_low", Some(b.entropy_low));
            c.non_negative("entropy_high", Some(b.entropy_high));
            c.non_negative("varentropy_low", b.varentropy_low);
            c.non_negative("varentropy_high", b.varentropy_high);
            if b.entropy_low > b.entropy_high {
                c.errors.push(err(
                    &format!("{path}.entropy_low"),
                    format!("entropy_low ({}) is above entropy_high ({}); thresholds must be ordered low <= high", b.entropy_low, b.entropy_high),
                ));
            }
            let mut branch = |key: &str, v: &Value| match nested_block(v, &format!("{path}.{key}"))
            {
                Ok(s) => s.processors,
                Err(e) => {
                    c.errors.extend(e);
                    vec![]
                }
            };
            let low = branch("low", &b.low);
            let mid = branch("mid", &b.mid);
            let high = branch("high", &b.high);
            let u = b.unit;
            c.done(vec![ProcSpec::EntropySwitch {
                entropy_low_nats: u.to_nats(b.entropy_low),
                entropy_high_nats: u.to_nats(b.entropy_high),
                varentropy_low_nats2: b.varentropy_low.map(|v| u.to_nats2(v)),
                varentropy_high_nats2: b.varentropy_high.map(|v| u.to_nats2(v)),
                low,
                mid,
                high,
            }])
        }
        "target_entropy" => {
            let b: TargetBlock = de(map, path)?;
            let mut c = Checker {
                path,
                errors: vec![],
            };
            c.non_negative("target", Some(b.target));
            c.positive("t_min", Some(b.t_min));
            if b.t_max <= b.t_min {
                c.errors.push(err(
                    &format!("{path}.t_max"),
                    format!("t_max ({}) must be above t_min ({})", b.t_max, b.t_min),
                ));
            }
            c.non_negative("kp", b.kp);
            c.non_negative("ki", b.ki);
            c.positive("t_init", b.t_init);
            c.prob("top_p", b.top_p);
            c.prob("min_p", b.min_p);
            if b.mode == Mode::Solve {
                for (k, present) in [
                    ("signal", b.signal.is_some()),
                    ("kp", b.kp.is_some()),
                    ("ki", b.ki.is_some()),
                    ("t_init", b.t_init.is_some()),
                ] {
                    if present {
                        c.errors.push(err(
                            &format!("{path}.{k}"),
                            format!("`{k}` only applies to `mode: feedback`"),
                        ));
                    }
                }
            }
            let mode = match b.mode {
                Mode::Solve => TargetMode::Solve {
                    t_min: b.t_min,
                    t_max: b.t_max,
                },
                Mode::Feedback => TargetMode::Feedback {
                    signal: b.signal.unwrap_or(TargetSignal::Entropy),
                    kp: b.kp.unwrap_or(0.5),
                    ki: b.ki.unwrap_or(0.05),
                    t_init: b.t_init.unwrap_or(1.0),
                    t_min: b.t_min,
                    t_max: b.t_max,
                },
            };
            let mut v = vec![ProcSpec::TargetEntropy {
                target_nats: b.unit.to_nats(b.target),
                mode,
            }];
            v.extend(truncation_after(b.top_p, b.min_p));
            c.done(v)
        }
        "mirostat" => {
            let b: MirostatBlock = de(map, path)?;
            let mut c = Checker {
                path,
                errors: vec![],
            };
            if b.version != 1 && b.version != 2 {
                c.errors.push(err(
                    &format!("{path}.version"),
                    format!("{} is not a mirostat version; allowed: 1 or 2", b.version),
                ));
            }
            c.positive("mirostat_tau", Some(b.mirostat_tau));
            c.positive("mirostat_eta", Some(b.mirostat_eta));
            c.temperature("temperature", Some(b.temperature));
            c.done(vec![ProcSpec::Mirostat {
                version: b.version,
                mirostat_tau: b.mirostat_tau,
                mirostat_eta: b.mirostat_eta,
                temperature: b.temperature,
            }])
        }
        "dynatemp" => {
            let b: DynatempBlock = de(map, path)?;
            let mut c = Checker {
                path,
                errors: vec![],
            };
            c.temperature("temperature", Some(b.temperature));
            c.non_negative("dynatemp_range", Some(b.dynatemp_range));
            c.positive("dynatemp_exponent", Some(b.dynatemp_exponent));
            if b.top_k == Some(0) {
                c.errors.push(err(
                    &format!("{path}.top_k"),
                    "0 is out of range; allowed: top_k >= 1",
                ));
            }
            c.prob("top_p", b.top_p);
            c.prob("min_p", b.min_p);
            // llama.cpp order: truncation first, temperature (temp_ext) last
            let mut v = Vec::new();
            if let Some(top_k) = b.top_k {
                v.push(ProcSpec::TopK { top_k });
            }
            v.extend(truncation_after(b.top_p, b.min_p));
            v.push(ProcSpec::Dynatemp {
                temperature: b.temperature,
                dynatemp_range: b.dynatemp_range,
                dynatemp_exponent: b.dynatemp_exponent,
            });
            c.done(v)
        }
        "edt" => {
            let b: EdtBlock = de(map, path)?;
            let mut c = Checker {
                path,
                errors: vec![],
            };
            c.temperature("temperature", Some(b.temperature));
            c.positive("edt_theta", Some(b.edt_theta));
            c.open_prob("edt_n", Some(b.edt_n));
            c.prob("top_p", b.top_p);
            c.prob("min_p", b.min_p);
            let mut v = vec![ProcSpec::Edt {
                temperature: b.temperature,
                edt_theta: b.edt_theta,
                edt_n: b.edt_n,
            }];
            v.extend(truncation_after(b.top_p, b.min_p));
            c.done(v)
        }
        other => Err(vec![err(path, format!("unknown strategy kind `{other}`"))]),
    }
}

fn example(kind: &str) -> &'static str {
    match kind {
        "temperature" => "0.8",
        "top_k" => "40",
        "top_p" => "0.9",
        "min_p" => "0.05",
        "typical_p" => "0.9",
        "epsilon_cutoff" => "0.0003",
        "eta_cutoff" => "0.002",
        _ => "1.0",
    }
}

/// A nested strategy block (a branch or a chain item with `kind`): no grid lists allowed.
fn nested_block(v: &Value, path: &str) -> Result<StrategySpec, Vec<PathError>> {
    let map = v.as_mapping().ok_or_else(|| {
        vec![err(
            path,
            "expected a strategy block such as {kind: greedy}",
        )]
    })?;
    let kind = kind_of(map, path).map_err(|e| vec![e])?;
    if kind == "entropy_switch" {
        return Err(vec![err(
            path,
            "entropy_switch cannot be nested inside another strategy",
        )]);
    }
    for (k, val) in map {
        if matches!(val, Value::Sequence(_))
            && !NESTED_KEYS.contains(&k.as_str().unwrap_or_default())
        {
            return Err(vec![err(
                &format!("{path}.{}", k.as_str().unwrap_or("?")),
                "grid lists are only expanded at the top level of a strategy block",
            )]);
        }
    }
    parse_single(map, path)
}

/// One chain element: `{top_k: 40}`-style single-key processor, `greedy`, or a nested block.
fn chain_item(item: &Value, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    if let Value::String(s) = item {
        if s == "greedy" {
            return Ok(vec![ProcSpec::Greedy]);
        }
    }
    let map = item.as_mapping().ok_or_else(|| {
        vec![err(
            path,
            "expected {processor: value}, e.g. {top_p: 0.9}, or a block with `kind`",
        )]
    })?;
    if map.contains_key("kind") {
        return Ok(nested_block(item, path)?.processors);
    }
    if map.len() != 1 {
        return Err(vec![err(path, "each chain element holds one processor, e.g. {top_k: 40}; use one element per processor")]);
    }
    let (k, v) = map.iter().next().expect("one entry");
    let key = k.as_str().unwrap_or_default();
    let num = |v: &Value| {
        v.as_f64().ok_or_else(|| {
            vec![err(
                &format!("{path}.{key}"),
                format!("expected a number, got {}", short(v)),
            )]
        })
    };
    let mut c = Checker {
        path,
        errors: vec![],
    };
    let p = match key {
        "greedy" => ProcSpec::Greedy,
        "temperature" => {
            let t = num(v)?;
            c.temperature(key, Some(t));
            ProcSpec::Temperature { temperature: t }
        }
        "top_k" => {
            let k = v.as_u64().filter(|&k| k >= 1).ok_or_else(|| vec![err(&format!("{path}.top_k"), format!("{} is out of range; allowed: an integer >= 1", short(v)))])?;
            ProcSpec::TopK { top_k: k as usize }
        }
        "top_p" => {
            let x = num(v)?;
            c.prob(key, Some(x));
            ProcSpec::TopP { top_p: x }
        }
        "min_p" => {
            let x = num(v)?;
            c.prob(key, Some(x));
            ProcSpec::MinP { min_p: x }
        }
        "typical_p" => {
            let x = num(v)?;
            c.prob(key, Some(x));
            ProcSpec::TypicalP { typical_p: x }
        }
        "epsilon_cutoff" => {
            let x = num(v)?;
            c.open_prob(key, Some(x));
            ProcSpec::EpsilonCutoff { epsilon_cutoff: x }
        }
        "eta_cutoff" => {
            let x = num(v)?;
            c.open_prob(key, Some(x));
            ProcSpec::EtaCutoff { eta_cutoff: x }
        }
        "top_n_sigma" => {
            let x = num(v)?;
            c.positive(key, Some(x));
            ProcSpec::TopNSigma { top_n_sigma: x }
        }
        "repetition_penalty" => {
            let x = num(v)?;
            c.positive(key, Some(x));
            ProcSpec::RepetitionPenalty { repetition_penalty: x }
        }
        other => {
            return Err(vec![err(
                path,
                format!("unknown chain processor `{other}`; one of: greedy, temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff, top_n_sigma, repetition_penalty, or a block with `kind`"),
            )])
        }
    };
    c.done(vec![p])
}

fn short(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Short names used in ids.
fn abbrev(key: &str) -> &str {
    match key {
        "temperature" => "t",
        "top_k" => "k",
        "top_p" => "p",
        "typical_p" => "typ",
        "epsilon_cutoff" => "eps",
        "eta_cutoff" => "eta",
        "top_n_sigma" => "nsigma",
        "repetition_penalty" => "rep",
        "mirostat_tau" => "tau",
        "mirostat_eta" => "lr",
        "dynatemp_range" => "range",
        "dynatemp_exponent" => "exp",
        "edt_theta" => "theta",
        "edt_n" => "N",
        "entropy_low" => "low",
        "entropy_high" => "high",
        "varentropy_low" => "vlow",
        "varentropy_high" => "vhigh",
        "temperature_last" => "tlast",
        "low" => "L",
        "mid" => "M",
        "high" => "H",
        other => other,
    }
}

const INTEGER_KEYS: &[&str] = &["top_k", "version"];

fn fmt_value(key: &str, v: &Value) -> String {
    match v {
        Value::Number(n) if !INTEGER_KEYS.contains(&key) => n
            .as_f64()
            .map(|f| format!("{f:?}"))
            .unwrap_or_else(|| n.to_string()),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Mapping(m) => match m.get("name").and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None => strategy_id(m.get("kind").and_then(Value::as_str).unwrap_or("?"), m),
        },
        Value::Sequence(items) => items
            .iter()
            .map(chain_item_id)
            .collect::<Vec<_>>()
            .join(">"),
        _ => short(v),
    }
}

fn chain_item_id(item: &Value) -> String {
    match item {
        Value::Mapping(m) if m.contains_key("kind") => fmt_value("", item),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let key = k.as_str().unwrap_or("?");
                format!("{}={}", abbrev(key), fmt_value(key, v))
            })
            .collect::<Vec<_>>()
            .join(","),
        other => short(other),
    }
}

/// Stable, readable id: `kind(param=value,...)`. The kind's own parameter comes first, then the
/// others in alphabetical order of their YAML keys, so reordering keys never changes an id (and
/// therefore never changes a seed).
pub fn strategy_id(kind: &str, map: &Mapping) -> String {
    let mut keys: Vec<&str> = map
        .keys()
        .filter_map(Value::as_str)
        .filter(|k| *k != "kind" && *k != "name")
        .collect();
    keys.sort_by_key(|k| {
        // the kind's own parameter, then the structural ones in reading order, then the rest
        const ORDER: &[&str] = &[
            "target",
            "entropy_low",
            "entropy_high",
            "varentropy_low",
            "varentropy_high",
            "low",
            "mid",
            "high",
        ];
        let rank = if *k == kind {
            0
        } else {
            ORDER
                .iter()
                .position(|o| o == k)
                .map_or(ORDER.len() + 1, |p| p + 1)
        };
        (rank, k.to_string())
    });
    if kind == "chain" {
        return format!(
            "chain({})",
            map.get("chain")
                .map(|v| fmt_value("chain", v))
                .unwrap_or_default()
        );
    }
    if keys.is_empty() {
        return kind.to_string();
    }
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{}={}",
                abbrev(k),
                fmt_value(k, map.get(*k).expect("key from map"))
            )
        })
        .collect();
    format!("{kind}({})", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn ids(yaml: &str) -> Vec<String> {
        expand_block(&block(yaml), "strategies[0]")
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    fn error(yaml: &str) -> String {
        expand_block(&block(yaml), "strategies[0]")
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn grid_expands_in_key_order_last_fastest() {
        assert_eq!(
            ids("{kind: top_p, top_p: [0.9, 0.95], temperature: [0.7, 1.0]}"),
            vec![
                "top_p(p=0.9,t=0.7)",
                "top_p(p=0.9,t=1.0)",
                "top_p(p=0.95,t=0.7)",
                "top_p(p=0.95,t=1.0)"
            ]
        );
    }

    #[test]
    fn ids_are_stable_under_key_order_and_int_floats() {
        assert_eq!(
            ids("{temperature: 1, top_p: 0.9, kind: top_p}"),
            vec!["top_p(p=0.9,t=1.0)"]
        );
        assert_eq!(ids("{kind: greedy}"), vec!["greedy"]);
        assert_eq!(ids("{kind: top_k, top_k: 40}"), vec!["top_k(k=40)"]);
        assert_eq!(
            ids("{kind: top_p, top_p: 0.9, name: nucleus}"),
            vec!["nucleus"]
        );
        assert_eq!(
            ids("{kind: chain, chain: [{top_k: 40}, {top_p: 0.9}, {temperature: 0.8}]}"),
            vec!["chain(k=40>p=0.9>t=0.8)"]
        );
    }

    #[test]
    fn flat_params_follow_hf_order_or_temperature_last() {
        let s = &expand_block(
            &block("{kind: top_p, top_p: 0.9, temperature: 0.7, top_k: 40}"),
            "s",
        )
        .unwrap()[0];
        assert_eq!(
            s.processors,
            vec![
                ProcSpec::Temperature { temperature: 0.7 },
                ProcSpec::TopK { top_k: 40 },
                ProcSpec::TopP { top_p: 0.9 }
            ]
        );
        let s = &expand_block(
            &block("{kind: min_p, min_p: 0.1, temperature: 1.5, temperature_last: true}"),
            "s",
        )
        .unwrap()[0];
        assert_eq!(
            s.processors,
            vec![
                ProcSpec::MinP { min_p: 0.1 },
                ProcSpec::Temperature { temperature: 1.5 }
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_for_every_kind() {
        let minimal = [
            "{kind: greedy}",
            "{kind: temperature, temperature: 0.7}",
            "{kind: top_k, top_k: 40}",
            "{kind: top_p, top_p: 0.9}",
            "{kind: min_p, min_p: 0.1}",
            "{kind: typical_p, typical_p: 0.9}",
            "{kind: epsilon_cutoff, epsilon_cutoff: 0.001}",
            "{kind: eta_cutoff, eta_cutoff: 0.001}",
            "{kind: top_n_sigma, top_n_sigma: 1.0}",
            "{kind: chain, chain: [{top_p: 0.9}]}",
            "{kind: entropy_switch, entropy_low: 1, entropy_high: 3, low: {kind: greedy}, mid: {kind: temperature, temperature: 0.8}, high: {kind: top_p, top_p: 0.9}}",
            "{kind: target_entropy, target: 2.0}",
            "{kind: mirostat}",
            "{kind: dynatemp, dynatemp_range: 0.5}",
            "{kind: edt, edt_theta: 0.5}",
        ];
        assert_eq!(minimal.len(), KINDS.len());
        for m in minimal {
            assert!(expand_block(&block(m), "s").is_ok(), "{m} should parse");
            let bad = m.replacen('{', "{bogus_key: 1, ", 1);
            let e = error(&bad);
            assert!(e.contains("bogus_key"), "{bad}: {e}");
        }
    }

    #[test]
    fn out_of_range_values_name_the_path() {
        assert!(error("{kind: top_p, top_p: 1.5}")
            .contains("strategies[0].top_p: 1.5 is out of range; allowed: 0 < value <= 1"));
        assert!(error("{kind: temperature, temperature: -1}").contains("strategies[0].temperature"));
        assert!(error("{kind: top_p, top_p: [0.9, 0]}").contains("grid point 1"));
        let e = error("{kind: entropy_switch, entropy_low: 3, entropy_high: 1, low: {kind: greedy}, mid: {kind: greedy}, high: {kind: greedy}}");
        assert!(e.contains("thresholds must be ordered"), "{e}");
        assert!(error("{kind: mirostat, version: 3}").contains("allowed: 1 or 2"));
        assert!(error("{kind: top_p}").contains("needs its parameter `top_p`"));
        assert!(error("{kind: nucleus}").contains("unknown strategy kind `nucleus`"));
        assert!(error("{kind: top_p, top_p: []}").contains("empty list"));
        assert!(error("{kind: target_entropy, target: 2, kp: 1}")
            .contains("only applies to `mode: feedback`"));
        let e = error("{kind: entropy_switch, entropy_low: 1, entropy_high: 2, low: {kind: greedy, oops: 1}, mid: {kind: greedy}, high: {kind: greedy}}");
        assert!(e.contains("strategies[0].low") && e.contains("oops"), "{e}");
        assert!(error("{kind: chain, chain: [{top_q: 0.9}]}").contains("strategies[0].chain[0]"));
    }

    #[test]
    fn units_convert_to_nats() {
        let s = &expand_block(
            &block("{kind: target_entropy, target: 1.0, unit: bits}"),
            "s",
        )
        .unwrap()[0];
        match &s.processors[0] {
            ProcSpec::TargetEntropy { target_nats, .. } => {
                assert!((target_nats - std::f64::consts::LN_2).abs() < 1e-12)
            }
            other => panic!("{other:?}"),
        }
    }
}
