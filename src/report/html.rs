//! `report.html`: the report as one self-contained page, readable offline (no network, no CDN:
//! CSS, script, plots and data inline). It holds `report.md` rendered to HTML with every table
//! sortable and every plot inline, and the sample viewer: each sample's continuation token by
//! token, coloured by the model's entropy (or the chosen token's probability, or the final
//! distribution's entropy), with entropy_switch's branch changes and the controller's
//! temperature marked and the step's trace on hover; two strategies side by side on the same
//! prompt and sample index.
//!
//! The page's script and style are `assets/report.js` and `assets/report.css`; the data they
//! read is the JSON built by [`viewer_data`] (its contract is at the top of report.js). Token
//! boundaries come from the records' `text_ends` ([`crate::engine::offsets`]), so the pieces
//! join to exactly the sample's text. The layout follows criterion.rs's HTML report (a page
//! next to the data it shows); painting tokens by entropy follows entropix's token views.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};
use serde_json::{json, Value};

use crate::analysis::Analysis;
use crate::record::SampleRecord;

const CSS: &str = include_str!("assets/report.css");
const JS: &str = include_str!("assets/report.js");

/// The whole page: `md` (report.md's text) rendered, the `plots` (file name, SVG) it links
/// inlined where it links them, and the viewer over `records`.
pub fn report_html(
    a: &Analysis,
    md: &str,
    plots: &[(String, String)],
    records: &[SampleRecord],
) -> String {
    let body = markdown_html(md, plots);
    let data = script_json(&viewer_data(a, records));
    let title = esc(&format!("declab report: {}", a.design.name));
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"generator\" content=\"declab {version}\">\n\
<title>{title}</title><style>\n{CSS}</style></head>\n<body>\n\
<header class=\"top\"><span class=\"brand\">declab</span> <a href=\"#report\">Report</a> \
<a href=\"#viewer\">Sample viewer</a></header>\n<main>\n\
<section id=\"report\">\n{body}</section>\n\
<section id=\"viewer\"><h2>Sample viewer</h2><noscript>The sample viewer needs JavaScript.</noscript></section>\n\
</main>\n<script type=\"application/json\" id=\"declab-data\">{data}</script>\n\
<script>\n{JS}</script>\n</body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// report.md as HTML: GitHub tables, raw HTML in the text shown as text (sample texts and ids
/// are data, never markup), and an image that names one of `plots` replaced by that SVG.
fn markdown_html(md: &str, plots: &[(String, String)]) -> String {
    let mut events = Vec::new();
    let mut in_plot = false;
    for ev in Parser::new_ext(md, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
        match ev {
            Event::Start(Tag::Image { ref dest_url, .. }) => {
                match plots
                    .iter()
                    .find(|(name, _)| name.as_str() == dest_url.as_ref())
                {
                    Some((name, svg)) => {
                        in_plot = true;
                        events.push(Event::Html(CowStr::from(format!(
                            "<figure class=\"plot\" data-file=\"{}\">{}<figcaption>{}</figcaption></figure>",
                            esc(name),
                            inline_svg(svg),
                            esc(name)
                        ))));
                    }
                    None => events.push(ev),
                }
            }
            Event::End(TagEnd::Image) if in_plot => in_plot = false,
            _ if in_plot => {} // the alt text, now the figure's
            Event::Html(s) | Event::InlineHtml(s) => events.push(Event::Text(s)),
            ev => events.push(ev),
        }
    }
    let mut out = String::with_capacity(md.len() * 2);
    pulldown_cmark::html::push_html(&mut out, events.into_iter());
    out
}

/// An SVG file's text ready to sit inside HTML: without its XML declaration.
fn inline_svg(svg: &str) -> &str {
    let s = svg.trim_start();
    match s.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(s, |(_, r)| r.trim_start()),
        None => s,
    }
}

/// What the viewer shows, as JSON (the contract at the top of assets/report.js): the design's
/// models, prompts and strategies in report order, and per sample its pieces of text and its
/// trace, numbers rounded to 3 decimals.
pub fn viewer_data(a: &Analysis, records: &[SampleRecord]) -> Value {
    let d = &a.design;
    let pos = |list: &[String], id: &str| list.iter().position(|x| x == id);
    let strategies: Vec<String> = d.strategies.iter().map(|s| s.id.clone()).collect();
    let prompts: Vec<Value> = d
        .prompts
        .iter()
        .map(|id| {
            let text = records
                .iter()
                .find(|r| &r.prompt_id == id)
                .map_or("", |r| r.prompt.as_str());
            json!({"id": id, "text": text})
        })
        .collect();
    let mut samples: Vec<(usize, usize, usize, usize, Value)> = records
        .iter()
        .filter_map(|r| {
            let m = pos(&d.models, &r.model)?;
            let p = pos(&d.prompts, &r.prompt_id)?;
            let s = pos(&strategies, &r.strategy)?;
            Some((m, p, s, r.sample_index, sample_json(r, m, p, s)))
        })
        .collect();
    samples.sort_by_key(|(m, p, s, i, _)| (*m, *p, *s, *i));
    json!({
        "experiment": d.name,
        "models": d.models,
        "prompts": prompts,
        "strategies": strategies,
        "samples": samples.into_iter().map(|t| t.4).collect::<Vec<_>>(),
    })
}

