//! The experiment grid as ids: cells (model x prompt x strategy, in declaration order) and
//! their samples, the canonical record order, and the deterministic shard assignment.
//!
//! Shards: cell i (0-based, in canonical order) belongs to shard i mod N. Round-robin over the
//! canonical order balances work (every cell has the same number of samples and similar
//! lengths) and does not depend on anything but the config. Seeds do not depend on the shard,
//! so the union of the shards is exactly the single-process run.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::config::Experiment;
use crate::record::SampleRecord;

pub type SampleKey = (String, String, String, usize);

/// Shard K of N (0-based K, as Slurm array task ids and Kubernetes completion indexes are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parse `K/N`.
    pub fn parse(s: &str) -> Result<Shard> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("--shard {s:?}: expected K/N, e.g. 0/4"))?;
        let index: usize = k
            .trim()
            .parse()
            .map_err(|_| anyhow!("--shard {s:?}: K is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| anyhow!("--shard {s:?}: N is not a number"))?;
        if count == 0 || index >= count {
            bail!("--shard {s:?}: need 0 <= K < N (shards are numbered from 0, like SLURM_ARRAY_TASK_ID)");
        }
        Ok(Shard { index, count })
    }

    /// Folder name under `results/<name>/shards/`.
    pub fn dir_name(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }

    pub fn from_dir_name(name: &str) -> Option<Shard> {
        let (k, n) = name.split_once("-of-")?;
        let s = Shard {
            index: k.parse().ok()?,
            count: n.parse().ok()?,
        };
        (s.count > 0 && s.index < s.count).then_some(s)
    }
}

/// The ids that define a grid; built from a validated experiment or a manifest's resolved config.
#[derive(Debug, Clone, PartialEq)]
pub struct GridIds {
    pub models: Vec<String>,
    pub prompts: Vec<String>,
    pub strategies: Vec<String>,
    pub samples: usize,
}

impl GridIds {
    pub fn from_experiment(exp: &Experiment) -> GridIds {
        GridIds {
            models: exp.models.iter().map(|m| m.id.clone()).collect(),
            prompts: exp.prompts.iter().map(|p| p.id.clone()).collect(),
            strategies: exp.strategies.iter().map(|s| s.id.clone()).collect(),
            samples: exp.samples,
        }
    }

    /// From `manifest.json`'s `resolved_config`.
    pub fn from_resolved(v: &serde_json::Value) -> Result<GridIds> {
        let ids = |key: &str| -> Result<Vec<String>> {
            v.get(key)
                .and_then(|x| x.as_array())
                .ok_or_else(|| anyhow!("the manifest's resolved_config has no `{key}` list"))?
                .iter()
                .map(|e| {
                    e.get("id")
                        .and_then(|i| i.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("an entry of `{key}` has no id"))
                })
                .collect()
        };
        Ok(GridIds {
            models: ids("models")?,
            prompts: ids("prompts")?,
            strategies: ids("strategies")?,
            samples: v
                .get("samples")
                .and_then(|x| x.as_u64())
                .ok_or_else(|| anyhow!("the manifest's resolved_config has no `samples`"))?
                as usize,
        })
    }

    /// Cells (model, prompt, strategy indexes) in canonical order.
    pub fn cells(&self) -> Vec<(usize, usize, usize)> {
        let mut out =
            Vec::with_capacity(self.models.len() * self.prompts.len() * self.strategies.len());
        for m in 0..self.models.len() {
            for p in 0..self.prompts.len() {
                for s in 0..self.strategies.len() {
                    out.push((m, p, s));
                }
            }
        }
        out
    }

    /// The cells of a shard (all cells without one).
    pub fn shard_cells(&self, shard: Option<Shard>) -> Vec<(usize, usize, usize)> {
        self.cells()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| shard.is_none_or(|s| i % s.count == s.index))
            .map(|(_, c)| c)
            .collect()
    }

    /// Every sample key a shard must produce.
    pub fn expected_keys(&self, shard: Option<Shard>) -> HashSet<SampleKey> {
        let mut out = HashSet::new();
        for (m, p, s) in self.shard_cells(shard) {
            for i in 0..self.samples {
                out.insert((
                    self.models[m].clone(),
                    self.prompts[p].clone(),
                    self.strategies[s].clone(),
                    i,
                ));
            }
        }
        out
    }

    /// Order: model, prompt, strategy (as declared), sample index.
    pub fn sort_canonical(&self, records: &mut [SampleRecord]) {
        let pos = |list: &[String], x: &str| list.iter().position(|y| y == x).unwrap_or(usize::MAX);
        records.sort_by_key(|r| {
            (
                pos(&self.models, &r.model),
                pos(&self.prompts, &r.prompt_id),
                pos(&self.strategies, &r.strategy),
                r.sample_index,
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> GridIds {
        GridIds {
            models: vec!["m".into()],
            prompts: vec!["a".into(), "b".into()],
            strategies: vec!["x".into(), "y".into(), "z".into()],
            samples: 2,
        }
    }

    #[test]
    fn shards_partition_the_cells_round_robin() {
        let g = ids();
        let all = g.expected_keys(None);
        assert_eq!(all.len(), 12);
        let mut union = HashSet::new();
        for k in 0..4 {
            let keys = g.expected_keys(Some(Shard { index: k, count: 4 }));
            assert!(keys.is_disjoint(&union));
            union.extend(keys);
        }
        assert_eq!(union, all);
        // cell 0 (m, a, x) and cell 4 (m, b, y) are in shard 0 of 4
        assert_eq!(
            g.shard_cells(Some(Shard { index: 0, count: 4 })),
            vec![(0, 0, 0), (0, 1, 1)]
        );
    }

    #[test]
    fn parse_shard() {
        assert_eq!(Shard::parse("2/5").unwrap(), Shard { index: 2, count: 5 });
        assert!(Shard::parse("5/5").is_err());
        assert!(Shard::parse("1").is_err());
        assert_eq!(
            Shard::from_dir_name("3-of-8"),
            Some(Shard { index: 3, count: 8 })
        );
        assert_eq!(Shard { index: 3, count: 8 }.dir_name(), "3-of-8");
    }
}
