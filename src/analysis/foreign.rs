//! Metrics for generations made by any system (`declab metrics --input FILE.jsonl`): each input
//! line is `{"group": ..., "text": ..., "prompt": ...}` (`prompt` optional; `group` a string or
//! a number; other keys are ignored so files exported by other tools can be scored as they
//! are). Only the metrics that need no run trace are computed: the text metrics, and the
//! embedding ones when an embedder is given (coherence only for lines with a prompt).

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::catalog::{MetricInfo, GROUP_METRICS, SAMPLE_METRICS};
use super::{per_group, per_sample, TextEmbedder};
use crate::embed;

#[derive(Debug, Clone, PartialEq)]
pub struct InputLine {
    pub group: String,
    pub text: String,
    pub prompt: Option<String>,
}

/// Parse the JSONL input; `name` labels errors (`file:line: ...`).
pub fn parse_input(text: &str, name: &str) -> Result<Vec<InputLine>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{name}:{}", i + 1);
        let v: Value =
            serde_json::from_str(line).map_err(|e| anyhow!("{}: not a JSON object: {e}", at()))?;
        let group = match v.get("group") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => bail!("{}: `group` must be a string or a number", at()),
            None => bail!("{}: missing `group` (each line is {{\"group\": ..., \"text\": ..., \"prompt\": ...}})", at()),
        };
        let text = v
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{}: missing or non-string `text`", at()))?
            .to_string();
        let prompt = match v.get("prompt") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => bail!("{}: `prompt` must be a string", at()),
        };
        out.push(InputLine {
            group,
            text,
            prompt,
        });
    }
    if out.is_empty() {
        bail!(
            "{name} holds no lines; expected one {{\"group\": ..., \"text\": ...}} object per line"
        );
    }
    Ok(out)
}

/// The per-sample columns `declab metrics` writes.
pub fn sample_columns() -> Vec<&'static MetricInfo> {
    SAMPLE_METRICS.iter().filter(|m| !m.needs_trace).collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputSampleRow {
    pub group: String,
    /// 0-based position within its group, in input order.
    pub index: usize,
    /// In [`sample_columns`] order.
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputGroupRow {
    pub group: String,
    pub n_samples: usize,
    /// In [`GROUP_METRICS`] order.
    pub values: Vec<Option<f64>>,
}

/// Score the lines: sample rows in input order, group rows in order of first appearance.
pub fn score(
    lines: &[InputLine],
    embedder: Option<&dyn TextEmbedder>,
) -> Result<(Vec<InputSampleRow>, Vec<InputGroupRow>)> {
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let text_emb = embedder.map(|e| e.embed_texts(&texts)).transpose()?;
    let prompts: Vec<&str> = lines.iter().filter_map(|l| l.prompt.as_deref()).collect();
    let prompt_emb = embedder.map(|e| e.embed_texts(&prompts)).transpose()?;
    let keep: Vec<usize> = SAMPLE_METRICS
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.needs_trace)
        .map(|(i, _)| i)
        .collect();
    let mut group_order: Vec<String> = Vec::new();
    let mut members: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    let mut samples = Vec::with_capacity(lines.len());
    let mut prompt_i = 0;
    for (i, l) in lines.iter().enumerate() {
        let coherence = match (&l.prompt, &prompt_emb, &text_emb) {
            (Some(_), Some(pe), Some(te)) => {
                let c = embed::cosine(&pe[prompt_i], &te[i]);
                Some(c)
            }
            _ => None,
        };
        if l.prompt.is_some() {
            prompt_i += 1;
        }
        let all = per_sample::sample_values(&l.text, None, coherence);
        let m = members.entry(l.group.as_str()).or_default();
        if m.is_empty() {
            group_order.push(l.group.clone());
        }
        samples.push(InputSampleRow {
            group: l.group.clone(),
            index: m.len(),
            values: keep.iter().map(|&k| all[k]).collect(),
        });
        m.push(i);
    }
    let groups = group_order
        .into_iter()
        .map(|g| {
            let idx = &members[g.as_str()];
            let texts: Vec<&str> = idx.iter().map(|&i| lines[i].text.as_str()).collect();
            let embs: Option<Vec<Vec<f32>>> = text_emb
                .as_ref()
                .map(|te| idx.iter().map(|&i| te[i].clone()).collect());
            InputGroupRow {
                n_samples: idx.len(),
                values: per_group::group_values(&texts, embs.as_deref()),
                group: g,
            }
        })
        .collect();
    debug_assert!(GROUP_METRICS.len() == per_group::group_values(&[], None).len());
    Ok((samples, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse_input(
            "{\"group\": \"a\", \"text\": \"x\"}\n{\"text\": \"y\"}\n",
            "in.jsonl",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("in.jsonl:2") && e.contains("group"), "{e}");
        let ok = parse_input(
            "{\"group\": 3, \"text\": \"x\", \"prompt\": \"p\", \"extra\": 1}\n\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            ok,
            vec![InputLine {
                group: "3".into(),
                text: "x".into(),
                prompt: Some("p".into())
            }]
        );
        assert!(parse_input("\n", "f").is_err());
    }

    #[test]
    fn indices_within_groups_in_input_order() {
        let lines = parse_input(
            "{\"group\": \"b\", \"text\": \"x y\"}\n{\"group\": \"a\", \"text\": \"x x\"}\n{\"group\": \"b\", \"text\": \"x y\"}\n",
            "f",
        )
        .unwrap();
        let (s, g) = score(&lines, None).unwrap();
        assert_eq!(
            s.iter()
                .map(|r| (r.group.as_str(), r.index))
                .collect::<Vec<_>>(),
            vec![("b", 0), ("a", 0), ("b", 1)]
        );
        assert_eq!(
            g.iter()
                .map(|r| (r.group.as_str(), r.n_samples))
                .collect::<Vec<_>>(),
            vec![("b", 2), ("a", 1)]
        );
        // distinct_1 of "x x" is 0.5
        assert_eq!(s[1].values[0], Some(0.5));
    }
}
