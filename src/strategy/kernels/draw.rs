//! The final distribution and the categorical draw: one exp pass over what is left (a pending
//! temperature folded in) gives [`FinalStats`] and each block's Σe; the inverse-CDF draw skips
//! whole blocks by those sums and evaluates exp only inside the block where the running sum
//! crosses u·S. Positions are drawn in the order given (the candidate set sorts by id first, so
//! a sample never depends on the order a selection left the candidates in).

use super::exp::exp_nonpos;
use super::isa::Isa;
use super::moments::{exp_moments_at, stats_from_moments, DistStats};
use super::scan::max_finite;
use super::BLOCK;

/// Summary of the final (sampled-from) distribution over the candidates' logits.
#[derive(Debug, Clone, Copy)]
pub struct FinalStats {
    pub stats: DistStats,
    /// Σ exp(l - max): the normaliser of the draw.
    pub sum: f64,
    /// Candidates with non-zero probability.
    pub kept: usize,
}

/// [`FinalStats`] of `logits`; `blocks` receives the per-[`BLOCK`] sums the draw walks.
pub fn final_stats(logits: &[f32], blocks: &mut Vec<f64>) -> FinalStats {
    final_stats_scaled(logits, None, max_finite(logits), blocks)
}

/// [`final_stats`] of the logits times `pre` (each product rounded to f32, as
/// [`Candidates::scale`](super::Candidates::scale) rounds it), whose largest value is `m`: a temperature folded into the
/// pass.
pub fn final_stats_scaled(
    logits: &[f32],
    pre: Option<f32>,
    m: f32,
    blocks: &mut Vec<f64>,
) -> FinalStats {
    final_pass(logits, pre, m, blocks, true)
}

/// [`final_stats_scaled`], with the varentropy only when `varentropy` is set (NaN otherwise):
/// the draw and the entropy need Σe and Σe·y, and a pass that leaves Σe·y² out is faster (the
/// other figures are the same bits).
pub(super) fn final_pass(
    logits: &[f32],
    pre: Option<f32>,
    m: f32,
    blocks: &mut Vec<f64>,
    varentropy: bool,
) -> FinalStats {
    blocks.clear();
    if m == f32::NEG_INFINITY {
        let stats = DistStats {
            max_logit: m,
            log_z: f64::NEG_INFINITY,
            entropy_nats: 0.0,
            varentropy_nats2: 0.0,
        };
        return FinalStats {
            stats,
            sum: 0.0,
            kept: 0,
        };
    }
    let isa = Isa::detected();
    let (s, s1, s2, kept) = exp_moments_at(isa, logits, pre, m, 1.0, Some(blocks), varentropy);
    let mut stats = stats_from_moments(m, s, s1, s2);
    if !varentropy {
        stats.varentropy_nats2 = f64::NAN;
    }
    FinalStats {
        stats,
        sum: s,
        kept,
    }
}

/// Inverse-CDF draw over softmax(logits) in the given order with u in [0,1): the first position
/// whose running weight exceeds u·S; returns (position, its unnormalised weight). The walk skips
/// whole blocks by their sums (`blocks`, from [`final_stats`]) and evaluates exp only inside the
/// block where the running sum crosses u·S. Tokens with zero weight are never chosen; when
/// rounding leaves u·S at or beyond the last weight, the last token with weight is drawn.
pub fn draw_from_logits(logits: &[f32], fin: &FinalStats, blocks: &[f64], u: f64) -> (usize, f64) {
    draw_scaled(logits, None, fin, blocks, u)
}

/// [`draw_from_logits`] over the logits times `pre` (see [`final_stats_scaled`]).
pub fn draw_scaled(
    logits: &[f32],
    pre: Option<f32>,
    fin: &FinalStats,
    blocks: &[f64],
    u: f64,
) -> (usize, f64) {
    let m = fin.stats.max_logit;
    let target = u * fin.sum;
    let f = pre.unwrap_or(1.0);
    let weight = |i: usize| exp_nonpos(logits[i] * f - m) as f64;
    let last_in = |b: usize| {
        let range = b * BLOCK..((b + 1) * BLOCK).min(logits.len());
        range.rev().map(|i| (i, weight(i))).find(|&(_, e)| e > 0.0)
    };
    let mut run = 0.0;
    let mut last_block = None;
    for (b, &bs) in blocks.iter().enumerate() {
        if bs <= 0.0 {
            continue;
        }
        if run + bs > target {
            let mut r = run;
            for i in b * BLOCK..((b + 1) * BLOCK).min(logits.len()) {
                let e = weight(i);
                if e > 0.0 {
                    r += e;
                    if r > target {
                        return (i, e);
                    }
                }
            }
            // the block's lane-split sum crossed u·S, the sequential one fell short by rounding
            return last_in(b).expect("a block with weight holds a token with weight");
        }
        run += bs;
        last_block = Some(b);
    }
    last_block.and_then(last_in).unwrap_or((0, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::kernels::test_rows::big_row;

    #[test]
    fn draw_never_picks_zero_weight() {
        let l = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        let mut blocks = Vec::new();
        let fin = final_stats(&l, &mut blocks);
        assert_eq!(fin.kept, 2);
        assert_eq!(draw_from_logits(&l, &fin, &blocks, 0.0).0, 1);
        assert_eq!(draw_from_logits(&l, &fin, &blocks, 0.49).0, 1);
        assert_eq!(draw_from_logits(&l, &fin, &blocks, 0.51).0, 3);
        assert_eq!(draw_from_logits(&l, &fin, &blocks, 0.999999).0, 3);
    }

    #[test]
    fn block_draw_matches_the_sequential_inverse_cdf() {
        let l = big_row(5_000);
        let mut blocks = Vec::new();
        let fin = final_stats(&l, &mut blocks);
        assert_eq!(blocks.len(), 5_000usize.div_ceil(BLOCK));
        let m = fin.stats.max_logit;
        for k in 0..500 {
            let u = (k as f64 + 0.5) / 500.0;
            // reference: walk every token in order
            let target = u * fin.sum;
            let mut run = 0.0;
            let mut want = None;
            for (i, &x) in l.iter().enumerate() {
                let e = exp_nonpos(x - m) as f64;
                if e > 0.0 {
                    run += e;
                    if run > target {
                        want = Some(i);
                        break;
                    }
                }
            }
            let got = draw_from_logits(&l, &fin, &blocks, u).0;
            assert_eq!(Some(got), want, "u = {u}");
        }
        // u·S beyond the total by rounding: the last token with weight
        let last = l.iter().rposition(|&x| x > f32::NEG_INFINITY).unwrap();
        let beyond = FinalStats {
            sum: fin.sum * 2.0,
            ..fin
        };
        assert_eq!(draw_from_logits(&l, &beyond, &blocks, 0.75).0, last);
    }
}
