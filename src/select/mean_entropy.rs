//! `mean_entropy`: the mean entropy of the model's unmodified next-token distribution over the
//! generated steps; lowest wins (the sample the model was most sure of, step by step).
//!
//! score = (1/n) Σ_i H(p_i),  H(p) = −Σ_j p_j ln p_j  (nats)
//!
//! The entropy baseline of Kang et al. (2025) and of Fu et al. (2025, DeepConf); read from
//! `trace.entropy`.

use super::{Candidate, Cell, Kind, Plain};

#[derive(Debug, Clone, Copy, Default)]
pub struct MeanEntropy;

pub const KIND: Kind = Kind {
    name: "mean_entropy",
    example: "{kind: mean_entropy}",
    parse: super::parse_plain::<MeanEntropy>,
};

impl Plain for MeanEntropy {
    const KIND: &'static str = KIND.name;
    const DESCRIBE: &'static str =
        "mean entropy of the model's next-token distribution over the steps (nats), lowest wins";
    const HIGHER_WINS: bool = false;
    fn score(&self, c: &Candidate, _: &Cell) -> Option<f64> {
        c.mean_of(&c.trace.entropy)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::trace;
    use super::super::{choose, Candidate, Cell};
    use super::*;

    #[test]
    fn the_lowest_mean_entropy_wins() {
        let a = trace(&[(2.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)]); // 1.5
        let b = trace(&[(0.5, 0.0, 0.0, 0.0), (3.0, 0.0, 0.0, 0.0)]); // 1.75
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
        let c = choose(&MeanEntropy, &cands, &Cell { seed: 0 }).unwrap();
        assert_eq!((c.index, c.score), (1, 1.5));
    }
}
