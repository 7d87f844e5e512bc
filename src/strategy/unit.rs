//! What a strategy unit is: the types a strategy's file uses to own its whole story (its YAML
//! block and checks, its processor, its id abbreviations, its trace facts), and the one shape
//! the rest of declab sees of a validated processor ([`ProcSpec`]).
//!
//! A unit registers itself with one line in [`super::registry`]: a [`Simple`] for a
//! one-parameter processor (usable as a flat kind `{kind: top_p, top_p: 0.9}`, as a parameter of
//! the flat kinds and as a chain element `{top_p: 0.9}`), or a [`Kind`] for a strategy with its
//! own block (`mirostat`, `target_entropy`, ...). Nothing outside the unit matches on its type or
//! re-reads its parameters: runner, analysis and bench ask [`ProcSpec::facts`].
//!
//! Parameter checks go through [`Param`] and [`Range`], so each rule and its message exist once.
//! No I/O here.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_yaml::{Mapping, Value};

use super::Processor;

/// An error at a YAML path inside the experiment file.
#[derive(Debug, Clone, PartialEq)]
pub struct PathError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl PathError {
    pub fn new(path: &str, message: impl Into<String>) -> Self {
        PathError {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// The range rule of a numeric parameter; its message is written here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// 0 < value <= 1 (`top_p`, `min_p`, `typical_p`).
    Probability,
    /// 0 < value < 1 (`epsilon_cutoff`, `eta_cutoff`, `edt_n`).
    OpenProbability,
    /// 0 <= value <= 100, 0 meaning greedy.
    Temperature,
    /// value > 0.
    Positive,
    /// value >= 0 (entropies in nats or bits, gains).
    NonNegative,
    /// An integer >= 1 (`top_k`).
    Count,
}

impl Range {
    pub fn allows(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::Probability => v > 0.0 && v <= 1.0,
                Range::OpenProbability => v > 0.0 && v < 1.0,
                Range::Temperature => (0.0..=100.0).contains(&v),
                Range::Positive => v > 0.0,
                Range::NonNegative => v >= 0.0,
                Range::Count => v >= 1.0 && v.fract() == 0.0,
            }
    }

    pub fn allowed(self) -> &'static str {
        match self {
            Range::Probability => "0 < value <= 1",
            Range::OpenProbability => "0 < value < 1",
            Range::Temperature => "0 <= temperature <= 100 (0 means greedy)",
            Range::Positive => "value > 0",
            Range::NonNegative => "value >= 0",
            Range::Count => "an integer >= 1",
        }
    }
}

/// A named numeric parameter: its YAML key (one name at every layer: YAML, spec, processor,
/// records), its short name in strategy ids, its range and an example value for messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    pub key: &'static str,
    pub abbrev: &'static str,
    pub range: Range,
    pub example: &'static str,
}

impl Param {
    /// Whether ids print the value as an integer (`k=40`, not `k=40.0`).
    pub fn is_integer(&self) -> bool {
        self.range == Range::Count
    }
}

/// Collects the errors of one block, each at its YAML path.
pub struct Checks<'a> {
    path: &'a str,
    errors: Vec<PathError>,
}

impl<'a> Checks<'a> {
    pub fn new(path: &'a str) -> Self {
        Checks {
            path,
            errors: Vec::new(),
        }
    }

    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The path of one key of this block.
    pub fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// Check an optional value of a parameter against its range.
    pub fn param(&mut self, p: &Param, v: Option<f64>) {
        self.range(p.key, p.range, v);
    }

    /// Check an optional value at `key` against a range (for block fields that are not shared
    /// parameters, such as `t_min` or `entropy_low`).
    pub fn range(&mut self, key: &str, range: Range, v: Option<f64>) {
        if let Some(v) = v {
            if !range.allows(v) {
                let shown = if range == Range::Count && v.fract() == 0.0 {
                    format!("{}", v as i64)
                } else {
                    format!("{v}")
                };
                self.fail(
                    key,
                    format!("{shown} is out of range; allowed: {}", range.allowed()),
                );
            }
        }
    }

    /// A rule across fields; `key` names where the error points.
    pub fn require(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.fail(key, message);
        }
    }

    pub fn fail(&mut self, key: &str, message: impl Into<String>) {
        let path = if key.is_empty() {
            self.path.to_string()
        } else {
            self.at(key)
        };
        self.errors.push(PathError::new(&path, message));
    }

    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn extend(&mut self, errors: Vec<PathError>) {
        self.errors.extend(errors);
    }

    /// The value, or the errors collected.
    pub fn done<T>(self, value: T) -> Result<T, Vec<PathError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }
}

/// Deserialise a block's own fields (`kind` and `name` removed) into its `deny_unknown_fields`
/// struct.
pub fn block<T: DeserializeOwned>(map: &Mapping, path: &str) -> Result<T, Vec<PathError>> {
    let mut own = map.clone();
    own.remove("kind");
    own.remove("name");
    serde_yaml::from_value(Value::Mapping(own)).map_err(|e| {
        let msg = e.to_string();
        // serde_yaml reports lists where scalars belong as "invalid type: sequence"
        let msg = if msg.contains("invalid type: sequence") {
            format!("{msg} (grid lists are only expanded at the top level of a strategy block)")
        } else {
            msg
        };
        vec![PathError::new(path, msg)]
    })
}

/// What the runner, the analysis and the bench may know about a processor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Facts {
    /// Every step is an argmax.
    pub greedy: bool,
    /// It holds controller state worth tracing (`trace.controller`).
    pub controller: bool,
    /// It chooses between branches (`trace.branch`).
    pub branch: bool,
    /// The entropy it aims at, in nats.
    pub target_nats: Option<f64>,
}

