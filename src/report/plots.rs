//! SVG plots of an analysis (plotters, SVG backend; text is left to the SVG viewer's fonts, no
//! font rendering here). Pure functions returning the SVG text:
//!
//! 1. `plot_tradeoff.svg`: the diversity–fluency frontier, one panel per model: each family's
//!    parameter sweep a line, the entropy-guided strategies labelled triangles, 95% CI bars on
//!    both axes (`nll_ref` or `nll_mean` against `diversity_embed` or distinct-2);
//! 2. `plot_entropy_by_position.svg`: mean entropy of the unmodified distribution by token
//!    position, small multiples (a panel per strategy, a line per model with its 95% band, the
//!    baseline dashed in each panel);
//! 3. `plot_target_entropy.svg`: realised (`final_entropy_mean`) vs target entropy of the
//!    `target_entropy` strategies, with the identity line;
//! 4. `plot_sampler_overhead.svg`: the sampler's share of per-token time per strategy, with CIs;
//! 5. `plot_selection_gain.svg` (with `select:`): per selector, the chosen sample's gain on one
//!    headline metric over the random pick, with CIs, one colour per strategy;
//! 6. `plot_model_effects.svg` (two models or more): each strategy's effect against the baseline
//!    on one metric comparable across models, one colour per model, strategies as rows (a
//!    forest plot, readable with 20 strategies): where the dots of a row part, the strategy
//!    acts differently on the models (the interaction test is in the report);
//! 7. `plot_checkpoints.svg` (a checkpoint series, or `choose:`): each checkpoint's fluency
//!    against its originality with CIs, labelled by step, the Pareto front joined, the chosen
//!    checkpoint ringed; one panel per series.
//!
//! A plot without data (e.g. no target-entropy strategy) is not produced. Legends sit in a
//! column right of the plot so they never hide data.

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analysis::selection::{SelectionComparison, VS_MEAN, VS_RANDOM};
use crate::analysis::summary::{self, SummaryRow};
use crate::analysis::Analysis;
use crate::stats::Estimate;

const W: u32 = 960;
const H: u32 = 600;
const FONT: &str = "sans-serif";

/// Tableau 10.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

/// Every plot that has data, as (file name, SVG text).
pub fn all_plots(a: &Analysis) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (name, svg) in [
        ("plot_tradeoff.svg", tradeoff_svg(a)?),
        ("plot_entropy_by_position.svg", entropy_svg(a)?),
        ("plot_target_entropy.svg", target_svg(a)?),
        ("plot_sampler_overhead.svg", overhead_svg(a)?),
        ("plot_selection_gain.svg", selection_gain_svg(a)?),
        ("plot_model_effects.svg", model_effects_svg(a)?),
        ("plot_checkpoints.svg", checkpoints_svg(a)?),
    ] {
        if let Some(svg) = svg {
            out.push((name.to_string(), svg));
        }
    }
    Ok(out)
}

/// Series label: the strategy, prefixed by the model when there are several.
fn series_label(a: &Analysis, model: &str, strategy: &str) -> String {
    if a.design.models.len() > 1 {
        format!("{model} / {strategy}")
    } else {
        strategy.to_string()
    }
}

/// Pixel width of a legend column for these labels (an estimate: the viewer's font decides).
fn legend_width(labels: &[String]) -> u32 {
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    (longest * 8 + 50).clamp(120, 420)
}

enum Marker {
    Dot,
    Triangle,
    Line,
    Dashed,
}

/// A legend drawn in its own area: one row per entry.
fn draw_legend(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    entries: &[(String, RGBColor, Marker)],
) -> Result<()> {
    let style = TextStyle::from((FONT, 14).into_font()).color(&BLACK);
    area.draw(&Text::new(
        title.to_string(),
        (10, 40),
        (FONT, 15).into_font().style(FontStyle::Bold),
    ))
    .map_err(err)?;
    for (i, (label, c, marker)) in entries.iter().enumerate() {
        let y = 66 + 22 * i as i32;
        match marker {
            Marker::Dot => area
                .draw(&Circle::new((20, y), 5, c.filled()))
                .map_err(err)?,
            Marker::Triangle => area
                .draw(&TriangleMarker::new((20, y), 7, c.filled()))
                .map_err(err)?,
            Marker::Line => area
                .draw(&PathElement::new(vec![(10, y), (30, y)], c.stroke_width(3)))
                .map_err(err)?,
            Marker::Dashed => area
                .draw(&PathElement::new(vec![(10, y), (16, y)], c.stroke_width(2)))
                .and_then(|_| {
                    area.draw(&PathElement::new(vec![(22, y), (30, y)], c.stroke_width(2)))
                })
                .map_err(err)?,
        }
        area.draw(&Text::new(label.clone(), (38, y - 8), style.clone()))
            .map_err(err)?;
    }
    Ok(())
}

