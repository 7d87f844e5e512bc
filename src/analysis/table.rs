//! The prompt-level table every statistic starts from. The unit of analysis is the prompt:
//! for each (model, strategy, metric), a prompt's value is the mean of its samples' values (a
//! per-sample metric) or its group's value (a per-group metric). Undefined (`None`) or
//! non-finite values are left out; a prompt with no defined value is absent for that metric.

use std::collections::BTreeMap;

use super::{GroupRow, SampleRow};

/// (model, strategy, metric).
pub type CellKey = (String, String, &'static str);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptTable {
    /// prompt id -> value, per cell.
    pub cells: BTreeMap<CellKey, BTreeMap<String, f64>>,
}

impl PromptTable {
    pub fn build(samples: &[SampleRow], groups: &[GroupRow]) -> PromptTable {
        let mut acc: BTreeMap<CellKey, BTreeMap<String, (f64, usize)>> = BTreeMap::new();
        for s in samples {
            for (name, v) in s.values.iter().filter(|(_, v)| v.is_finite()) {
                let e = acc
                    .entry((s.model.clone(), s.strategy.clone(), name))
                    .or_default()
                    .entry(s.prompt_id.clone())
                    .or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
        }
        let mut cells: BTreeMap<CellKey, BTreeMap<String, f64>> = acc
            .into_iter()
            .map(|(k, per)| {
                (
                    k,
                    per.into_iter()
                        .map(|(p, (sum, n))| (p, sum / n as f64))
                        .collect(),
                )
            })
            .collect();
        for g in groups {
            for (name, v) in g.values.iter().filter(|(_, v)| v.is_finite()) {
                cells
                    .entry((g.model.clone(), g.strategy.clone(), name))
                    .or_default()
                    .insert(g.prompt_id.clone(), v);
            }
        }
        PromptTable { cells }
    }

    /// prompt id -> value for one cell (empty when absent).
    pub fn get(
        &self,
        model: &str,
        strategy: &str,
        metric: &'static str,
    ) -> Option<&BTreeMap<String, f64>> {
        self.cells
            .get(&(model.to_string(), strategy.to_string(), metric))
    }

    /// Values of the prompts present in both cells, as paired vectors (prompt id order).
    pub fn paired(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> (Vec<f64>, Vec<f64>) {
        a.iter()
            .filter_map(|(p, x)| b.get(p).map(|y| (*x, *y)))
            .unzip()
    }
}