fn sample_json(r: &SampleRecord, m: usize, p: usize, s: usize) -> Value {
    let t = &r.trace;
    let n = r.token_ids.len();
    // one entry per token: a record written before `text_ends` (or whose ends do not fit its
    // text) shows its text as one piece on the last token
    let exact = crate::engine::offsets::pieces(&r.text, &r.text_ends).filter(|p| p.len() == n);
    let exact_pieces = exact.is_some();
    let pieces: Vec<String> = match exact {
        Some(p) => p.into_iter().map(str::to_string).collect(),
        None => (0..n)
            .map(|i| {
                if i + 1 == n {
                    r.text.clone()
                } else {
                    String::new()
                }
            })
            .collect(),
    };
    let round = |v: &[f32]| -> Vec<Value> { v.iter().map(|&x| num(x)).collect() };
    json!({
        "model": m, "prompt": p, "strategy": s, "index": r.sample_index,
        "seed": r.seed.to_string(),
        "status": r.status,
        "error": r.error,
        "stop": r.stop_reason,
        "chat_prompt": r.chat_prompt,
        "exact_pieces": exact_pieces,
        "pieces": pieces,
        "token_ids": r.token_ids,
        "entropy": round(&t.entropy),
        "varentropy": round(&t.varentropy),
        "temperature": round(&t.temperature),
        "final_entropy": round(&t.final_entropy),
        "kept": t.kept,
        "logprob": round(&t.logprob),
        "p_final": round(&t.p_final),
        "branch": t.branch,
        "controller": t.controller.as_ref().map(|c| c.iter().map(|x| x.map_or(Value::Null, num)).collect::<Vec<_>>()),
        "solve": t.solve,
    })
}

/// `x` rounded to 3 decimals (null when not finite: JSON has no NaN).
fn num(x: f32) -> Value {
    let r = (x as f64 * 1000.0).round() / 1000.0;
    serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number)
}

/// JSON safe inside `<script type="application/json">`: `</` (which would end the element) and
/// `<!--` written with the JSON escape `\u003c`.
fn script_json(v: &Value) -> String {
    serde_json::to_string(v)
        .expect("JSON of plain values")
        .replace('<', "\\u003c")
}

/// Text as HTML (element content or a quoted attribute).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_in_the_markdown_stays_text_and_plots_are_inlined() {
        let md = "# R\n\nText <script>alert(1)</script> and `x<y`.\n\n| a | b |\n|---|---|\n| 1 | <b>2</b> |\n\n![Plot](plot_a.svg)\n\n![Other](other.svg)\n";
        let plots = vec![(
            "plot_a.svg".to_string(),
            "<?xml version=\"1.0\"?>\n<svg viewBox=\"0 0 1 1\"><rect/></svg>".to_string(),
        )];
        let h = markdown_html(md, &plots);
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{h}");
        assert!(h.contains("<td>&lt;b&gt;2&lt;/b&gt;</td>"), "{h}");
        assert!(h.contains("<table>"), "{h}");
        assert!(h.contains(
            "<figure class=\"plot\" data-file=\"plot_a.svg\"><svg viewBox=\"0 0 1 1\"><rect/></svg><figcaption>plot_a.svg</figcaption></figure>"
        ), "{h}");
        assert!(!h.contains("<?xml"), "{h}");
        assert!(
            !h.contains(">Plot<"),
            "the alt text went into the figure: {h}"
        );
        assert!(h.contains("<img src=\"other.svg\" alt=\"Other\""), "{h}");
    }

    #[test]
    fn script_json_cannot_close_its_element() {
        let v = json!({"text": "a</script><!-- b"});
        let s = script_json(&v);
        assert!(!s.contains("</"), "{s}");
        assert!(!s.contains("<!--"), "{s}");
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }

    #[test]
    fn numbers_are_rounded_and_non_finite_ones_are_null() {
        assert_eq!(num(2.345_678), json!(2.346));
        assert_eq!(num(f32::NAN), Value::Null);
        assert_eq!(num(-0.0004), json!(-0.0));
    }
}