/// Range with 8% padding (and a unit span around a single value).
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.08
    } else {
        lo.abs().max(1.0) * 0.1
    };
    (lo - pad, hi + pad)
}

fn pick(rows: &[SummaryRow], candidates: &[&'static str]) -> Option<&'static str> {
    candidates
        .iter()
        .copied()
        .find(|m| rows.iter().any(|r| r.metric == *m))
}

fn axis_label(metric: &str) -> String {
    match metric {
        "coherence_embed" => {
            "coherence: cos(prompt, continuation), MiniLM  (higher = more on-topic)".into()
        }
        "nll_mean" => "NLL of the generated tokens, nats/token  (lower = more likely)".into(),
        "nll_ref" => {
            "NLL of the text under the reference scorer, nats/token  (lower = more fluent)".into()
        }
        "diversity_embed" => {
            "diversity: 1 - mean pairwise cosine, MiniLM  (higher = more diverse)".into()
        }
        "distinct_2_pooled" => {
            "distinct-2 over each prompt's samples  (higher = more diverse)".into()
        }
        "distinct_2" => "distinct-2 per sample  (higher = more diverse)".into(),
        other => other.to_string(),
    }
}

/// The kinds that steer by entropy: drawn as labelled points, not as a sweep.
const ENTROPY_GUIDED: &[&str] = &[
    "entropy_switch",
    "target_entropy",
    "mirostat",
    "dynatemp",
    "edt",
];

/// A strategy's label inside its family: the id without the kind (`t=0.7`), shortened.
fn short_label(id: &str, kind: &str) -> String {
    let inner = id
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(id);
    let inner = if inner.is_empty() { id } else { inner };
    // a switch's branches are in the id but not needed beside the point
    let inner = inner.split(",L=").next().unwrap_or(inner);
    if inner.chars().count() > 24 {
        format!("{}…", inner.chars().take(23).collect::<String>())
    } else {
        inner.to_string()
    }
}

/// Plot 1: the diversity–fluency frontier, one panel per model: x = fluency (`nll_ref` under
/// the reference scorer, else the model's own `nll_mean`; lower = more fluent), y = diversity
/// (`diversity_embed`, else pooled distinct-2, else distinct-2), both with 95% CIs. Each
/// family's parameter sweep (temperature, top-p, min-p... with two settings or more) is a line
/// in grid order; the entropy-guided strategies are labelled triangles; colour = kind.
pub fn tradeoff_svg(a: &Analysis) -> Result<Option<String>> {
    let Some(xm) = pick(&a.summary, &["nll_ref", "nll_mean"]) else {
        return Ok(None);
    };
    let Some(ym) = pick(
        &a.summary,
        &["diversity_embed", "distinct_2_pooled", "distinct_2"],
    ) else {
        return Ok(None);
    };
    let d = &a.design;
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = Vec::new();
        for s in &d.strategies {
            if !k.contains(&s.kind.as_str()) {
                k.push(&s.kind);
            }
        }
        k
    };
    let point = |model: &str, id: &str| {
        Some((
            summary::find(&a.summary, model, id, xm)?.estimate,
            summary::find(&a.summary, model, id, ym)?.estimate,
        ))
    };
    let all: Vec<(Estimate, Estimate)> = d
        .models
        .iter()
        .flat_map(|m| d.strategies.iter().filter_map(move |s| point(m, &s.id)))
        .collect();
    if all.is_empty() {
        return Ok(None);
    }
    let (x0, x1) = padded(
        all.iter().map(|p| p.0.ci_low).fold(f64::INFINITY, f64::min),
        all.iter()
            .map(|p| p.0.ci_high)
            .fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = padded(
        all.iter().map(|p| p.1.ci_low).fold(f64::INFINITY, f64::min),
        all.iter()
            .map(|p| p.1.ci_high)
            .fold(f64::NEG_INFINITY, f64::max),
    );
    let legend_labels: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    let n = d.models.len().max(1);
    let (width, height) = if n <= 2 {
        (W + 300 * (n as u32 - 1), H)
    } else {
        (W, H * n as u32 / 2 + 100)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot, legend) = root.split_horizontally(width - legend_width(&legend_labels).max(180));
        let panels = if n <= 2 {
            plot.split_evenly((1, n))
        } else {
            plot.split_evenly((n.div_ceil(2), 2))
        };
        for (model, area) in d.models.iter().zip(panels.iter()) {
            let mut chart = ChartBuilder::on(area)
                .caption(
                    if n > 1 {
                        format!("{model}: diversity vs fluency (95% CI)")
                    } else {
                        "Diversity vs fluency per strategy (mean over prompts, 95% CI)".to_string()
                    },
                    (FONT, 16),
                )
                .margin(12)
                .x_label_area_size(50)
                .y_label_area_size(64)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(axis_label(xm))
                .y_desc(axis_label(ym))
                .axis_desc_style((FONT, 13))
                .label_style((FONT, 11))
                .x_label_formatter(&|v| format!("{v:.2}"))
                .y_label_formatter(&|v| format!("{v:.2}"))
                .draw()
                .map_err(err)?;
            for (ki, kind) in kinds.iter().enumerate() {
                let c = color(ki);
                let members: Vec<(&str, (Estimate, Estimate))> = d
                    .strategies
                    .iter()
                    .filter(|s| s.kind == *kind)
                    .filter_map(|s| point(model, &s.id).map(|p| (s.id.as_str(), p)))
                    .collect();
                let guided = ENTROPY_GUIDED.contains(kind);
                if !guided && members.len() >= 2 {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            members
                                .iter()
                                .map(|(_, (x, y))| (x.point, y.point))
                                .collect::<Vec<_>>(),
                            c.stroke_width(2),
                        )))
                        .map_err(err)?;
                }
                for (id, (x, y)) in &members {
                    chart
                        .draw_series([
                            PathElement::new(
                                vec![(x.ci_low, y.point), (x.ci_high, y.point)],
                                c.mix(0.5).stroke_width(1),
                            ),
                            PathElement::new(
                                vec![(x.point, y.ci_low), (x.point, y.ci_high)],
                                c.mix(0.5).stroke_width(1),
                            ),
                        ])
                        .map_err(err)?;
                    if guided {
                        chart
                            .draw_series(std::iter::once(TriangleMarker::new(
                                (x.point, y.point),
                                8,
                                c.filled(),
                            )))
                            .map_err(err)?;
                    } else {
                        chart
                            .draw_series(std::iter::once(Circle::new(
                                (x.point, y.point),
                                5,
                                c.filled(),
                            )))
                            .map_err(err)?;
                    }
                    let label = if guided || members.len() >= 2 {
                        short_label(id, kind)
                    } else {
                        id.to_string()
                    };
                    chart
                        .draw_series(std::iter::once(
                            EmptyElement::at((x.point, y.point))
                                + Text::new(label, (7, -15), (FONT, 11).into_font().color(&c)),
                        ))
                        .map_err(err)?;
                }
            }
        }
        let entries: Vec<(String, RGBColor, Marker)> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let m = if ENTROPY_GUIDED.contains(k) {
                    Marker::Triangle
                } else {
                    Marker::Line
                };
                (k.to_string(), color(i), m)
            })
            .collect();
        draw_legend(&legend, "kind (line: sweep)", &entries)?;
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
}

