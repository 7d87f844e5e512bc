//! The input of `declab select`: candidates to choose among, grouped by what they answer. Two
//! line formats, told apart by the first line:
//!
//! * any system's outputs: `{"group": ..., "prompt": ..., "text": ..., "token_ids": [...]?}`,
//!   one candidate per line (`group` a string or a number; `prompt` optional, the same for every
//!   line of a group; `token_ids` optional, used instead of tokenizing `text`; other keys are
//!   ignored). A candidate's index is its position in its group, from 0.
//! * declab's own `samples.jsonl` ([`SampleRecord`] lines): a group is a cell (model,
//!   prompt_id, strategy), a candidate's index its `sample_index`, its tokens the recorded
//!   `token_ids` (a final EOS included, as the trace has a step for it); failed records are
//!   skipped, as the run's selection skips them.
//!
//! Parsing is pure; every problem is reported with its line number (`declab select` exits 2).

use serde_json::Value;

use crate::record::SampleRecord;

/// Which of the two formats the input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `{"group", "prompt", "text"}` lines from any system.
    Generic,
    /// declab's `samples.jsonl`.
    Samples,
}

/// What a candidate's tokens are.
#[derive(Debug, Clone, PartialEq)]
pub enum Tokens {
    /// Given ids (a record's `token_ids`, or a line's).
    Ids(Vec<u32>),
    /// A text to tokenize (without special tokens) after the prompt's ids.
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CandidateInput {
    /// 1-based line in the input file.
    pub line: usize,
    pub index: usize,
    pub tokens: Tokens,
}

/// The candidates of one group, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The record's model (`None` for generic input: the scorer's name is used).
    pub model: Option<String>,
    /// The record's prompt_id, or the generic line's `group`.
    pub prompt_id: String,
    /// The record's strategy ("" for generic input).
    pub strategy: String,
    /// The prompt text ("" when the lines give none).
    pub prompt: String,
    pub candidates: Vec<CandidateInput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub kind: InputKind,
    /// Groups in order of first appearance.
    pub groups: Vec<Group>,
    /// Failed records skipped (samples.jsonl only).
    pub skipped_failed: usize,
}

impl Parsed {
    pub fn candidates(&self) -> usize {
        self.groups.iter().map(|g| g.candidates.len()).sum()
    }
}

/// Parse the input; the errors name their line (`line 3: ...`).
pub fn parse(text: &str) -> Result<Parsed, Vec<String>> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let Some(&(first_no, first)) = lines.first() else {
        return Err(vec![
            "holds no lines; expected one {\"group\": ..., \"prompt\": ..., \"text\": ...} object per line, or a declab samples.jsonl".into(),
        ]);
    };
    let kind = match serde_json::from_str::<Value>(first) {
        Ok(v) if v.get("sample_index").is_some() && v.get("trace").is_some() => InputKind::Samples,
        Ok(_) => InputKind::Generic,
        Err(e) => return Err(vec![format!("line {first_no}: not a JSON object: {e}")]),
    };
    let mut p = Parsed {
        kind,
        groups: Vec::new(),
        skipped_failed: 0,
    };
    let mut errors = Vec::new();
    for (no, line) in lines {
        let r = match kind {
            InputKind::Generic => generic_line(&mut p, no, line),
            InputKind::Samples => sample_line(&mut p, no, line),
        };
        if let Err(e) = r {
            errors.push(format!("line {no}: {e}"));
        }
    }
    if errors.is_empty() {
        Ok(p)
    } else {
        Err(errors)
    }
}

fn group_mut<'a>(
    groups: &'a mut Vec<Group>,
    model: Option<&str>,
    prompt_id: &str,
    strategy: &str,
    prompt: &str,
) -> &'a mut Group {
    let at = groups.iter().position(|g| {
        g.model.as_deref() == model && g.prompt_id == prompt_id && g.strategy == strategy
    });
    let at = at.unwrap_or_else(|| {
        groups.push(Group {
            model: model.map(str::to_string),
            prompt_id: prompt_id.to_string(),
            strategy: strategy.to_string(),
            prompt: prompt.to_string(),
            candidates: Vec::new(),
        });
        groups.len() - 1
    });
    &mut groups[at]
}

fn generic_line(p: &mut Parsed, no: usize, line: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let group = super::foreign::line_group(&v)?;
    let prompt = super::foreign::line_prompt(&v)?.unwrap_or("");
    let tokens = match v.get("token_ids") {
        None | Some(Value::Null) => Tokens::Text(
            v.get("text")
                .and_then(Value::as_str)
                .ok_or("missing or non-string `text` (and no `token_ids`)")?
                .to_string(),
        ),
        Some(Value::Array(a)) => Tokens::Ids(
            a.iter()
                .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or("`token_ids` must be an array of token ids (integers from 0)")?,
        ),
        Some(_) => return Err("`token_ids` must be an array of token ids".into()),
    };
    let g = group_mut(&mut p.groups, None, &group, "", prompt);
    if g.prompt != prompt {
        return Err(format!(
            "group {group:?} has another prompt than its first line's (line {}); the candidates of a group answer the same prompt",
            g.candidates[0].line
        ));
    }
    let index = g.candidates.len();
    g.candidates.push(CandidateInput {
        line: no,
        index,
        tokens,
    });
    Ok(())
}

