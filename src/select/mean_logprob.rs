//! `mean_logprob`: the length-normalised log-likelihood of the chosen tokens under the model's
//! unmodified distribution; highest wins.
//!
//! score = (1/n) Σ_i ln p_i(x_i)  (nats/token; minus the sample's NLL)
//!
//! The classic best-of-N by likelihood (Hugging Face / vLLM `best_of` ranked by cumulative
//! logprob; length-normalised as in Wu et al. 2016). vLLM removed logprob-ranked `best_of`
//! because likelihood correlated poorly with quality, which is why every selection is
//! compared with the `random` control. Read from `trace.logprob`.

use super::{Candidate, Cell, Kind, Plain};

#[derive(Debug, Clone, Copy, Default)]
pub struct MeanLogprob;

pub const KIND: Kind = Kind {
    name: "mean_logprob",
    example: "{kind: mean_logprob}",
    parse: super::parse_plain::<MeanLogprob>,
};

impl Plain for MeanLogprob {
    const KIND: &'static str = KIND.name;
    const DESCRIBE: &'static str = "length-normalised log-likelihood of the chosen tokens (nats/token), highest wins (the likelihood best-of that vLLM dropped)";
    const HIGHER_WINS: bool = true;
    fn score(&self, c: &Candidate, _: &Cell) -> Option<f64> {
        c.mean_of(&c.trace.logprob)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::trace;
    use super::super::{choose, Candidate, Cell};
    use super::*;

    #[test]
    fn the_likeliest_per_token_wins_whatever_the_length() {
        let short = trace(&[(0.0, -2.0, 0.0, 0.0)]); // -2
        let long = trace(&[(0.0, -1.0, 0.0, 0.0); 6]); // -1 per token, -6 in total
        let cands = [
            Candidate {
                index: 0,
                trace: &short,
            },
            Candidate {
                index: 1,
                trace: &long,
            },
        ];
        let c = choose(&MeanLogprob, &cands, &Cell { seed: 0 }).unwrap();
        assert_eq!((c.index, c.score), (1, -1.0));
    }
}