/// The strategy id shortened for a panel title.
fn panel_title(id: &str) -> String {
    if id.chars().count() > 44 {
        format!("{}…", id.chars().take(43).collect::<String>())
    } else {
        id.to_string()
    }
}

/// Plot 2: mean entropy of the unmodified distribution by token position, as small multiples:
/// one panel per strategy (shared axes), one line per model with its 95% band, and the
/// baseline's curve of the same model dashed in grey in every other panel for reference.
pub fn entropy_svg(a: &Analysis) -> Result<Option<String>> {
    if a.curves.is_empty() {
        return Ok(None);
    }
    let d = &a.design;
    let strategies: Vec<&str> = d
        .strategies
        .iter()
        .map(|s| s.id.as_str())
        .filter(|s| a.curves.iter().any(|c| c.strategy == *s))
        .collect();
    let xmax = a
        .curves
        .iter()
        .flat_map(|c| c.points.last())
        .map(|p| p.position)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let ymax = a
        .curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.high))
        .fold(0.0f64, f64::max);
    let cols = strategies.len().clamp(1, 4);
    let rows = strategies.len().div_ceil(cols);
    let panel_h = 210u32;
    let models: Vec<String> = d.models.clone();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W + 160, 40 + panel_h * rows as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, body) = root.split_vertically(40);
        top.draw(&Text::new(
            "Entropy of the model's next-token distribution by position (mean, 95% band; dashed: the baseline)",
            (12, 12),
            (FONT, 16).into_font(),
        ))
        .map_err(err)?;
        let (grid, legend) = body.split_horizontally(W);
        let panels = grid.split_evenly((rows, cols));
        for (s, area) in strategies.iter().zip(panels.iter()) {
            let mut chart = ChartBuilder::on(area)
                .caption(panel_title(s), (FONT, 12))
                .margin(6)
                .x_label_area_size(26)
                .y_label_area_size(34)
                .build_cartesian_2d(0f64..xmax, 0f64..(ymax * 1.05).max(0.1))
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .disable_y_mesh()
                .label_style((FONT, 10))
                .x_labels(4)
                .y_labels(4)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.1}"))
                .draw()
                .map_err(err)?;
            for (mi, model) in models.iter().enumerate() {
                if *s != d.baseline {
                    if let Some(b) = a
                        .curves
                        .iter()
                        .find(|c| &c.model == model && c.strategy == d.baseline)
                    {
                        chart
                            .draw_series(DashedLineSeries::new(
                                b.points.iter().map(|p| (p.position as f64, p.mean)),
                                4,
                                3,
                                RGBColor(150, 150, 150).stroke_width(1),
                            ))
                            .map_err(err)?;
                    }
                }
                let Some(c) = a
                    .curves
                    .iter()
                    .find(|c| &c.model == model && c.strategy == *s)
                else {
                    continue;
                };
                let col = color(mi);
                let mut band: Vec<(f64, f64)> = c
                    .points
                    .iter()
                    .map(|p| (p.position as f64, p.high))
                    .collect();
                // entropy is never negative: clip the normal-approximation band at 0
                band.extend(
                    c.points
                        .iter()
                        .rev()
                        .map(|p| (p.position as f64, p.low.max(0.0))),
                );
                chart
                    .draw_series(std::iter::once(Polygon::new(band, col.mix(0.15).filled())))
                    .map_err(err)?;
                chart
                    .draw_series(LineSeries::new(
                        c.points.iter().map(|p| (p.position as f64, p.mean)),
                        col.stroke_width(2),
                    ))
                    .map_err(err)?;
            }
        }
        let mut entries: Vec<(String, RGBColor, Marker)> = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), color(i), Marker::Line))
            .collect();
        entries.push((
            "baseline".to_string(),
            RGBColor(150, 150, 150),
            Marker::Dashed,
        ));
        draw_legend(&legend, "model", &entries)?;
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
}

