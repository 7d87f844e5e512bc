//! Best-of-N selection: choosing one of the N samples of a cell (model × prompt × strategy) by
//! a confidence score read from the samples' traces, with a seeded random pick as the control.
//!
//! One unit per selector, each in its own file with its formula and reference, registered with
//! one line in [`KINDS`]: a selector without parameters implements [`Plain`] (kind, description,
//! direction, score) and uses [`parse_plain`]; one with parameters implements [`Selector`] and
//! parses its own block (`group_confidence`, `entropy_band`). A selector reads [`Candidate`]s (a sample's index and trace) and scores
//! each one; [`choose`] takes the best score (its direction is the selector's), ties to the
//! lowest sample index, and a candidate without a score (no generated token, or a record from
//! before the trace field existed) is never chosen. Everything here is deterministic given the
//! samples and the experiment seed, and does no I/O: the experiment file's `select:` list is
//! parsed here ([`parse_list`]), `analysis::selection` applies it and compares what was chosen.
//!
//! The per-step fields the selectors read (`trace.self_certainty`, `trace.confidence`) are
//! taken in the sampler's one read of the logits ([`crate::strategy::Confidence`]); teacher
//! forcing (`declab select`) records the same fields with the same kernels.

pub mod entropy_band;
pub mod group_confidence;
pub mod mean_entropy;
pub mod mean_logprob;
pub mod random;
pub mod self_certainty;

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_yaml::{Mapping, Value};

use crate::record::Trace;
use crate::strategy::PathError;

/// What a selector reads of one sample.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The sample's index in its cell (ties go to the lowest).
    pub index: usize,
    pub trace: &'a Trace,
}

impl Candidate<'_> {
    /// Generated tokens (steps of the trace).
    pub fn steps(&self) -> usize {
        self.trace.entropy.len()
    }

    /// Mean of a per-step series in f64; `None` when it is empty or does not cover every step
    /// (a record written before the field existed).
    pub fn mean_of(&self, series: &[f32]) -> Option<f64> {
        if series.is_empty() || series.len() != self.steps() {
            return None;
        }
        Some(series.iter().map(|&x| x as f64).sum::<f64>() / series.len() as f64)
    }
}

/// Context of one cell's selection.
#[derive(Debug, Clone, Copy)]
pub struct Cell {
    /// Seed of the cell's random draws ([`crate::seed::selection_seed`] with the sample index
    /// left for the selector).
    pub seed: u64,
}

/// One selector: its kind, parameters, id, direction and score.
pub trait Selector: fmt::Debug + Send + Sync {
    fn kind(&self) -> &'static str;
    /// Its parameters as written in the experiment file (without `kind` and `name`).
    fn params(&self) -> serde_json::Value;
    /// The id shown in reports (`group_confidence_w16`); a `name:` in the block overrides it.
    fn default_id(&self) -> String;
    /// One line for the report: the score's formula, its direction and its reference.
    fn describe(&self) -> String;
    /// Whether the highest score wins (else the lowest).
    fn higher_wins(&self) -> bool;
    /// The score of one candidate; `None` when it cannot be scored.
    fn score(&self, c: &Candidate, cell: &Cell) -> Option<f64>;
}

/// A selector without parameters (`{kind: mean_entropy}`): its kind, one-line description,
/// direction and score. [`Selector`] follows from one blanket impl and [`parse_plain`] is its
/// parser, so such a unit's file holds only what is its own.
pub trait Plain: Default + fmt::Debug + Send + Sync + 'static {
    const KIND: &'static str;
    const DESCRIBE: &'static str;
    const HIGHER_WINS: bool;
    fn score(&self, c: &Candidate, cell: &Cell) -> Option<f64>;
}

impl<T: Plain> Selector for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn default_id(&self) -> String {
        T::KIND.into()
    }
    fn describe(&self) -> String {
        T::DESCRIBE.into()
    }
    fn higher_wins(&self) -> bool {
        T::HIGHER_WINS
    }
    fn score(&self, c: &Candidate, cell: &Cell) -> Option<f64> {
        Plain::score(self, c, cell)
    }
}

/// A block with no fields of its own.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The parser of a [`Plain`] selector: its block has no fields besides `kind` and `name`.
pub fn parse_plain<T: Plain>(
    map: &Mapping,
    path: &str,
    _: &Limits,
) -> Result<Arc<dyn Selector>, Vec<PathError>> {
    block::<Empty>(map, path)?;
    Ok(Arc::new(T::default()))
}

