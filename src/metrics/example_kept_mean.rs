//! An example metric, compiled for tests only: adding a metric is this one file plus one line in
//! [`super::REGISTRY`] (README, "Adding a metric"), and the test below checks that the line is
//! all the analysis, the CSVs, the report and `declab compare` need.
//!
//! `example_kept_mean`: the mean number of candidates left with non-zero probability per
//! generated token (`trace.kept`); neither direction is better.

use super::metric::{Compute, Family, Metric, Needs, SampleInput};

pub const EXAMPLE_KEPT_MEAN: Metric = Metric {
    name: "example_kept_mean",
    family: Family::Entropy,
    higher_is_better: None,
    unit: "candidates",
    needs: Needs::TRACE,
    description: "mean candidates kept per token",
    compute: Compute::Sample(kept_mean),
};

fn kept_mean(s: &SampleInput<'_>) -> Option<f64> {
    let kept = &s.trace()?.kept;
    if kept.is_empty() {
        return None;
    }
    Some(kept.iter().map(|&k| k as f64).sum::<f64>() / kept.len() as f64)
}

#[cfg(test)]
mod tests {
    use crate::analysis::{self, catalog, Design};
    use crate::record::{SampleRecord, Trace};
    use crate::report;

    fn record(strategy: &str, prompt: usize, kept: u32) -> SampleRecord {
        SampleRecord {
            model: "m".into(),
            prompt_id: format!("p{prompt}"),
            strategy: strategy.into(),
            kind: strategy.into(),
            params: serde_json::json!({ "kind": strategy }),
            sample_index: 0,
            seed: 1,
            status: "ok".into(),
            error: None,
            prompt: "a prompt".into(),
            chat_prompt: None,
            text: format!("w{prompt} x y"),
            prompt_tokens: 2,
            token_ids: vec![1, 2],
            text_ends: Vec::new(),
            stop_reason: "max_tokens".into(),
            trace: Trace {
                kept: vec![kept, kept + 2 * prompt as u32],
                logprob: vec![-1.0, -1.0],
                ..Default::default()
            },
            timing: Default::default(),
            reference: None,
        }
    }

    #[test]
    fn one_registry_line_reaches_analysis_csv_report_and_compare() {
        let m = catalog::find("example_kept_mean").expect("registered metric in the catalogue");
        assert_eq!(m.family, super::Family::Entropy);

        let mut records = Vec::new();
        for p in 0..6 {
            records.push(record("greedy", p, 1));
            records.push(record("top_k", p, 40));
        }
        let design = Design {
            name: "example".into(),
            seed: 7,
            models: vec![],
            prompts: vec![],
            strategies: vec![],
            baseline: "greedy".into(),
            samples: 1,
            max_new_tokens: 2,
            selectors: vec![],
            scorer: None,
            choose: None,
            calibrated_targets: Default::default(),
        };
        let a = analysis::analyze(&design, &records, None, 200).unwrap();

        // computed per sample, keyed by its name: greedy at p1 keeps 1 then 3 candidates
        let s = a
            .samples
            .iter()
            .find(|s| s.strategy == "greedy" && s.prompt_id == "p1")
            .unwrap();
        assert_eq!(s.values.get("example_kept_mean"), Some(2.0));
        // summarised over prompts and compared with the baseline (no better direction: any
        // significant change is a regression)
        let row = analysis::summary::find(&a.summary, "m", "top_k", "example_kept_mean")
            .expect("summary row");
        assert_eq!(row.n_prompts, 6);
        // top_k at prompt p keeps 40 then 40 + 2p: 40 + p, mean over p = 0..5
        assert!((row.estimate.point - 42.5).abs() < 1e-12);
        let c = a
            .comparisons
            .iter()
            .find(|c| c.strategy == "top_k" && c.metric == "example_kept_mean")
            .expect("comparison row");
        assert_eq!(c.diff.point, 39.0);
        assert!(analysis::compare::is_significantly_worse(c, 0.05));

        // a column of metrics_samples.csv, after the other per-sample metrics
        let csv = report::summary::metrics_samples_csv(&a.samples).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        assert_eq!(header.last(), Some(&"example_kept_mean"));
        assert!(header.contains(&"sampler_overhead_pct"));
        // a column of the report's entropy table
        let table = report::markdown::family_table(
            super::Family::Entropy,
            None,
            "m",
            &["greedy".into(), "top_k".into()],
            "greedy",
            &a.summary,
            &a.comparisons,
        )
        .unwrap();
        assert!(table.contains("| example_kept_mean |"), "{table}");
    }
}
