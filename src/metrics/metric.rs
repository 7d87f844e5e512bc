//! What a metric is: one [`Metric`] value holds its name, level, report family, direction, unit,
//! needs and computation, so nothing downstream pairs a name with a value by position. Its
//! values travel as [`MetricValues`], keyed by the metric's name.
//!
//! A metric's computation reads a [`SampleInput`] (one generated sample: text, words, optional
//! trace, optional embeddings) or a [`GroupInput`] (the samples of one model x prompt x
//! strategy); which of the two it reads is its level. No I/O: embeddings come in as vectors.

use std::collections::BTreeMap;

use crate::record::{RefScore, Trace};

/// Where a metric is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// One value per generated sample.
    Sample,
    /// One value per group (the samples of one model x prompt x strategy).
    Group,
}

/// The report section a metric belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Diversity,
    Coherence,
    Entropy,
    /// Output length; not a quality measure but needed to read the others.
    Length,
    Latency,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Diversity,
        Family::Coherence,
        Family::Entropy,
        Family::Length,
        Family::Latency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Diversity => "diversity",
            Family::Coherence => "coherence",
            Family::Entropy => "entropy",
            Family::Length => "length",
            Family::Latency => "latency",
        }
    }
}

/// What a metric needs beyond the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The run's per-token trace (absent for `declab metrics` on foreign outputs).
    pub trace: bool,
    /// The sentence embedder.
    pub embedder: bool,
    /// The text scored under the experiment's reference model (`scorer:`).
    pub reference: bool,
}

impl Needs {
    pub const TEXT: Needs = Needs {
        trace: false,
        embedder: false,
        reference: false,
    };
    pub const TRACE: Needs = Needs {
        trace: true,
        embedder: false,
        reference: false,
    };
    pub const EMBEDDER: Needs = Needs {
        trace: false,
        embedder: true,
        reference: false,
    };
    pub const REFERENCE: Needs = Needs {
        trace: false,
        embedder: false,
        reference: true,
    };

    /// Whether values of different models measure the same thing: a metric of the text alone,
    /// its embeddings or the one reference scorer, not of each model's own trace (its own
    /// likelihood, entropy and token counts differ in scale between models and tokenizers).
    pub const fn across_models(&self) -> bool {
        !self.trace
    }
}

/// A metric's computation; the variant is its level. `None` where the value is undefined (no
/// generated token, no embedder, fewer than two samples...).
#[derive(Debug, Clone, Copy)]
pub enum Compute {
    Sample(fn(&SampleInput<'_>) -> Option<f64>),
    Group(fn(&GroupInput<'_>) -> Option<f64>),
}

/// One metric: everything declab knows about it, in the file that defines it.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Unique, one per parameterisation (`distinct_2`, `self_bleu_4`): the CSV column, the
    /// `metric` field of summary.csv and comparisons.csv, the key of its values.
    pub name: &'static str,
    pub family: Family,
    /// `Some(true)` when larger is better, `Some(false)` when smaller is better, `None` when
    /// neither direction is better (entropy, length): `declab compare` then treats any
    /// significant change as a regression.
    pub higher_is_better: Option<bool>,
    /// Unit of a value (`fraction`, `nats/token`, `ms`...).
    pub unit: &'static str,
    pub needs: Needs,
    pub description: &'static str,
    pub compute: Compute,
}

impl Metric {
    pub const fn level(&self) -> Level {
        match self.compute {
            Compute::Sample(_) => Level::Sample,
            Compute::Group(_) => Level::Group,
        }
    }

    /// The value for one sample; `None` for a group metric.
    pub fn of_sample(&self, input: &SampleInput<'_>) -> Option<f64> {
        match self.compute {
            Compute::Sample(f) => f(input),
            Compute::Group(_) => None,
        }
    }

    /// The value for one group; `None` for a sample metric.
    pub fn of_group(&self, input: &GroupInput<'_>) -> Option<f64> {
        match self.compute {
            Compute::Group(f) => f(input),
            Compute::Sample(_) => None,
        }
    }
}

/// The trace of a generated sample and its number of generated tokens.
#[derive(Debug, Clone, Copy)]
pub struct TraceInput<'a> {
    pub trace: &'a Trace,
    pub tokens: usize,
}

/// What a per-sample metric reads.
#[derive(Debug, Clone)]
pub struct SampleInput<'a> {
    pub text: &'a str,
    /// [`super::words()`] of `text`, split once for every metric.
    pub words: Vec<&'a str>,
    pub trace: Option<TraceInput<'a>>,
    /// Sentence embedding of the prompt (absent without an embedder or a prompt).
    pub prompt_embedding: Option<&'a [f32]>,
    /// Sentence embedding of the continuation (absent without an embedder).
    pub text_embedding: Option<&'a [f32]>,
    /// The text scored under the reference model (absent without `scorer:`).
    pub reference: Option<&'a RefScore>,
}

impl<'a> SampleInput<'a> {
    /// A sample known by its text only.
    pub fn new(text: &'a str) -> Self {
        SampleInput {
            text,
            words: super::words(text),
            trace: None,
            prompt_embedding: None,
            text_embedding: None,
            reference: None,
        }
    }

    pub fn with_reference(mut self, reference: Option<&'a RefScore>) -> Self {
        self.reference = reference;
        self
    }

    pub fn with_trace(mut self, trace: &'a Trace, tokens: usize) -> Self {
        self.trace = Some(TraceInput { trace, tokens });
        self
    }

    pub fn with_embeddings(mut self, prompt: Option<&'a [f32]>, text: Option<&'a [f32]>) -> Self {
        self.prompt_embedding = prompt;
        self.text_embedding = text;
        self
    }

    /// The trace, for metrics that need one.
    pub fn trace(&self) -> Option<&'a Trace> {
        self.trace.map(|t| t.trace)
    }
}

/// What a per-group metric reads: the texts of the group's samples, in sample order.
#[derive(Debug, Clone)]
pub struct GroupInput<'a> {
    pub texts: &'a [&'a str],
    /// [`super::words()`] of each text.
    pub words: Vec<Vec<&'a str>>,
    /// One sentence embedding per text (absent without an embedder).
    pub embeddings: Option<&'a [Vec<f32>]>,
}

impl<'a> GroupInput<'a> {
    pub fn new(texts: &'a [&'a str]) -> Self {
        GroupInput {
            texts,
            words: texts.iter().map(|t| super::words(t)).collect(),
            embeddings: None,
        }
    }

    pub fn with_embeddings(mut self, embeddings: Option<&'a [Vec<f32>]>) -> Self {
        self.embeddings = embeddings;
        self
    }
}

/// Metric values keyed by metric name; an undefined value is absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricValues {
    values: BTreeMap<&'static str, f64>,
}

impl MetricValues {
    /// Record `metric`'s value (`None`: undefined, nothing recorded).
    pub fn set(&mut self, metric: &Metric, value: Option<f64>) {
        match value {
            Some(v) => self.values.insert(metric.name, v),
            None => self.values.remove(metric.name),
        };
    }

    /// The value of the metric named `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// The value of `metric`.
    pub fn of(&self, metric: &Metric) -> Option<f64> {
        self.get(metric.name)
    }

    /// Defined values by name (name order; column order is the registry's, not this one).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.values.iter().map(|(k, v)| (*k, *v))
    }
}
