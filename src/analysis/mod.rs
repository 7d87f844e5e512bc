//! From sample records to the numbers a researcher reports: per-sample and per-group metrics,
//! prompt-level summaries with bootstrap CIs, paired comparisons against the baseline, latency
//! overhead and trace summaries for the plots.
//!
//! The submodules are pure (no file or model I/O; embeddings come in through
//! [`TextEmbedder`]). [`analyze`] is the one entry point: records in (read from the results
//! folder by [`crate::store`]), an [`Analysis`] out, which `report` renders; the command layer
//! (`declab run` at the end, `declab report` on a stored folder) loads the embedder with
//! [`load_embedder`] and joins the three. Analysis writes no file.
//!
//! Failed samples (status != "ok") are excluded from every metric and counted.

pub mod candidates;
pub mod catalog;
pub mod checkpoints;
pub mod compare;
pub mod design;
pub mod foreign;
pub mod latency;
pub mod models;
pub mod selection;
pub mod summary;
pub mod table;
pub mod traces;

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use crate::embed::{self, Embedder};
use crate::metrics::{self, GroupInput, MetricValues, SampleInput};
use crate::record::SampleRecord;

pub use design::Design;

/// Bootstrap resamples for every CI.
pub const DEFAULT_RESAMPLES: usize = 2000;

/// Anything that maps texts to sentence embeddings (the MiniLM [`Embedder`], or a test double).
pub trait TextEmbedder {
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Shown in the report.
    fn describe(&self) -> String;
}

impl TextEmbedder for Embedder {
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed(texts)
    }

    fn describe(&self) -> String {
        format!(
            "{} (BERT, mean pooling, L2-normalised, max {} word pieces)",
            self.dir().display(),
            self.max_seq_len()
        )
    }
}

/// Metrics of one successful sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleRow {
    pub model: String,
    pub prompt_id: String,
    pub strategy: String,
    pub sample_index: usize,
    pub stop_reason: String,
    /// Per-sample metric values, by metric name.
    pub values: MetricValues,
}

/// Metrics of one group (model x prompt x strategy).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupRow {
    pub model: String,
    pub prompt_id: String,
    pub strategy: String,
    pub n_samples: usize,
    /// Per-group metric values, by metric name.
    pub values: MetricValues,
}

/// Everything the report is made of.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub design: Design,
    pub samples: Vec<SampleRow>,
    pub groups: Vec<GroupRow>,
    pub table: table::PromptTable,
    pub summary: Vec<summary::SummaryRow>,
    pub comparisons: Vec<compare::ComparisonRow>,
    /// Each model against the first, per strategy, and the model x strategy interaction.
    pub model_comparisons: Vec<models::ModelComparison>,
    /// Checkpoint series (and `choose:`): fluency, originality, Pareto front, the pick.
    pub checkpoints: Vec<checkpoints::GroupAnalysis>,
    pub latency: Vec<latency::LatencyRow>,
    pub curves: Vec<traces::EntropyCurve>,
    pub targets: Vec<traces::TargetPoint>,
    /// How target_entropy's solve steps ended (clamped, missed), per strategy that ran one.
    pub solve: Vec<traces::SolveCounts>,
    /// What each selector chose in each cell (`select:`), its comparisons with the random pick
    /// and the mean of N, and the cost of a selected output.
    pub selections: Vec<selection::SelectionRow>,
    pub selection_comparisons: Vec<selection::SelectionComparison>,
    pub selection_costs: Vec<selection::SelectionCost>,
    /// Samples with status != "ok", left out of every metric.
    pub failed: usize,
    /// The embedder used, if any (embedding metrics are absent without one).
    pub embedder: Option<String>,
}

