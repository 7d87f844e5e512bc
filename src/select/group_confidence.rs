//! `group_confidence`: DeepConf's lowest group confidence; highest wins (the sample whose
//! least confident stretch is the most confident).
//!
//! C_i = −(1/k) Σ_{j ≤ k} ln p_i(j)   (token confidence over the k = 20 likeliest tokens)
//! G_t = (1/w) Σ_{i = t}^{t + w − 1} C_i   (group confidence of a window of w tokens)
//! score = min_t G_t   over the n − w + 1 windows; a text shorter than w is one window
//!
//! Fu, Wang, Tian, Zhao (2025), "Deep Think with Confidence", §3 (token, group and lowest group
//! confidence; k = 20 as in its vLLM reference). The paper's window is 2048 tokens of a
//! reasoning trace; declab's texts are short, so the window is a parameter (default 16). Read
//! from `trace.confidence`.

use std::sync::Arc;

use serde::Deserialize;
use serde_yaml::Mapping;

use super::{Candidate, Cell, Kind, Limits, Selector};
use crate::strategy::unit::{Checks, Range};
use crate::strategy::PathError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupConfidence {
    pub window: usize,
}

pub const DEFAULT_WINDOW: usize = 16;

pub const KIND: Kind = Kind {
    name: "group_confidence",
    example: "{kind: group_confidence, window: 16}",
    parse,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    window: Option<f64>,
}

fn parse(map: &Mapping, path: &str, limits: &Limits) -> Result<Arc<dyn Selector>, Vec<PathError>> {
    let raw: Raw = super::block(map, path)?;
    let mut c = Checks::new(path);
    c.range("window", Range::Count, raw.window);
    let window = raw.window.map_or(DEFAULT_WINDOW, |w| w as usize);
    if c.is_clean() && window > limits.max_new_tokens {
        c.fail(
            "window",
            format!(
                "{window} tokens is longer than any text of this experiment (max_new_tokens is {}); use a window of at most {} tokens",
                limits.max_new_tokens, limits.max_new_tokens
            ),
        );
    }
    c.done(Arc::new(GroupConfidence { window }) as Arc<dyn Selector>)
}

/// The lowest mean of `w` consecutive values (the mean of all of them when fewer than `w`).
pub fn lowest_window_mean(values: &[f64], w: usize) -> Option<f64> {
    if values.is_empty() || w == 0 {
        return None;
    }
    let w = w.min(values.len());
    values
        .windows(w)
        .map(|win| win.iter().sum::<f64>() / w as f64)
        .reduce(f64::min)
}

impl Selector for GroupConfidence {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "window": self.window })
    }
    fn default_id(&self) -> String {
        format!("group_confidence_w{}", self.window)
    }
    fn describe(&self) -> String {
        format!(
            "lowest mean token confidence (−mean ln p of the 20 likeliest tokens) over windows of {} tokens, highest wins (DeepConf, Fu et al. 2025)",
            self.window
        )
    }
    fn higher_wins(&self) -> bool {
        true
    }
    fn score(&self, c: &Candidate, _: &Cell) -> Option<f64> {
        let conf = &c.trace.confidence;
        if conf.len() != c.steps() {
            return None;
        }
        let v: Vec<f64> = conf.iter().map(|&x| x as f64).collect();
        lowest_window_mean(&v, self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::trace;
    use super::super::{choose, parse_block, Candidate, Cell, Limits};
    use super::*;

    #[test]
    fn lowest_window_by_hand() {
        let v = [5.0, 1.0, 2.0, 9.0, 9.0];
        assert_eq!(lowest_window_mean(&v, 2), Some(1.5));
        assert_eq!(lowest_window_mean(&v, 1), Some(1.0));
        assert_eq!(lowest_window_mean(&v, 5), Some(26.0 / 5.0));
        assert_eq!(lowest_window_mean(&v, 9), Some(26.0 / 5.0)); // shorter text: one window
        assert_eq!(lowest_window_mean(&[], 3), None);
    }

    #[test]
    fn a_steady_sample_beats_one_with_a_confident_average_and_a_weak_stretch() {
        let steady = trace(&[(0.0, 0.0, 0.0, 4.0); 6]);
        let dip = trace(&[
            (0.0, 0.0, 0.0, 9.0),
            (0.0, 0.0, 0.0, 9.0),
            (0.0, 0.0, 0.0, 1.0),
            (0.0, 0.0, 0.0, 1.0),
            (0.0, 0.0, 0.0, 9.0),
            (0.0, 0.0, 0.0, 9.0),
        ]);
        let cands = [
            Candidate {
                index: 0,
                trace: &dip,
            },
            Candidate {
                index: 1,
                trace: &steady,
            },
        ];
        let sel = GroupConfidence { window: 2 };
        assert_eq!(choose(&sel, &cands, &Cell { seed: 0 }).unwrap().index, 1);
        // over one window covering everything the dip's mean (6.0) wins
        let sel = GroupConfidence { window: 6 };
        assert_eq!(choose(&sel, &cands, &Cell { seed: 0 }).unwrap().index, 0);
    }

    #[test]
    fn a_window_longer_than_any_text_is_a_configuration_error() {
        let v: serde_yaml::Value =
            serde_yaml::from_str("{kind: group_confidence, window: 65}").unwrap();
        let e = parse_block(&v, "select[1]", &Limits { max_new_tokens: 64 }).unwrap_err();
        assert!(
            e[0].to_string()
                .starts_with("select[1].window: 65 tokens is longer"),
            "{}",
            e[0]
        );
        let v: serde_yaml::Value =
            serde_yaml::from_str("{kind: group_confidence, window: 2.5}").unwrap();
        let e = parse_block(&v, "select[0]", &Limits { max_new_tokens: 64 }).unwrap_err();
        assert!(
            e[0].to_string().contains("allowed: an integer >= 1"),
            "{}",
            e[0]
        );
    }
}
