//! Shared numeric kernels for the strategies: candidate sets, softmax, entropy, selection
//! and the categorical draw. Vocabulary-sized buffers are reused across steps, nothing sorts the
//! whole vocabulary, and a step reads the logits in as few passes as the strategy allows: one
//! read that checks them, records each 256-logit block's maximum, copies them into the candidate
//! set and sums the exp moments behind entropy and varentropy ([`Candidates::check_and_fill`]);
//! then selective filters that skip whole blocks by their maxima and 64-logit chunks with one
//! vectorised compare; then one exp pass over what is left for the draw. Rows of 64k logits or
//! more are summed as two fixed halves, on two threads of the worker pool ([`crate::pool`]; the result does
//! not depend on the thread count).
//!
//! Probabilities are accumulated in f64 from f32 logits; this is where declab deliberately
//! differs from Hugging Face (which sums in f32): the kept sets can differ only when a
//! cumulative mass lands within f32 rounding of a threshold.
//!
//! The full-vocabulary passes are compiled three times (portable SSE2, AVX2, AVX-512) and picked
//! at run time ([`Isa::detected`]), so one binary runs everywhere and uses the widest vectors the
//! CPU has. The loops fix their own lane split and accumulation order and never contract
//! multiply-add, so every ISA gives bit-identical results (tested): a sample never depends on
//! the machine's vector width.
//!
//! Where things are (a processor author needs only the first line and `select`):
//! * `candidates`: [`Candidates`], the set a processor reads, shrinks, rescales and draws from;
//! * `select`: ranking without a full sort ([`widen_head`], [`top_k_positions`],
//!   [`visit_in_key_order`], [`kth_largest`]);
//! * `moments`: [`DistStats`], entropy and varentropy from the exp moments ([`dist_stats`],
//!   [`entropy_at_temperature`], [`scaled_moments`], [`finite_moments`]);
//! * `draw`: the final pass ([`FinalStats`]) and the inverse-CDF draw;
//! * `scan`: read-only passes (maximum, boundary check, threshold scans, [`f32_at_least`]);
//! * `compact`: shrinking the set in place;
//! * `one_read`: the check, copy and moments of a row in one read;
//! * `exp`: the exp approximation every pass shares ([`exp_nonpos`]);
//! * `isa`: run-time ISA detection and the per-ISA compilation macro.
//!
//! This file keeps what every pass agrees on: the block size and where long rows are halved.

mod candidates;
mod compact;
mod draw;
mod exp;
mod isa;
mod moments;
mod one_read;
mod scan;
mod select;

pub use candidates::Candidates;
pub use draw::{draw_from_logits, draw_scaled, final_stats, final_stats_scaled, FinalStats};
pub use exp::{exp2_nonpos, exp_nonpos};
pub use isa::Isa;
pub use moments::{
    dist_stats, entropy_at_temperature, finite_moments, finite_moments_at, scaled_moments,
    softmax_into, DistStats,
};
pub use one_read::finite_sum_pass;
pub use scan::{check_and_max, f32_at_least, max_finite, max_finite_at};
pub use select::{kth_largest, top_k_positions, visit_in_key_order, widen_head};

/// Logits per block: the moment passes flush their f32 lane sums into f64 once per block, the
/// one-read pass records each block's maximum, and the filters skip whole blocks by it.
pub const BLOCK: usize = 256;

/// Vocabularies at least this long are summed as two halves (split at a block boundary) on two
/// threads: the sums are always formed half by half, whatever the threads, so results do not
/// depend on how many cores run them.
const SPLIT_MIN: usize = 1 << 16;

/// Where a row is cut into two fixed halves (at a block boundary), or 0 for rows too short to
/// split: the sums are always formed half by half, whatever the threads.
fn split_point(n: usize) -> usize {
    if n >= SPLIT_MIN {
        (n / BLOCK / 2) * BLOCK
    } else {
        0
    }
}

/// Blocks to read before a filter's scan or compaction is worth two threads: 16k logits,
/// against the few microseconds a join costs.
const PAR_BLOCKS: usize = 64;

