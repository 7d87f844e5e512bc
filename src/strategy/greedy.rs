//! `greedy`: keep only the argmax. Ties go to the lowest token id (llama.cpp's greedy scans
//! with strict `>`, so its first maximum is also the lowest id on a full vocabulary).

use super::kernels::Candidates;
use super::unit::{self, Checks, Facts, Kind, PathError, ProcSpec, Stateless};
use super::{repetition, Effect, Processor, Scratch, StepCtx};
use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

pub const KIND: Kind = Kind {
    name: "greedy",
    parse,
    abbrevs: &[],
    id_first: &[],
    integer_keys: &[],
    examples: &["{kind: greedy}"],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    repetition_penalty: Option<f64>,
}

fn parse(map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    let b: Block = unit::block(map, path)?;
    let mut c = Checks::new(path);
    let mut v = unit::optional(&mut c, &[(&repetition::SIMPLE, b.repetition_penalty)]);
    v.push(ProcSpec::new(Greedy));
    c.done(v)
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Greedy;

impl Stateless for Greedy {
    const OP: &'static str = "greedy";
    fn facts(&self) -> Facts {
        Facts {
            greedy: true,
            ..Facts::default()
        }
    }
}

/// Shrink `cands` to its argmax (lowest id on ties).
pub fn keep_argmax(cands: &mut Candidates) {
    if let Some(best) = cands.argmax_position() {
        cands.keep_one(best);
    }
}

impl Processor for Greedy {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        keep_argmax(cands);
        Effect::temperature(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::final_probs;

    #[test]
    fn lowest_id_wins_ties() {
        assert_eq!(
            final_probs(Box::new(Greedy), &[1.0, 3.0, 3.0, -1.0]),
            vec![0.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn single_finite_logit() {
        let l = [f32::NEG_INFINITY, f32::NEG_INFINITY, -5.0];
        assert_eq!(final_probs(Box::new(Greedy), &l), vec![0.0, 0.0, 1.0]);
    }
}