/// A validated selector with its id.
#[derive(Clone)]
pub struct SelectorSpec {
    pub id: String,
    pub selector: Arc<dyn Selector>,
}

impl fmt::Debug for SelectorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.id, self.selector)
    }
}

impl PartialEq for SelectorSpec {
    fn eq(&self, other: &Self) -> bool {
        self.to_json() == other.to_json()
    }
}

impl SelectorSpec {
    pub fn kind(&self) -> &'static str {
        self.selector.kind()
    }

    /// `{kind, name, <params>}`: the block that parses back to this selector.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.selector.params();
        if let Some(o) = v.as_object_mut() {
            o.insert("kind".into(), self.kind().into());
            o.insert("name".into(), self.id.clone().into());
        }
        v
    }
}

impl Serialize for SelectorSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// What the checks of a selector block know about the experiment.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_new_tokens: usize,
}

/// A selector kind: its name, an example block and its parser.
pub struct Kind {
    pub name: &'static str,
    pub example: &'static str,
    /// Parse and check a block (a mapping without `kind`/`name`) at a YAML path.
    pub parse: ParseFn,
}

/// A kind's parser: a block (a mapping without `kind`/`name`) at a YAML path to its selector.
pub type ParseFn = fn(&Mapping, &str, &Limits) -> Result<Arc<dyn Selector>, Vec<PathError>>;

/// Every selector kind, in the order the report lists them.
pub static KINDS: &[Kind] = &[
    self_certainty::KIND,
    mean_entropy::KIND,
    mean_logprob::KIND,
    group_confidence::KIND,
    entropy_band::KIND,
    random::KIND,
];

/// Deserialise a block's own fields (without `kind` and `name`), naming the path on error.
pub fn block<T: serde::de::DeserializeOwned>(
    map: &Mapping,
    path: &str,
) -> Result<T, Vec<PathError>> {
    let mut own = map.clone();
    own.remove("kind");
    own.remove("name");
    serde_yaml::from_value(Value::Mapping(own)).map_err(|e| {
        let msg = e.to_string();
        let kind = map
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("this selector");
        let msg = match msg.strip_suffix(", there are no fields") {
            Some(m) => {
                format!("{m}; {kind} has no parameters (only `kind` and an optional `name`)")
            }
            None => msg,
        };
        vec![PathError::new(path, msg)]
    })
}

/// Parse one `select:` item at `path` (`select[2]`).
pub fn parse_block(v: &Value, path: &str, limits: &Limits) -> Result<SelectorSpec, Vec<PathError>> {
    let kinds = || KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ");
    let Some(map) = v.as_mapping() else {
        return Err(vec![PathError::new(
            path,
            format!(
                "a selector is a mapping such as {{kind: self_certainty}}; kinds: {}",
                kinds()
            ),
        )]);
    };
    let kind = match map.get("kind") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => {
            return Err(vec![PathError::new(
                &format!("{path}.kind"),
                "must be a string",
            )])
        }
        None => {
            return Err(vec![PathError::new(
                path,
                format!("missing `kind`; kinds: {}", kinds()),
            )])
        }
    };
    let Some(k) = KINDS.iter().find(|k| k.name == kind) else {
        return Err(vec![PathError::new(
            &format!("{path}.kind"),
            format!("unknown selector kind {kind:?}; kinds: {}", kinds()),
        )]);
    };
    let name = match map.get("name") {
        None => None,
        Some(Value::String(n)) if !n.trim().is_empty() && !n.contains(['/', ',', '"']) => {
            Some(n.clone())
        }
        Some(_) => {
            return Err(vec![PathError::new(
                &format!("{path}.name"),
                "must be a non-empty string without '/', ',' or '\"'",
            )])
        }
    };
    let selector = (k.parse)(map, path, limits)?;
    Ok(SelectorSpec {
        id: name.unwrap_or_else(|| selector.default_id()),
        selector,
    })
}

