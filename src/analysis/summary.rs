//! Per (model, strategy, metric): the mean over prompts of the prompt-level values (see
//! [`super::table`]) with a seeded percentile bootstrap 95% CI over prompts
//! ([`crate::stats::bootstrap_mean`], B resamples, seed
//! `stats_seed(experiment seed, "summary/<model>/<strategy>/<metric>")`).

use crate::seed::stats_seed;
use crate::stats::{bootstrap_mean, Estimate};

use super::catalog;
use super::design::Design;
use super::table::PromptTable;

pub const CONFIDENCE: f64 = 0.95;

#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub model: String,
    pub strategy: String,
    pub metric: &'static str,
    pub n_prompts: usize,
    pub estimate: Estimate,
}

/// Rows in design order (model, strategy) and catalogue order (metric); cells without any
/// prompt value are skipped.
pub fn summarize(design: &Design, table: &PromptTable, resamples: usize) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for model in &design.models {
        for s in &design.strategies {
            for m in catalog::all() {
                let Some(per_prompt) = table.get(model, &s.id, m.name) else {
                    continue;
                };
                let values: Vec<f64> = per_prompt.values().copied().collect();
                let seed = stats_seed(design.seed, &format!("summary/{model}/{}/{}", s.id, m.name));
                // the table holds only finite values and at least one, so this cannot fail
                if let Ok(estimate) = bootstrap_mean(&values, resamples, seed, CONFIDENCE) {
                    rows.push(SummaryRow {
                        model: model.clone(),
                        strategy: s.id.clone(),
                        metric: m.name,
                        n_prompts: values.len(),
                        estimate,
                    });
                }
            }
        }
    }
    rows
}

/// The summary row of one cell.
pub fn find<'a>(
    rows: &'a [SummaryRow],
    model: &str,
    strategy: &str,
    metric: &str,
) -> Option<&'a SummaryRow> {
    rows.iter()
        .find(|r| r.model == model && r.strategy == strategy && r.metric == metric)
}