/// Plot 3: realised vs target entropy for target-entropy strategies.
pub fn target_svg(a: &Analysis) -> Result<Option<String>> {
    if a.targets.is_empty() {
        return Ok(None);
    }
    let hi = a
        .targets
        .iter()
        .map(|t| t.target_nats.max(t.realised.ci_high))
        .fold(0.0f64, f64::max);
    let top = (hi * 1.15).max(0.5);
    let labels: Vec<String> = a
        .targets
        .iter()
        .map(|t| series_label(a, &t.model, &t.strategy))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot, legend) = root.split_horizontally(W - legend_width(&labels).max(200));
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                "Realised vs target entropy (target_entropy strategies, 95% CI)",
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..top, 0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("target entropy (nats)")
            .y_desc("realised entropy of the sampled distribution (nats, mean)")
            .axis_desc_style((FONT, 14))
            .label_style((FONT, 12))
            .x_label_formatter(&|v| format!("{v:.1}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (top, top)],
                6,
                4,
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(err)?;
        for (i, t) in a.targets.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![
                        (t.target_nats, t.realised.ci_low),
                        (t.target_nats, t.realised.ci_high),
                    ],
                    c.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (t.target_nats, t.realised.point),
                    6,
                    c.filled(),
                )))
                .map_err(err)?;
        }
        let mut entries: Vec<(String, RGBColor, Marker)> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), color(i), Marker::Dot))
            .collect();
        entries.push((
            "realised = target".into(),
            RGBColor(110, 110, 110),
            Marker::Dashed,
        ));
        draw_legend(&legend, "strategy", &entries)?;
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
}