/// Analyse the records of one experiment. Records are taken in canonical order (model, prompt,
/// strategy as declared, sample index) whatever their order in the input.
pub fn analyze(
    design: &Design,
    records: &[SampleRecord],
    embedder: Option<&dyn TextEmbedder>,
    resamples: usize,
) -> Result<Analysis> {
    let mut design = design.clone();
    for r in records {
        design.extend_with(&r.model, &r.prompt_id, &r.strategy, &r.kind, &r.params);
    }
    let pos = |list: &[String], x: &str| list.iter().position(|y| y == x).unwrap_or(usize::MAX);
    let strategy_ids: Vec<String> = design.strategies.iter().map(|s| s.id.clone()).collect();
    let mut ok: Vec<&SampleRecord> = records.iter().filter(|r| r.ok()).collect();
    ok.sort_by_key(|r| {
        (
            pos(&design.models, &r.model),
            pos(&design.prompts, &r.prompt_id),
            pos(&strategy_ids, &r.strategy),
            r.sample_index,
        )
    });
    let failed = records.len() - ok.len();

    // embeddings: each distinct prompt once, each continuation once
    let (prompt_emb, text_emb) = match embedder {
        Some(e) => {
            let mut prompts: Vec<&str> = ok.iter().map(|r| r.prompt.as_str()).collect();
            prompts.sort_unstable();
            prompts.dedup();
            let pe = e.embed_texts(&prompts)?;
            let pmap: HashMap<&str, Vec<f32>> = prompts.into_iter().zip(pe).collect();
            let texts: Vec<&str> = ok.iter().map(|r| r.text.as_str()).collect();
            (Some(pmap), Some(e.embed_texts(&texts)?))
        }
        None => (None, None),
    };

    let samples: Vec<SampleRow> = ok
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let input = SampleInput::new(&r.text)
                .with_trace(&r.trace, r.token_ids.len())
                .with_reference(r.reference.as_ref())
                .with_embeddings(
                    prompt_emb
                        .as_ref()
                        .and_then(|p| p.get(r.prompt.as_str()))
                        .map(Vec::as_slice),
                    text_emb.as_ref().map(|t| t[i].as_slice()),
                );
            SampleRow {
                model: r.model.clone(),
                prompt_id: r.prompt_id.clone(),
                strategy: r.strategy.clone(),
                sample_index: r.sample_index,
                stop_reason: r.stop_reason.clone(),
                values: metrics::sample_values(&input),
            }
        })
        .collect();

    // groups, in canonical order (ok is sorted, so a group's members are contiguous)
    let mut groups = Vec::new();
    let mut start = 0;
    while start < ok.len() {
        let key = |r: &SampleRecord| (r.model.clone(), r.prompt_id.clone(), r.strategy.clone());
        let k = key(ok[start]);
        let mut end = start + 1;
        while end < ok.len() && key(ok[end]) == k {
            end += 1;
        }
        let texts: Vec<&str> = ok[start..end].iter().map(|r| r.text.as_str()).collect();
        let embs = text_emb.as_ref().map(|t| &t[start..end]);
        groups.push(GroupRow {
            model: k.0,
            prompt_id: k.1,
            strategy: k.2,
            n_samples: end - start,
            values: metrics::group_values(&GroupInput::new(&texts).with_embeddings(embs)),
        });
        start = end;
    }

    let table = table::PromptTable::build(&samples, &groups);
    let summary = summary::summarize(&design, &table, resamples);
    let comparisons = compare::vs_baseline(&design, &table, resamples);
    let model_comparisons = models::compare_models(&design, &table, resamples);
    let checkpoints = checkpoints::analyze(&design, &summary, &table, resamples);
    let latency = latency::latency(&design, &ok, &samples, resamples);
    let curves = traces::entropy_curves(&design, &ok);
    let targets = traces::target_points(&design, &summary);
    let solve = traces::solve_counts(&design, &ok);
    let selections = selection::select_cells(&design, &ok);
    let selection_comparisons =
        selection::compare(&design, &selections, &samples, &table, resamples);
    let selection_costs = selection::costs(&design, &ok, resamples);
    Ok(Analysis {
        design,
        samples,
        groups,
        table,
        summary,
        comparisons,
        model_comparisons,
        checkpoints,
        latency,
        curves,
        targets,
        solve,
        selections,
        selection_comparisons,
        selection_costs,
        failed,
        embedder: embedder.map(|e| e.describe()),
    })
}

/// Load the embedder: `explicit` must load; otherwise the default folder
/// ([`embed::default_dir`]) is used when present, and `None` (with a warning on stderr) when
/// it is not, so a run without `make models` still gets every other metric.
pub fn load_embedder(explicit: Option<&Path>) -> Result<Option<Embedder>> {
    if let Some(dir) = explicit {
        return Ok(Some(Embedder::load(dir)?));
    }
    let dir = embed::default_dir();
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "declab: warning: no sentence embedder at {}; coherence_embed and diversity_embed are left out (run `make models` to fetch it)",
            dir.display()
        );
        return Ok(None);
    }
    Ok(Some(Embedder::load(&dir)?))
}
