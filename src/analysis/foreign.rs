//! Metrics for generations made by any system (`declab metrics --input FILE.jsonl`): each input
//! line is `{"group": ..., "text": ..., "prompt": ...}` (`prompt` optional; `group` a string or
//! a number; other keys are ignored so files exported by other tools can be scored as they
//! are). Only the metrics that need no run trace are computed: the text metrics, and the
//! embedding ones when an embedder is given (coherence only for lines with a prompt).

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::catalog::{self, Level, Metric};
use super::TextEmbedder;
use crate::metrics::{self, GroupInput, MetricValues, SampleInput};

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
        let group = line_group(&v).map_err(|e| anyhow!("{}: {e}", at()))?;
        let text = v
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{}: missing or non-string `text`", at()))?
            .to_string();
        let prompt = line_prompt(&v)
            .map_err(|e| anyhow!("{}: {e}", at()))?
            .map(str::to_string);
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

/// A foreign line's `group` (a string, or a number written as one); shared with `declab
/// select`'s input ([`super::candidates`]).
pub(crate) fn line_group(v: &Value) -> Result<String, String> {
    match v.get("group") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err("`group` must be a string or a number".into()),
        None => Err(
            "missing `group` (each line is {\"group\": ..., \"text\": ..., \"prompt\": ...})"
                .into(),
        ),
    }
}

/// A foreign line's optional `prompt` (absent or null: none).
pub(crate) fn line_prompt(v: &Value) -> Result<Option<&str>, String> {
    match v.get("prompt") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err("`prompt` must be a string".into()),
    }
}

/// The per-sample metrics `declab metrics` writes: those that need no trace.
pub fn sample_columns() -> Vec<&'static Metric> {
    catalog::of_level(Level::Sample)
        .filter(|m| !m.needs.trace && !m.needs.reference)
        .collect()
}

/// The per-group metrics `declab metrics` writes: all of them (a group needs no trace).
pub fn group_columns() -> Vec<&'static Metric> {
    catalog::of_level(Level::Group).collect()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputSampleRow {
    pub group: String,
    /// 0-based position within its group, in input order.
    pub index: usize,
    /// Per-sample metric values, by metric name.
    pub values: MetricValues,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputGroupRow {
    pub group: String,
    pub n_samples: usize,
    /// Per-group metric values, by metric name.
    pub values: MetricValues,
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
    let mut group_order: Vec<String> = Vec::new();
    let mut members: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    let mut samples = Vec::with_capacity(lines.len());
    let mut prompt_i = 0;
    for (i, l) in lines.iter().enumerate() {
        let prompt_embedding = match (&l.prompt, &prompt_emb) {
            (Some(_), Some(pe)) => Some(pe[prompt_i].as_slice()),
            _ => None,
        };
        if l.prompt.is_some() {
            prompt_i += 1;
        }
        let input = SampleInput::new(&l.text).with_embeddings(
            prompt_embedding,
            text_emb.as_ref().map(|te| te[i].as_slice()),
        );
        let m = members.entry(l.group.as_str()).or_default();
        if m.is_empty() {
            group_order.push(l.group.clone());
        }
        samples.push(InputSampleRow {
            group: l.group.clone(),
            index: m.len(),
            values: metrics::sample_values(&input),
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
                values: metrics::group_values(
                    &GroupInput::new(&texts).with_embeddings(embs.as_deref()),
                ),
                group: g,
            }
        })
        .collect();
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
        assert_eq!(s[1].values.get("distinct_1"), Some(0.5));
    }
}