/// Plot 4: the sampler's share of per-token time per strategy, one dot with its CI per model
/// (a forest plot: strategies as rows).
pub fn overhead_svg(a: &Analysis) -> Result<Option<String>> {
    let d = &a.design;
    let rows: Vec<&str> = d
        .strategies
        .iter()
        .map(|s| s.id.as_str())
        .filter(|s| {
            d.models
                .iter()
                .any(|m| summary::find(&a.summary, m, s, "sampler_overhead_pct").is_some())
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let points = rows
        .iter()
        .map(|s| {
            d.models
                .iter()
                .map(|m| {
                    summary::find(&a.summary, m, s, "sampler_overhead_pct").map(|r| r.estimate)
                })
                .collect()
        })
        .collect();
    forest_svg(&Forest {
        caption: "Sampler share of per-token time (median per sample, mean over prompts, 95% CI)"
            .into(),
        x_desc: "sampler time / (forward + sampler time) per token (%)".into(),
        rows: rows.iter().map(|s| row_label(s)).collect(),
        series: d.models.clone(),
        legend_title: "model",
        points,
    })
    .map(Some)
}

/// Plot 5: the gain of each selector on one headline metric (`coherence_embed` when the run
/// had the embedder, else `nll_mean`): the mean over prompts of the chosen sample's value minus
/// the random pick's (minus the mean of N when there is no `random` selector), with its 95% CI;
/// a row per selector and strategy, a dot per model; absent without selection comparisons.
pub fn selection_gain_svg(a: &Analysis) -> Result<Option<String>> {
    let rows = &a.selection_comparisons;
    let Some(metric) = ["coherence_embed", "nll_mean", "distinct_2"]
        .into_iter()
        .find(|m| rows.iter().any(|r| r.cmp.metric == *m))
    else {
        return Ok(None);
    };
    let reference = if rows
        .iter()
        .any(|r| r.cmp.metric == metric && r.cmp.reference == VS_RANDOM)
    {
        VS_RANDOM
    } else {
        VS_MEAN
    };
    let pts: Vec<&SelectionComparison> = rows
        .iter()
        .filter(|r| r.cmp.metric == metric && r.cmp.reference == reference)
        .collect();
    let d = &a.design;
    let mut labels = Vec::new();
    let mut points = Vec::new();
    for sel in d.selectors.iter().map(|s| s.id.as_str()) {
        for s in &d.strategies {
            let row: Vec<Option<Estimate>> = d
                .models
                .iter()
                .map(|m| {
                    pts.iter()
                        .find(|p| p.selector == sel && &p.cmp.model == m && p.cmp.strategy == s.id)
                        .map(|p| p.cmp.diff)
                })
                .collect();
            if row.iter().any(Option::is_some) {
                labels.push(format!("{sel} · {}", row_label(&s.id)));
                points.push(row);
            }
        }
    }
    if points.is_empty() {
        return Ok(None);
    }
    let against = if reference == VS_RANDOM {
        "the random pick"
    } else {
        "the mean of N"
    };
    let direction = match crate::metrics::find(metric).and_then(|m| m.higher_is_better) {
        Some(true) => "  (higher = better)",
        Some(false) => "  (lower = better)",
        None => "",
    };
    forest_svg(&Forest {
        caption: format!("Gain per selector over {against} (mean over prompts, 95% CI)"),
        x_desc: format!("Δ {metric}, chosen − {against}{direction}"),
        rows: labels,
        series: d.models.clone(),
        legend_title: "model",
        points,
    })
    .map(Some)
}

/// A strategy id for a row label: an entropy switch without its branches, at most 48 chars.
fn row_label(id: &str) -> String {
    let short = match id.split_once(",L=") {
        Some((head, _)) => format!("{head},…)"),
        None => id.to_string(),
    };
    if short.chars().count() > 48 {
        format!("{}…", short.chars().take(47).collect::<String>())
    } else {
        short
    }
}

/// Plot 6: each non-baseline strategy's effect against the baseline (mean over prompts of the
/// paired difference, 95% CI, from `comparisons.csv`) on `nll_ref` when the experiment has a
/// reference scorer, else `distinct_2`, one colour per model; absent with one model.
pub fn model_effects_svg(a: &Analysis) -> Result<Option<String>> {
    let d = &a.design;
    if d.models.len() < 2 {
        return Ok(None);
    }
    let Some(metric) = ["nll_ref", "distinct_2"]
        .into_iter()
        .find(|m| a.comparisons.iter().any(|c| c.metric == *m))
    else {
        return Ok(None);
    };
    let rows: Vec<String> = d
        .strategies
        .iter()
        .filter(|s| s.id != d.baseline)
        .map(|s| s.id.clone())
        .collect();
    let labels: Vec<String> = rows.iter().map(|s| row_label(s)).collect();
    let points: Vec<Vec<Option<Estimate>>> = rows
        .iter()
        .map(|s| {
            d.models
                .iter()
                .map(|m| {
                    a.comparisons
                        .iter()
                        .find(|c| &c.model == m && &c.strategy == s && c.metric == metric)
                        .map(|c| c.diff)
                })
                .collect()
        })
        .collect();
    let direction = match crate::metrics::find(metric).and_then(|m| m.higher_is_better) {
        Some(true) => "  (higher = better)",
        Some(false) => "  (lower = better)",
        None => "",
    };
    forest_svg(&Forest {
        caption: format!(
            "Effect against {} per model (mean over prompts, 95% CI)",
            d.baseline
        ),
        x_desc: format!("Δ {metric}, strategy − {}{direction}", d.baseline),
        rows: labels,
        series: d.models.clone(),
        legend_title: "model",
        points,
    })
    .map(Some)
}

/// A forest plot: one row per label, one dot with its CI per series in each row, and the zero
/// line.
struct Forest {
    caption: String,
    x_desc: String,
    rows: Vec<String>,
    series: Vec<String>,
    legend_title: &'static str,
    /// `points[row][series]`.
    points: Vec<Vec<Option<Estimate>>>,
}

fn forest_svg(f: &Forest) -> Result<String> {
    let all = || f.points.iter().flatten().flatten();
    let (x0, x1) = padded(
        all().map(|e| e.ci_low).fold(0.0, f64::min),
        all().map(|e| e.ci_high).fold(0.0, f64::max),
    );
    let n = f.rows.len().max(1);
    let k = f.series.len().max(1);
    let height = (120 + 28 * n as u32 * (k as u32).min(3)).max(H / 2);
    let label_px = (f.rows.iter().map(|r| r.chars().count()).max().unwrap_or(0) as u32 * 7 + 20)
        .clamp(80, 360);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot, legend) = root.split_horizontally(W - legend_width(&f.series).max(160));
        let mut chart = ChartBuilder::on(&plot)
            .caption(&f.caption, (FONT, 16))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(label_px)
            .build_cartesian_2d(x0..x1, (0..n - 1).into_segmented())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(f.x_desc.as_str())
            .axis_desc_style((FONT, 14))
            .label_style((FONT, 12))
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                // the first row on top
                SegmentValue::CenterOf(i) => f.rows.get(n - 1 - *i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_formatter(&|v| format!("{:.3}", if v.abs() < 1e-12 { 0.0 } else { *v }))
            .draw()
            .map_err(err)?;
        let (zx, zt) = chart.backend_coord(&(0.0, SegmentValue::Exact(n)));
        let (_, zb) = chart.backend_coord(&(0.0, SegmentValue::Exact(0)));
        root.draw(&PathElement::new(
            vec![(zx, zt), (zx, zb)],
            BLACK.mix(0.5).stroke_width(1),
        ))
        .map_err(err)?;
        for (r, row) in f.points.iter().enumerate() {
            let i = n - 1 - r;
            let (_, bottom) = chart.backend_coord(&(0.0, SegmentValue::Exact(i)));
            let (_, top) = chart.backend_coord(&(0.0, SegmentValue::Exact(i + 1)));
            let slot = (bottom - top) as f64 * 0.7 / k as f64;
            let first = (top + bottom) as f64 / 2.0 - slot * (k as f64 - 1.0) / 2.0;
            for (j, e) in row.iter().enumerate() {
                let Some(e) = e else { continue };
                let y = (first + slot * j as f64).round() as i32;
                let x = |v: f64| chart.backend_coord(&(v, SegmentValue::Exact(i))).0;
                let c = color(j);
                root.draw(&PathElement::new(
                    vec![(x(e.ci_low), y), (x(e.ci_high), y)],
                    c.stroke_width(2),
                ))
                .map_err(err)?;
                for v in [e.ci_low, e.ci_high] {
                    root.draw(&PathElement::new(
                        vec![(x(v), y - 4), (x(v), y + 4)],
                        c.stroke_width(2),
                    ))
                    .map_err(err)?;
                }
                root.draw(&Circle::new((x(e.point), y), 5, c.filled()))
                    .map_err(err)?;
            }
        }
        let mut entries: Vec<(String, RGBColor, Marker)> = f
            .series
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), color(i), Marker::Dot))
            .collect();
        entries.push(("no effect".into(), RGBColor(110, 110, 110), Marker::Line));
        draw_legend(&legend, f.legend_title, &entries)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// `declab calibrate`'s histograms: one panel per model (shared entropy axis), the share of
