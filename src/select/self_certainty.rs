//! `self_certainty`: the mean over the generated steps of KL(U ‖ p_i), the divergence of the
//! model's next-token distribution from uniform; highest wins.
//!
//! score = (1/n) Σ_i KL(U ‖ p_i),  KL(U ‖ p) = −ln V − (1/V) Σ_j ln p_j
//!
//! Kang, Zhao, Song (2025), "Scalable Best-of-N Selection for Large Language Models via
//! Self-Certainty", eq. 3 and its sentence-level average (the paper's "self-certainty"; its
//! Borda voting variant needs answers to vote on and is not here). Read from
//! `trace.self_certainty`, which the sampler takes over the unmodified distribution.

use super::{Candidate, Cell, Kind, Plain};

#[derive(Debug, Clone, Copy, Default)]
pub struct SelfCertainty;

pub const KIND: Kind = Kind {
    name: "self_certainty",
    example: "{kind: self_certainty}",
    parse: super::parse_plain::<SelfCertainty>,
};

impl Plain for SelfCertainty {
    const KIND: &'static str = KIND.name;
    const DESCRIBE: &'static str = "mean over the steps of KL(U ‖ p) = −ln V − mean_j ln p_j, highest wins (self-certainty, Kang et al. 2025)";
    const HIGHER_WINS: bool = true;
    fn score(&self, c: &Candidate, _: &Cell) -> Option<f64> {
        c.mean_of(&c.trace.self_certainty)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::trace;
    use super::super::{choose, Candidate, Cell};
    use super::*;

    #[test]
    fn the_most_certain_sample_wins() {
        let a = trace(&[(1.0, -1.0, 3.0, 0.0), (1.0, -1.0, 5.0, 0.0)]); // mean 4
        let b = trace(&[(1.0, -1.0, 6.0, 0.0), (1.0, -1.0, 1.0, 0.0)]); // mean 3.5
        let cands = [
            Candidate {
                index: 0,
                trace: &b,
            },
            Candidate {
                index: 1,
                trace: &a,
            },
        ];
        let c = choose(&SelfCertainty, &cands, &Cell { seed: 0 }).unwrap();
        assert_eq!((c.index, c.score), (1, 4.0));
    }
}
