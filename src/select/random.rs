//! `random`: a seeded uniform pick, the control every confidence selector is compared with.
//!
//! score_i = u_i ~ U[0, 1) drawn from ChaCha20 seeded by (experiment seed, model, prompt,
//! strategy, selector id, sample index); highest wins. Each sample's draw depends on its own
//! identity only, so the pick is uniform over the samples present and is the same whatever
//! order they are read in.

use rand::Rng;

use super::{Candidate, Cell, Kind, Plain};

#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

pub const KIND: Kind = Kind {
    name: "random",
    example: "{kind: random}",
    parse: super::parse_plain::<Random>,
};

impl Plain for Random {
    const KIND: &'static str = KIND.name;
    const DESCRIBE: &'static str = "a seeded uniform pick, the control";
    const HIGHER_WINS: bool = true;
    fn score(&self, c: &Candidate, cell: &Cell) -> Option<f64> {
        let seed =
            crate::seed::derive(&["select-index", &cell.seed.to_string(), &c.index.to_string()]);
        Some(crate::seed::rng(seed).random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{choose, Candidate, Cell};
    use super::*;
    use crate::record::Trace;

    #[test]
    fn seeded_uniform_and_independent_of_order() {
        let t = Trace::default();
        let cands: Vec<Candidate> = (0..8)
            .map(|i| Candidate {
                index: i,
                trace: &t,
            })
            .collect();
        let mut counts = [0usize; 8];
        for seed in 0..4000u64 {
            let a = choose(&Random, &cands, &Cell { seed }).unwrap();
            let mut rev = cands.clone();
            rev.reverse();
            assert_eq!(choose(&Random, &rev, &Cell { seed }).unwrap(), a);
            counts[a.index] += 1;
        }
        // 500 expected per index; 4 sd is about 84
        assert!(
            counts.iter().all(|&c| (416..=584).contains(&c)),
            "{counts:?}"
        );
    }
}