/// A validated processor: plain data that builds the runtime [`Processor`] of one sample.
pub trait Proc: fmt::Debug + Send + Sync {
    /// Its name in records (`processors[].op` in the manifest).
    fn op(&self) -> &'static str;
    /// Its parameters as recorded beside `op`: a JSON object (an empty one for none).
    fn params(&self) -> serde_json::Value;
    /// A fresh processor for one sample.
    fn build(&self, vocab: usize) -> Box<dyn Processor>;
    fn facts(&self) -> Facts {
        Facts::default()
    }
    /// Processors it holds (a switch's branches), for questions about the whole tree.
    fn nested(&self) -> Vec<&ProcSpec> {
        Vec::new()
    }
}

/// A processor that is its own spec: no per-sample state, so `build` clones it and its
/// `params` are its serialised fields (named as in YAML). Most one-parameter processors are.
pub trait Stateless: Processor + Clone + Serialize + fmt::Debug + Sync + 'static {
    /// Its name in records.
    const OP: &'static str;
    fn facts(&self) -> Facts {
        Facts::default()
    }
}

impl<T: Stateless> Proc for T {
    fn op(&self) -> &'static str {
        T::OP
    }
    fn params(&self) -> serde_json::Value {
        params_of(self)
    }
    fn build(&self, _vocab: usize) -> Box<dyn Processor> {
        Box::new(self.clone())
    }
    fn facts(&self) -> Facts {
        Stateless::facts(self)
    }
}

/// Serialise a processor's own fields as its `params`.
pub fn params_of<T: Serialize>(spec: &T) -> serde_json::Value {
    match serde_json::to_value(spec) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::Value::Object(Default::default()),
    }
}

/// One validated processor of a strategy's chain (shared, immutable).
#[derive(Clone)]
pub struct ProcSpec(Arc<dyn Proc>);

impl ProcSpec {
    pub fn new(p: impl Proc + 'static) -> Self {
        ProcSpec(Arc::new(p))
    }

    pub fn op(&self) -> &'static str {
        self.0.op()
    }

    pub fn build(&self, vocab: usize) -> Box<dyn Processor> {
        self.0.build(vocab)
    }

    pub fn facts(&self) -> Facts {
        self.0.facts()
    }

    pub fn nested(&self) -> Vec<&ProcSpec> {
        self.0.nested()
    }

    /// Facts of this processor and of every processor it holds, depth first.
    pub fn all_facts(&self) -> Vec<Facts> {
        let mut out = vec![self.facts()];
        for n in self.nested() {
            out.extend(n.all_facts());
        }
        out
    }

    /// `{"op": ..., params...}`, as recorded in the manifest.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.0.params();
        if let Some(o) = v.as_object_mut() {
            o.insert("op".into(), self.op().into());
        }
        v
    }
}

impl fmt::Debug for ProcSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for ProcSpec {
    fn eq(&self, other: &Self) -> bool {
        self.to_json() == other.to_json()
    }
}

impl Serialize for ProcSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// A one-parameter processor: a flat kind of its own (`{kind: top_p, top_p: 0.9}`, unless
/// `kind` is false), a parameter of every flat kind, and a chain element (`{top_p: 0.9}`).
/// In a flat block the processors apply in [`super::registry::SIMPLE`] order (Hugging Face's).
#[derive(Debug, Clone, Copy)]
pub struct Simple {
    pub param: Param,
    /// Whether `kind: <param.key>` names a strategy.
    pub kind: bool,
    /// Typical blocks of that kind (see [`Kind::examples`]).
    pub examples: &'static [&'static str],
    /// The processor for a checked value.
    pub make: fn(f64) -> ProcSpec,
}

/// What parsing a block gives: its processor chain, or the errors at their YAML paths.
pub type Parsed = Result<Vec<ProcSpec>, Vec<PathError>>;

/// A strategy kind with its own block.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub name: &'static str,
    /// Deserialise and check the block (grid lists already expanded; `kind`/`name` present)
    /// into its processor chain.
    pub parse: fn(&Mapping, &str) -> Parsed,
    /// Short names of its own keys in ids (`mirostat_tau` -> `tau`); keys of shared parameters
    /// use their [`Param::abbrev`].
    pub abbrevs: &'static [(&'static str, &'static str)],
    /// Keys written first in its ids, in this order (after the kind's own parameter).
    pub id_first: &'static [&'static str],
    /// Keys whose values ids print as integers.
    pub integer_keys: &'static [&'static str],
    /// Typical blocks: the bench runs them and the tests check every kind with them.
    pub examples: &'static [&'static str],
}

/// Optional one-parameter processors given as fields of a block (`top_p:` on `edt`), checked
/// by their own [`Param`] and returned in the order given.
pub fn optional(c: &mut Checks, items: &[(&Simple, Option<f64>)]) -> Vec<ProcSpec> {
    let mut v = Vec::new();
    for (simple, value) in items {
        if let Some(x) = *value {
            c.param(&simple.param, Some(x));
            v.push((simple.make)(x));
        }
    }
    v
}

/// Unit of an entropy threshold or target in a block; processors work in nats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    #[default]
    Nats,
    Bits,
}

impl Unit {
    /// Convert an entropy in this unit to nats.
    pub fn to_nats(self, h: f64) -> f64 {
        match self {
            Unit::Nats => h,
            Unit::Bits => h * std::f64::consts::LN_2,
        }
    }

    /// Convert a varentropy (squared unit) to nats².
    pub fn to_nats2(self, v: f64) -> f64 {
        match self {
            Unit::Nats => v,
            Unit::Bits => v * std::f64::consts::LN_2 * std::f64::consts::LN_2,
        }
    }
}