/// Parse the experiment's `select:` list; `samples` is the experiment's samples per cell.
pub fn parse_list(
    list: &[Value],
    limits: &Limits,
    samples: usize,
) -> Result<Vec<SelectorSpec>, Vec<PathError>> {
    let mut errors = Vec::new();
    let mut out: Vec<SelectorSpec> = Vec::new();
    if !list.is_empty() && samples < 2 {
        errors.push(PathError::new(
            "select",
            format!("selection chooses among the samples of a cell, and `samples` is {samples}; set `samples` to 2 or more (e.g. 8), or remove `select`"),
        ));
    }
    for (i, v) in list.iter().enumerate() {
        let path = format!("select[{i}]");
        match parse_block(v, &path, limits) {
            Ok(s) => {
                if out.iter().any(|o| o.id == s.id) {
                    errors.push(PathError::new(
                        &path,
                        format!(
                            "duplicate selector id {:?}; give one of them a `name`",
                            s.id
                        ),
                    ));
                } else {
                    out.push(s);
                }
            }
            Err(es) => errors.extend(es),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The sample a selector chose in one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// The chosen sample's index.
    pub index: usize,
    pub score: f64,
    /// Candidates that had a score.
    pub scored: usize,
}

/// Apply `sel` to the candidates of one cell: the best score in the selector's direction, ties
/// to the lowest sample index; `None` when no candidate has a score.
pub fn choose(sel: &dyn Selector, cands: &[Candidate], cell: &Cell) -> Option<Choice> {
    let mut best: Option<Choice> = None;
    let mut scored = 0;
    for c in cands {
        let Some(s) = sel.score(c, cell).filter(|s| !s.is_nan()) else {
            continue;
        };
        scored += 1;
        let better = match &best {
            None => true,
            Some(b) => {
                let wins = if sel.higher_wins() {
                    s > b.score
                } else {
                    s < b.score
                };
                wins || (s == b.score && c.index < b.index)
            }
        };
        if better {
            best = Some(Choice {
                index: c.index,
                score: s,
                scored: 0,
            });
        }
    }
    best.map(|b| Choice { scored, ..b })
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::record::Trace;

    /// A trace with the selector fields set from per-step (entropy, logprob, self-certainty,
    /// confidence) tuples.
    pub fn trace(steps: &[(f32, f32, f32, f32)]) -> Trace {
        Trace {
            entropy: steps.iter().map(|s| s.0).collect(),
            logprob: steps.iter().map(|s| s.1).collect(),
            self_certainty: steps.iter().map(|s| s.2).collect(),
            confidence: steps.iter().map(|s| s.3).collect(),
            ..Trace::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::trace;
    use super::*;

    fn limits() -> Limits {
        Limits { max_new_tokens: 32 }
    }

    fn yaml(s: &str) -> Vec<Value> {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn every_kind_parses_its_example_and_round_trips_through_json() {
        for k in KINDS {
            let v: Value = serde_yaml::from_str(k.example).unwrap();
            let s = parse_block(&v, "select[0]", &limits()).unwrap();
            assert_eq!(s.kind(), k.name);
            let back: Value = serde_yaml::to_value(s.to_json()).unwrap();
            assert_eq!(parse_block(&back, "x", &limits()).unwrap(), s, "{}", k.name);
        }
    }

    #[test]
    fn bad_lists_name_the_path() {
        let msg = |s: &str, samples: usize| -> String {
            parse_list(&yaml(s), &limits(), samples)
                .unwrap_err()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(msg("[{kind: best}]", 4).contains("select[0].kind: unknown selector kind \"best\""));
        assert!(msg("[{kind: random}]", 1).starts_with("select: selection chooses"));
        assert!(msg("[{kind: random}, {kind: random}]", 4)
            .contains("select[1]: duplicate selector id \"random\""));
        assert!(msg("[{kind: random, seed: 3}]", 4).contains("select[0]: unknown field `seed`"));
        assert!(msg("[random]", 4).contains("select[0]: a selector is a mapping"));
        assert!(parse_list(
            &yaml("[{kind: random}, {kind: random, name: r2}]"),
            &limits(),
            2
        )
        .is_ok());
    }

    #[test]
    fn ties_go_to_the_lowest_index_and_unscored_candidates_are_never_chosen() {
        let a = trace(&[(1.0, -1.0, 2.0, 3.0)]);
        let empty = Trace::default();
        let cands = [
            Candidate {
                index: 0,
                trace: &empty,
            },
            Candidate {
                index: 1,
                trace: &a,
            },
            Candidate {
                index: 2,
                trace: &a,
            },
        ];
        let cell = Cell { seed: 0 };
        let sel = mean_entropy::MeanEntropy;
        assert_eq!(
            choose(&sel, &cands, &cell),
            Some(Choice {
                index: 1,
                score: 1.0,
                scored: 2
            })
        );
        assert_eq!(choose(&sel, &cands[..1], &cell), None);
    }
}
