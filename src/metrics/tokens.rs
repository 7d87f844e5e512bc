//! `tokens`: the number of generated tokens of a sample (model tokens, not words). Not a quality
//! measure, but needed to read the others (a short sample repeats less). Needs the run's record:
//! foreign outputs have no token ids.

use super::metric::{Compute, Family, Metric, Needs};

pub const TOKENS: Metric = Metric {
    name: "tokens",
    family: Family::Length,
    higher_is_better: None,
    unit: "tokens",
    needs: Needs::TRACE,
    description: "generated tokens",
    compute: Compute::Sample(|s| s.trace.map(|t| t.tokens as f64)),
};