fn sample_line(p: &mut Parsed, no: usize, line: &str) -> Result<(), String> {
    let r: SampleRecord = serde_json::from_str(line)
        .map_err(|e| format!("not a declab sample record (as the first line is): {e}"))?;
    if !r.ok() {
        p.skipped_failed += 1;
        return Ok(());
    }
    let g = group_mut(
        &mut p.groups,
        Some(&r.model),
        &r.prompt_id,
        &r.strategy,
        &r.prompt,
    );
    if g.prompt != r.prompt {
        return Err(format!(
            "{}/{}/{} has another prompt than on line {}",
            r.model, r.prompt_id, r.strategy, g.candidates[0].line
        ));
    }
    if let Some(c) = g.candidates.iter().find(|c| c.index == r.sample_index) {
        return Err(format!(
            "{}/{}/{} sample {} appears twice (also line {})",
            r.model, r.prompt_id, r.strategy, r.sample_index, c.line
        ));
    }
    g.candidates.push(CandidateInput {
        line: no,
        index: r.sample_index,
        tokens: Tokens::Ids(r.token_ids),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_lines_group_in_order_and_errors_name_the_line() {
        let p = parse(
            "{\"group\": \"b\", \"prompt\": \"P\", \"text\": \"x\"}\n\n{\"group\": 1, \"text\": \"y\", \"extra\": 0}\n{\"group\": \"b\", \"prompt\": \"P\", \"text\": \"z\", \"token_ids\": [3, 4]}\n",
        )
        .unwrap();
        assert_eq!(p.kind, InputKind::Generic);
        assert_eq!(p.groups.len(), 2);
        let b = &p.groups[0];
        assert_eq!((b.prompt_id.as_str(), b.prompt.as_str()), ("b", "P"));
        assert_eq!(
            b.candidates,
            vec![
                CandidateInput {
                    line: 1,
                    index: 0,
                    tokens: Tokens::Text("x".into())
                },
                CandidateInput {
                    line: 4,
                    index: 1,
                    tokens: Tokens::Ids(vec![3, 4])
                }
            ]
        );
        assert_eq!(
            (p.groups[1].prompt_id.as_str(), p.groups[1].prompt.as_str()),
            ("1", "")
        );

        let e = parse("{\"group\": \"a\", \"text\": \"x\"}\n{\"text\": \"y\"}\nnot json\n{\"group\": \"a\", \"prompt\": \"Q\", \"text\": \"x\"}\n{\"group\": \"c\", \"token_ids\": [-1]}\n").unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("line 2: missing `group`"), "{}", e[0]);
        assert!(e[1].starts_with("line 3: not a JSON object"), "{}", e[1]);
        assert!(
            e[2].starts_with("line 4: group \"a\" has another prompt"),
            "{}",
            e[2]
        );
        assert!(e[3].starts_with("line 5: `token_ids` must be"), "{}", e[3]);
        assert!(parse("\n").is_err());
    }

    #[test]
    fn samples_lines_group_by_cell_skip_failures_and_keep_their_index() {
        let rec = |strategy: &str, i: usize, status: &str| {
            let mut v = serde_json::json!({
                "model": "m", "prompt_id": "p", "strategy": strategy, "kind": "greedy",
                "params": {}, "sample_index": i, "seed": 1, "status": status,
                "prompt": "hello", "text": "t", "prompt_tokens": 2, "token_ids": [5, 6, i],
                "stop_reason": "max_tokens",
                "trace": {"entropy": [], "varentropy": [], "temperature": [], "final_entropy": [],
                          "kept": [], "logprob": [], "p_final": [], "forward_ms": [], "sampler_us": []},
                "timing": {"prefill_ms": 0.0, "total_ms": 0.0}
            });
            if status == "failed" {
                v["error"] = "boom".into();
            }
            v.to_string() + "\n"
        };
        let text =
            rec("a", 0, "ok") + &rec("a", 1, "failed") + &rec("a", 2, "ok") + &rec("b", 0, "ok");
        let p = parse(&text).unwrap();
        assert_eq!(p.kind, InputKind::Samples);
        assert_eq!(p.skipped_failed, 1);
        assert_eq!(p.groups.len(), 2);
        assert_eq!(p.groups[0].model.as_deref(), Some("m"));
        assert_eq!(
            p.groups[0]
                .candidates
                .iter()
                .map(|c| (c.line, c.index))
                .collect::<Vec<_>>(),
            vec![(1, 0), (3, 2)]
        );
        assert_eq!(p.groups[0].candidates[1].tokens, Tokens::Ids(vec![5, 6, 2]));
        let e = parse(&(rec("a", 0, "ok") + &rec("a", 0, "ok") + "{\"group\": 1}\n")).unwrap_err();
        assert!(
            e[0].starts_with("line 2: m/p/a sample 0 appears twice"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("line 3: not a declab sample record"),
            "{e:?}"
        );
    }
}
