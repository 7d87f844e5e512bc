//! Trace summaries for the plots: the mean entropy of the unmodified distribution by token
//! position per strategy (with a normal-approximation 95% band, mean +- 1.96 sd / sqrt(n)),
//! and realised vs target entropy for `target_entropy` strategies.
//!
//! Later positions only average the samples still running there (samples stop at EOS or a
//! stop string), so a curve's tail describes the longer samples; positions with fewer than
//! [`MIN_SAMPLES_PER_POSITION`] samples are dropped.

use crate::record::SampleRecord;
use crate::stats::Estimate;

use super::design::Design;
use super::summary::{self, SummaryRow};

pub const MIN_SAMPLES_PER_POSITION: usize = 2;

/// How the steps of target_entropy's solve ended, per (model, strategy) that ran one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SolveCounts {
    pub model: String,
    pub strategy: String,
    /// Steps where a solve ran.
    pub steps: usize,
    pub clamped_min: usize,
    pub clamped_max: usize,
    /// Steps that stopped without meeting the 1e-5 nats tolerance.
    pub missed: usize,
}

/// One row per (model, strategy) whose traces hold solve steps, in design order.
pub fn solve_counts(design: &Design, records: &[&SampleRecord]) -> Vec<SolveCounts> {
    use crate::strategy::SolveFlag;
    let mut out = Vec::new();
    for model in &design.models {
        for s in &design.strategies {
            let mut c = SolveCounts {
                model: model.clone(),
                strategy: s.id.clone(),
                ..Default::default()
            };
            let flags = records
                .iter()
                .filter(|r| &r.model == model && r.strategy == s.id)
                .filter_map(|r| r.trace.solve.as_ref())
                .flatten()
                .flatten();
            for f in flags {
                c.steps += 1;
                match f {
                    SolveFlag::Met => {}
                    SolveFlag::ClampedMin => c.clamped_min += 1,
                    SolveFlag::ClampedMax => c.clamped_max += 1,
                    SolveFlag::Missed => c.missed += 1,
                }
            }
            if c.steps > 0 {
                out.push(c);
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    pub position: usize,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    pub n: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntropyCurve {
    pub model: String,
    pub strategy: String,
    pub points: Vec<CurvePoint>,
}

/// One curve per (model, strategy) with at least one position, in design order.
pub fn entropy_curves(design: &Design, records: &[&SampleRecord]) -> Vec<EntropyCurve> {
    let mut out = Vec::new();
    for model in &design.models {
        for s in &design.strategies {
            let traces: Vec<&Vec<f32>> = records
                .iter()
                .filter(|r| &r.model == model && r.strategy == s.id)
                .map(|r| &r.trace.entropy)
                .collect();
            let len = traces.iter().map(|t| t.len()).max().unwrap_or(0);
            let mut points = Vec::new();
            for pos in 0..len {
                let v: Vec<f64> = traces
                    .iter()
                    .filter_map(|t| t.get(pos))
                    .map(|&x| x as f64)
                    .filter(|x| x.is_finite())
                    .collect();
                if v.len() < MIN_SAMPLES_PER_POSITION {
                    break;
                }
                let n = v.len() as f64;
                let mean = v.iter().sum::<f64>() / n;
                let sd =
                    (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt();
                let half = 1.96 * sd / n.sqrt();
                points.push(CurvePoint {
                    position: pos,
                    mean,
                    low: mean - half,
                    high: mean + half,
                    n: v.len(),
                });
            }
            if !points.is_empty() {
                out.push(EntropyCurve {
                    model: model.clone(),
                    strategy: s.id.clone(),
                    points,
                });
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetPoint {
    pub model: String,
    pub strategy: String,
    pub target_nats: f64,
    /// Mean over prompts of the realised `final_entropy_mean`, with its CI.
    pub realised: Estimate,
    pub n_prompts: usize,
}

pub fn target_points(design: &Design, rows: &[SummaryRow]) -> Vec<TargetPoint> {
    let mut out = Vec::new();
    for model in &design.models {
        for s in &design.strategies {
            let (Some(target), Some(row)) = (
                design.target_of(model, s),
                summary::find(rows, model, &s.id, "final_entropy_mean"),
            ) else {
                continue;
            };
            out.push(TargetPoint {
                model: model.clone(),
                strategy: s.id.clone(),
                target_nats: target,
                realised: row.estimate,
                n_prompts: row.n_prompts,
            });
        }
    }
    out
}