/// Where to cut a row of `n` for two threads that each read only the blocks whose maximum is
/// not below `c` (the others are skipped): at the block boundary where half of those blocks lie
/// on each side, so the threads get the same work wherever in the vocabulary the high logits
/// fall (a cut at the middle left one thread with three quarters of top-p's scan on Gemma 3's
/// rows). `None`, for one thread, on a row too short to split, without every block's maximum,
/// or with fewer than [`PAR_BLOCKS`] blocks to read. Only the work's division depends on it:
/// the outputs are concatenated in order.
fn balanced_split(n: usize, block_max: &[f32], c: f32) -> Option<usize> {
    if split_point(n) == 0 || block_max.len() != n.div_ceil(BLOCK) {
        return None;
    }
    // a block is read unless its maximum is below c (the filters' skip rule; a NaN is read)
    let read = |m: &f32| m.partial_cmp(&c) != Some(std::cmp::Ordering::Less);
    let total = block_max.iter().filter(|m| read(m)).count();
    if total < PAR_BLOCKS {
        return None;
    }
    let (b, _) = block_max
        .iter()
        .enumerate()
        .filter(|(_, m)| read(m))
        .nth(total / 2 - 1)?;
    let split = (b + 1) * BLOCK;
    (split < n).then_some(split)
}

#[cfg(test)]
mod test_rows {
    /// A vocabulary-sized row with the shape of real logits: a few high, a long tail, masks.
    pub fn big_row(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = ((i as u64).wrapping_mul(2_654_435_761) % 100_003) as f32 / 100_003.0;
                match i % 997 {
                    0 => f32::NEG_INFINITY,
                    1 => 18.0 + 4.0 * x,
                    _ => -12.0 + 24.0 * x * x * x,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cut falls where half of the blocks to read lie on each side, wherever they are; a
    /// short row, unknown maxima or few blocks to read give one part.
    #[test]
    fn balanced_split_halves_the_blocks_to_read() {
        let n = SPLIT_MIN * 4 + 100; // 1025 blocks, the last one short
        let blocks = n.div_ceil(BLOCK);
        // the blocks to read are the last 200 (ids at the end of the vocabulary)
        let bm: Vec<f32> = (0..blocks)
            .map(|b| if b >= blocks - 200 { 5.0 } else { -1.0 })
            .collect();
        let split = balanced_split(n, &bm, 0.0).unwrap();
        assert_eq!(split, (blocks - 100) * BLOCK);
        let before = bm[..split / BLOCK].iter().filter(|&&m| m >= 0.0).count();
        assert_eq!(before, 100);
        // an odd count: the first part holds the smaller half
        let mut odd = bm.clone();
        odd[3] = 5.0;
        let split = balanced_split(n, &odd, 0.0).unwrap();
        assert_eq!(
            odd[..split / BLOCK].iter().filter(|&&m| m >= 0.0).count(),
            100
        );
        // every block read: the middle
        let all = vec![1.0f32; blocks];
        assert_eq!(balanced_split(n, &all, 0.0), Some(blocks / 2 * BLOCK));
        // NaN maxima are read (the filters skip only blocks known to be below the cut)
        let mut nan = vec![f32::NAN; blocks];
        nan[0] = -1.0;
        assert!(balanced_split(n, &nan, 0.0).is_some());
        // one part: too few blocks to read, maxima unknown or partial, a short row
        let few: Vec<f32> = (0..blocks)
            .map(|b| if b < PAR_BLOCKS - 1 { 5.0 } else { -1.0 })
            .collect();
        assert_eq!(balanced_split(n, &few, 0.0), None);
        assert_eq!(balanced_split(n, &[], 0.0), None);
        assert_eq!(balanced_split(n, &all[..blocks - 1], 0.0), None);
        let short = SPLIT_MIN - 1;
        assert_eq!(
            balanced_split(short, &vec![1.0; short.div_ceil(BLOCK)], 0.0),
            None
        );
    }
}