/// calibration tokens per 0.25-nat bin, with the quartiles as dashed lines.
pub fn calibration_svg(
    models: &[(&str, &[f64], &crate::calibrate::ModelCalibration)],
) -> Result<String> {
    let hi = models
        .iter()
        .flat_map(|(_, h, _)| h.iter().copied())
        .fold(1.0f64, f64::max);
    let width = 0.25;
    let bins = (hi / width).ceil() as usize + 1;
    let x1 = bins as f64 * width;
    let panel_h = 220u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, panel_h * models.len().max(1) as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((models.len().max(1), 1));
        for (i, ((name, h, cal), area)) in models.iter().zip(panels.iter()).enumerate() {
            let mut counts = vec![0usize; bins];
            for &x in h.iter().filter(|x| x.is_finite()) {
                counts[((x.max(0.0) / width) as usize).min(bins - 1)] += 1;
            }
            let n = h.len().max(1) as f64;
            let top = counts.iter().copied().max().unwrap_or(0) as f64 / n * 1.1 + 1e-9;
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{name}: {} tokens, median {:.2} nats",
                        cal.n_tokens,
                        cal.quantiles.get("0.5").copied().unwrap_or(f64::NAN)
                    ),
                    (FONT, 15),
                )
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..x1, 0.0..top)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc("entropy of the next-token distribution (nats)")
                .y_desc("share of tokens")
                .axis_desc_style((FONT, 13))
                .label_style((FONT, 11))
                .y_label_formatter(&|v| format!("{v:.2}"))
                .draw()
                .map_err(err)?;
            let c = color(i);
            chart
                .draw_series(counts.iter().enumerate().map(|(b, &k)| {
                    let x = b as f64 * width;
                    Rectangle::new(
                        [(x, 0.0), (x + width * 0.95, k as f64 / n)],
                        c.mix(0.7).filled(),
                    )
                }))
                .map_err(err)?;
            for key in ["0.25", "0.5", "0.75"] {
                if let Some(&q) = cal.quantiles.get(key) {
                    chart
                        .draw_series(DashedLineSeries::new(
                            vec![(q, 0.0), (q, top)],
                            5,
                            4,
                            BLACK.mix(0.7).stroke_width(1),
                        ))
                        .map_err(err)?;
                }
            }
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Plot 7: fluency against originality per checkpoint (see the module doc).
pub fn checkpoints_svg(a: &Analysis) -> Result<Option<String>> {
    let groups: Vec<&crate::analysis::checkpoints::GroupAnalysis> = a
        .checkpoints
        .iter()
        .filter(|g| g.frontier.as_ref().is_some_and(|f| !f.points.is_empty()))
        .collect();
    if groups.is_empty() {
        return Ok(None);
    }
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (W, H * groups.len() as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((groups.len(), 1));
        for (g, area) in groups.iter().zip(panels.iter()) {
            let f = g.frontier.as_ref().expect("filtered");
            let (x0, x1) = padded(
                f.points
                    .iter()
                    .map(|p| p.originality.ci_low)
                    .fold(f64::INFINITY, f64::min),
                f.points
                    .iter()
                    .map(|p| p.originality.ci_high)
                    .fold(f64::NEG_INFINITY, f64::max),
            );
            let (y0, y1) = padded(
                f.points
                    .iter()
                    .map(|p| p.fluency.ci_low)
                    .fold(f64::INFINITY, f64::min),
                f.points
                    .iter()
                    .map(|p| p.fluency.ci_high)
                    .fold(f64::NEG_INFINITY, f64::max),
            );
            let title = if g.group.series.is_empty() {
                format!(
                    "Fluency vs originality per model, {} (mean over prompts, 95% CI)",
                    g.group.strategy
                )
            } else {
                format!(
                    "Checkpoints of {}, {} (mean over prompts, 95% CI)",
                    g.group.series, g.group.strategy
                )
            };
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 16))
                .margin(14)
                .x_label_area_size(50)
                .y_label_area_size(70)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(axis_label(f.originality))
                .y_desc(axis_label(f.fluency))
                .axis_desc_style((FONT, 14))
                .label_style((FONT, 12))
                .x_label_formatter(&|v| format!("{v:.3}"))
                .y_label_formatter(&|v| format!("{v:.3}"))
                .draw()
                .map_err(err)?;
            let mut front: Vec<(f64, f64)> = f
                .points
                .iter()
                .filter(|p| p.pareto)
                .map(|p| (p.originality.point, p.fluency.point))
                .collect();
            front.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(std::iter::once(PathElement::new(
                    front,
                    BLACK.mix(0.5).stroke_width(2),
                )))
                .map_err(err)?;
            let chosen = g.choice.as_ref().and_then(|c| c.chosen.as_deref());
            let n = f.points.len();
            for (i, p) in f.points.iter().enumerate() {
                // step order as a colour ramp: early light, late dark
                let t = if n > 1 {
                    i as f64 / (n - 1) as f64
                } else {
                    1.0
                };
                let c = RGBColor(
                    (200.0 - 170.0 * t) as u8,
                    (220.0 - 100.0 * t) as u8,
                    (240.0 - 60.0 * t) as u8,
                );
                let (x, y) = (&p.originality, &p.fluency);
                chart
                    .draw_series([
                        PathElement::new(
                            vec![(x.ci_low, y.point), (x.ci_high, y.point)],
                            c.stroke_width(2),
                        ),
                        PathElement::new(
                            vec![(x.point, y.ci_low), (x.point, y.ci_high)],
                            c.stroke_width(2),
                        ),
                    ])
                    .map_err(err)?;
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (x.point, y.point),
                        6,
                        c.filled(),
                    )))
                    .map_err(err)?;
                if chosen == Some(p.model.as_str()) {
                    chart
                        .draw_series(std::iter::once(Circle::new(
                            (x.point, y.point),
                            11,
                            RGBColor(214, 39, 40).stroke_width(3),
                        )))
                        .map_err(err)?;
                }
                let label = match p.step {
                    Some(s) => format!("{s}"),
                    None => p.model.clone(),
                };
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((x.point, y.point))
                            + Text::new(label, (9, -18), (FONT, 13).into_font()),
                    ))
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
}
