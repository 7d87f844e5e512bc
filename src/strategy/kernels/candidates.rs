//! [`Candidates`], the API a processor works with: the tokens still in play at one step and what
//! a processor may do with them: read them, shrink them (`retain_*`, `keep_*`), rank them
//! (`kth_largest`, `largest_values`, `positions_at_least`), rescale them (`scale`), and ask for
//! their statistics (`stats`, `final_stats`) or a draw. The methods keep the cached statistics
//! and the blocks' maxima honest; the passes they run live in the sibling files, so this file
//! holds no SIMD.

use super::compact::{retain_ge_dispatch, retain_where_dispatch, Target};
use super::draw::{draw_scaled, final_pass, FinalStats};
use super::moments::{dist_stats, stats_from_moments, DistStats};
use super::one_read::fused_stats;
use super::scan::{
    check_scanned, f32_at_least, first_position_of, max_finite, positions_f32, scale_in_place,
    scale_into, values_f32,
};
use super::select::kth_largest_blocks;
use super::{split_point, BLOCK};
use crate::strategy::SampleError;

/// The candidate tokens still in play at one step, as parallel arrays (token id, logit).
///
/// Processors shrink or rescale this set; `sorted_by_id` records whether `ids` is ascending,
/// which the draw relies on so that a sample never depends on the order a selection
/// algorithm left the candidates in. Processors change the set through the methods below, which
/// keep the cached [`DistStats`] of the set honest (a direct write must call [`Self::touch`]).
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub ids: Vec<u32>,
    /// Read through [`Self::logits`]; a pending temperature is not yet multiplied in.
    logits: Vec<f32>,
    pub sorted_by_id: bool,
    /// A temperature's 1/T not yet multiplied into `logits`: the set's values are
    /// `logits[i] * pending` (f32, rounded as [`Self::scale`] would round them). Only the final
    /// statistics and the draw read a pending scale (folded into their one exp pass, so a
    /// temperature at the end of a chain costs no pass of its own); everything else sees the
    /// scale applied first ([`Self::settle`]).
    pending: Option<f32>,
    stats: Option<DistStats>,
    /// The final statistics of the set (with `draw_blocks`), cached until the set changes.
    fin: Option<FinalStats>,
    /// Per-[`BLOCK`] sums of the final weights, for [`Self::draw`].
    draw_blocks: Vec<f64>,
    /// `ids` is the identity 0..len (the full vocabulary, as `fill` left it).
    full: bool,
    /// A second id buffer: while `spare_is_identity`, it holds 0..len, so shrinking the full set
    /// writes the kept ids here and swaps, and the next `fill` swaps back instead of rewriting
    /// a vocabulary of ids (1 MiB at 262k) every step.
    spare: Vec<u32>,
    spare_is_identity: bool,
    /// The largest logit of each [`BLOCK`] of `logits`, valid while `full && block_max_valid`
    /// (recorded by the check pass; scaled along with the logits): filters skip whole blocks.
    block_max: Vec<f32>,
    block_max_valid: bool,
    /// Σ and count of the finite logits of the row [`Self::check_and_fill`] last read.
    row_sum: (f64, usize),
    /// While set, the set's values are this row (pointer, length), read where the caller holds
    /// it instead of copied into `logits` ([`Self::check_and_view`]); the first change of the set
    /// writes its result into `logits` (compactions read the row and write only the kept values)
    /// and ends the view. The row is never written.
    view: Option<(std::ptr::NonNull<f32>, usize)>,
    /// Since the last read of a row: a change rewrote every value of the whole row (a
    /// temperature applied before a filter, an in-place rewrite). For such a step a copy made
    /// during the read is cheaper than reading the row in place and writing it afterwards
    /// ([`Self::rewrote_row`]).
    rewrote: bool,
}

impl Candidates {
    // Filling the set at the start of a step.

    /// Reset to the full vocabulary, reusing the buffers.
    pub fn fill(&mut self, logits: &[f32]) {
        self.view = None;
        self.block_max_valid = false;
        self.identity_ids(logits.len());
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        self.sorted_by_id = true;
        self.pending = None;
        self.changed();
    }

    /// Check `logits` (see [`check_and_max`](super::check_and_max)), fill the set with them
    /// and return their statistics: one read that checks, copies, records the blocks' maxima and
    /// sums the exp moments.
    pub fn check_and_fill(&mut self, logits: &[f32]) -> Result<DistStats, SampleError> {
        self.view = None;
        self.read_row(logits, true)
    }

    /// [`Self::check_and_fill`] without the copy: the set reads `logits` where they are until a
    /// processor changes the set (see `view`), which spares writing a row (1 MiB at 262k) for
    /// strategies that only read it (greedy, temperature) and copies only the kept values for the
    /// filters.
    ///
    /// # Safety
    /// `logits` must stay alive and unchanged until [`Self::end_view`] or the next fill; the set
    /// must not be read in between otherwise (the step that reads the row ends the view before
    /// it returns).
    pub(crate) unsafe fn check_and_view(
        &mut self,
        logits: &[f32],
    ) -> Result<DistStats, SampleError> {
        let r = self.read_row(logits, false);
        self.view = std::ptr::NonNull::new(logits.as_ptr() as *mut f32).map(|p| (p, logits.len()));
        if r.is_err() {
            self.view = None;
        }
        r
    }

    /// Forget a row read in place ([`Self::check_and_view`]); the set is then empty.
    pub(crate) fn end_view(&mut self) {
        if self.view.take().is_some() {
            // the identity ids go to the spare buffer, for the next fill to take back
            self.park_identity();
            self.logits.clear();
            self.ids.clear();
            self.changed();
        }
    }

    /// Whether a change since the last row read rewrote every value of the whole row (see
    /// `rewrote`): the sampler then copies the next row as it reads it.
    pub(crate) fn rewrote_row(&self) -> bool {
        self.rewrote
    }

    fn read_row(&mut self, logits: &[f32], copy: bool) -> Result<DistStats, SampleError> {
        self.rewrote = false;
        if logits.is_empty() {
            return Err(SampleError::Empty);
        }
        self.block_max_valid = false;
        self.identity_ids(logits.len());
        self.pending = None;
        self.changed();
        let o = fused_stats(
            logits,
            &mut self.block_max,
            if copy { Some(&mut self.logits) } else { None },
        );
        // a bad row: find the culprit (the error names it) with a plain scan
        let max = check_scanned(logits, (o.m, o.bad))?;
        let ln2 = std::f64::consts::LN_2;
        let (s, s1, s2) = o.totals();
        let stats = stats_from_moments(max, s, s1 * ln2, s2 * ln2 * ln2);
        self.row_sum = o.fsum.total();
        self.sorted_by_id = true;
        self.stats = Some(stats);
        self.block_max_valid = true;
        Ok(stats)
    }

    /// Mean of the finite logits of the row [`Self::check_and_fill`] last read, and how many
    /// there were (summed in the same read).
    pub fn row_mean_logit(&self) -> (f64, usize) {
        let (s, n) = self.row_sum;
        (s / n.max(1) as f64, n)
    }

    // Reading the set. Readers of the values need a settled set (see `settle`); `stats` and
    // `parts_mut` settle it themselves.

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The candidates' logits. The set must be settled (no pending temperature): processors
    /// start on a settled set, and one that scales and then reads calls [`Self::settle`].
    pub fn logits(&self) -> &[f32] {
        self.assert_settled();
        self.vals()
    }

    /// Ids and logits for a processor that rewrites logits in place (it calls [`Self::touch`]).
    pub fn parts_mut(&mut self) -> (&[u32], &mut [f32]) {
        self.settle();
        self.rewrote |= self.full;
        self.own();
        (&self.ids, &mut self.logits)
    }

    /// Forget what is cached about the set after writing `ids` or `logits` directly.
    pub fn touch(&mut self) {
        self.changed();
        self.full = false;
    }

    pub fn max_logit(&self) -> f32 {
        self.assert_settled();
        match self.known_block_max() {
            [] => max_finite(self.vals()),
            bm => max_finite(bm),
        }
    }

    /// Position of the largest logit; the lowest token id wins ties. A vectorised max pass,
    /// then a scan for the first position holding it (ids ascending) or the lowest id among
    /// the positions holding it (unsorted).
    pub fn argmax_position(&self) -> Option<usize> {
        let m = self.max_logit();
        if m == f32::NEG_INFINITY {
            return None;
        }
        let bm = self.known_block_max();
        if !bm.is_empty() {
            // the first block holding the maximum, then the first position in it
            let b = bm.iter().position(|&x| x == m)?;
            let start = b * BLOCK;
            let end = (start + BLOCK).min(self.vals().len());
            return first_position_of(&self.vals()[start..end], m).map(|i| start + i);
        }
        if self.sorted_by_id {
            return first_position_of(self.vals(), m);
        }
        self.vals()
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == m)
            .min_by_key(|(i, _)| self.ids[*i])
            .map(|(i, _)| i)
    }

    /// Positions of the candidates with logit >= `cut` (compared in f64, exactly).
    pub fn positions_at_least(&self, cut: f64, out: &mut Vec<usize>) {
        self.assert_settled();
        positions_f32(self.vals(), f32_at_least(cut), out, self.known_block_max())
    }

    /// The logits >= `cut` (compared in f64, exactly), in order, into `out`.
    pub fn values_at_least(&self, cut: f64, out: &mut Vec<f32>) {
        self.assert_settled();
        values_f32(self.vals(), f32_at_least(cut), out, self.known_block_max())
    }

    /// The k-th largest logit of the set (1 <= k <= len); `vals` is scratch.
    pub fn kth_largest(&self, k: usize, vals: &mut Vec<f32>) -> f32 {
        self.assert_settled();
        kth_largest_blocks(self.vals(), k, vals, self.known_block_max())
    }

    /// The k largest logits of the set (k <= len), in descending order, into `out`.
    pub fn largest_values(&self, k: usize, out: &mut Vec<f32>) {
        self.assert_settled();
        kth_largest_blocks(self.vals(), k, out, self.known_block_max());
        out.truncate(k);
        out.sort_unstable_by(|a, b| b.total_cmp(a));
    }

    /// Entropy, varentropy and log Z of the current set (cached until the set changes).
    pub fn stats(&mut self) -> DistStats {
        self.settle();
        match self.stats {
            Some(s) => s,
            None => {
                let s = dist_stats(self.vals());
                self.stats = Some(s);
                s
            }
        }
    }

    // Shrinking and reordering the set.

    /// Keep the candidates for which `keep(index, logit)` is true, preserving their order.
    pub fn retain(&mut self, mut keep: impl FnMut(usize, f32) -> bool) {
        self.settle();
        self.rewrote |= self.full;
        self.own();
        let mut w = 0;
        for r in 0..self.ids.len() {
            let l = self.logits[r];
            if keep(r, l) {
                self.ids[w] = self.ids[r];
                self.logits[w] = l;
                w += 1;
            }
        }
        self.ids.truncate(w);
        self.logits.truncate(w);
        self.changed();
        self.full = false;
    }

    /// Keep the candidates with `l >= lower && keep(l)`, preserving their order. `lower` must be
    /// a bound below which `keep` is false anyway: blocks of 64 logits that are all below it are
    /// skipped with one vectorised compare, so a selective filter costs about one read of the
    /// logits instead of a call per token. `keep` must be a pure function of the logit: a long
    /// row is compacted as two parts on two threads (a filter that counts what it kept belongs
    /// in [`Self::retain`]).
    pub fn retain_where(&mut self, lower: f32, keep: impl Fn(f32) -> bool + Sync) {
        self.compact(|ids, identity, logits, bm| {
            retain_where_dispatch(ids, identity, logits, lower, keep, bm)
        });
    }

    /// Keep the candidates whose logit, widened to f64, is >= `cut` (exactly).
    pub fn retain_at_least(&mut self, cut: f64) {
        self.retain_ge(f32_at_least(cut));
    }

    /// Keep candidates whose logit is >= `threshold`, and drop `-inf` ones.
    pub fn retain_logit_at_least(&mut self, threshold: f32) {
        // l > -inf is l >= -f32::MAX (NaN was rejected at the boundary)
        self.retain_ge(threshold.max(-f32::MAX));
    }

    /// Keep the candidates with `l >= c`, preserving their order: the pure-threshold form of
    /// [`Self::retain_where`], vectorised where the CPU compresses (AVX-512).
    pub fn retain_ge(&mut self, c: f32) {
        self.compact(|ids, identity, logits, bm| retain_ge_dispatch(ids, identity, logits, c, bm));
    }

    /// Shrink to the single candidate at `pos`.
    pub fn keep_one(&mut self, pos: usize) {
        self.settle();
        let (id, l) = (self.ids[pos], self.vals()[pos]);
        self.view = None;
        self.park_identity();
        self.ids.clear();
        self.logits.clear();
        self.ids.push(id);
        self.logits.push(l);
        self.sorted_by_id = true;
        self.changed();
    }

    /// Keep exactly the candidates at the given positions (any order); leaves the set unsorted.
    pub fn keep_positions(
        &mut self,
        positions: &[usize],
        scratch_ids: &mut Vec<u32>,
        scratch_logits: &mut Vec<f32>,
    ) {
        self.settle();
        scratch_ids.clear();
        scratch_logits.clear();
        let vals = self.vals();
        for &p in positions {
            scratch_ids.push(self.ids[p]);
            scratch_logits.push(vals[p]);
        }
        self.view = None;
        self.park_identity();
        // copied back rather than swapped: the set keeps its vocabulary-sized buffers (a swap
        // left them with the caller's scratch, and the next row read into this thread's set
        // allocated and faulted in a new one)
        self.ids.clear();
        self.ids.extend_from_slice(scratch_ids);
        self.logits.clear();
        self.logits.extend_from_slice(scratch_logits);
        self.sorted_by_id = false;
        self.changed();
    }

    /// Sort by token id (cheap when the set is small; a no-op when already sorted).
    pub fn sort_by_id(&mut self) {
        if self.sorted_by_id {
            return;
        }
        self.settle();
        self.own();
        let mut pairs: Vec<(u32, f32)> = self
            .ids
            .iter()
            .copied()
            .zip(self.logits.iter().copied())
            .collect();
        pairs.sort_unstable_by_key(|p| p.0);
        for (i, (id, l)) in pairs.into_iter().enumerate() {
            self.ids[i] = id;
            self.logits[i] = l;
        }
        self.sorted_by_id = true;
        self.changed();
    }

    // Temperature: deferred until something reads the values.

    /// Divide the logits by a temperature (`inv_temperature` = 1/T). Deferred: the product is
    /// formed by the next reader, or inside the final pass when nothing reads before it.
    pub fn scale(&mut self, inv_temperature: f32) {
        self.settle();
        self.pending = Some(inv_temperature);
        self.changed();
    }

    /// Try another temperature: replace a pending scale (or set one on a settled set) without
    /// applying it, e.g. to evaluate [`Self::final_stats`] at several temperatures, each pass
    /// reading the unscaled logits. Only valid while the scale being replaced is still pending
    /// (nothing settled the set since it was set); setting the same scale again keeps the cache.
    pub fn set_pending_scale(&mut self, inv_temperature: f32) {
        if self.pending != Some(inv_temperature) {
            self.pending = Some(inv_temperature);
            self.changed();
        }
    }

    /// Multiply a pending temperature into the logits (a no-op when none is pending). The
    /// values are those the final pass would have used, so the cached statistics stay valid.
    pub fn settle(&mut self) {
        let Some(f) = self.pending.take() else {
            return;
        };
        self.rewrote |= self.full;
        // long rows in two fixed halves on the pool (element-wise: same result either way)
        if let Some((p, n)) = self.view.take() {
            // a row read in place: its scaled values written into `logits` (one pass, as in
            // place)
            // SAFETY: the row outlives the view (`check_and_view`'s contract)
            let src = unsafe { view_row(p, n) };
            self.logits.clear();
            self.logits.reserve(n);
            let dst = &mut self.logits.spare_capacity_mut()[..n];
            let split = split_point(n);
            if split == 0 {
                scale_into(src, dst, f);
            } else {
                let (sa, sb) = src.split_at(split);
                let (da, db) = dst.split_at_mut(split);
                crate::pool::join(|| scale_into(sa, da, f), || scale_into(sb, db, f));
            }
            // SAFETY: every element of the first n was written above
            unsafe { self.logits.set_len(n) };
        } else {
            let split = split_point(self.logits.len());
            if split == 0 {
                scale_in_place(&mut self.logits, f);
            } else {
                let (a, b) = self.logits.split_at_mut(split);
                crate::pool::join(|| scale_in_place(a, f), || scale_in_place(b, f));
            }
        }
        if self.block_max_valid && f > 0.0 {
            // x -> x·f is monotone for f > 0 (rounding included), so block maxima follow
            scale_in_place(&mut self.block_max, f);
        } else {
            self.block_max_valid = false;
        }
    }

    // The final distribution and the draw.

    /// Statistics of the final (sampled-from) distribution over the set, with the per-block
    /// sums [`Self::draw`] walks: one exp pass (with a pending temperature folded in), cached
    /// until the set changes. The set must be in id order for the draw (`sort_by_id`).
    pub fn final_stats(&mut self) -> FinalStats {
        self.final_pass(true)
    }

    /// [`Self::final_stats`] as the draw needs them: the varentropy may be missing (NaN), which
    /// spares the pass a product per logit; statistics cached by either are reused.
    pub fn draw_stats(&mut self) -> FinalStats {
        self.final_pass(false)
    }

    fn final_pass(&mut self, varentropy: bool) -> FinalStats {
        if let Some(f) = self.fin {
            // the draw's pass leaves the varentropy NaN; a full pass never does (clamped at 0)
            if !(varentropy && f.stats.varentropy_nats2.is_nan()) {
                return f;
            }
        }
        // the maximum of the scaled set is the scaled maximum (x -> x·f is monotone for f > 0)
        let raw_max = match self.known_block_max() {
            [] => max_finite(self.vals()),
            bm => max_finite(bm),
        };
        let f = match self.pending {
            Some(f) if f > 0.0 => Some(f),
            Some(_) => {
                self.settle();
                return self.final_pass(varentropy);
            }
            None => None,
        };
        let m = f.map_or(raw_max, |f| raw_max * f);
        let vals = Self::vals_in(self.view, &self.logits);
        let fin = final_pass(vals, f, m, &mut self.draw_blocks, varentropy);
        self.fin = Some(fin);
        fin
    }

    /// Draw a position with u in [0,1) (see [`draw_from_logits`](super::draw_from_logits)); returns it and its
    /// unnormalised weight.
    pub fn draw(&mut self, u: f64) -> (usize, f64) {
        let fin = self.draw_stats();
        draw_scaled(self.vals(), self.pending, &fin, &self.draw_blocks, u)
    }
}

/// Bookkeeping behind the API: the spare id buffer, the caches and the blocks' maxima.
impl Candidates {
    /// Make `ids` the identity 0..n, reusing whichever buffer already is.
    fn identity_ids(&mut self, n: usize) {
        if self.full && self.ids.len() == n {
            return;
        }
        if self.spare_is_identity && self.spare.len() == n {
            std::mem::swap(&mut self.ids, &mut self.spare);
            self.spare_is_identity = false;
        } else {
            self.ids.clear();
            self.ids.extend(0..n as u32);
        }
        self.full = true;
    }

    /// Before shrinking: if `ids` is the identity, park it in the spare buffer and hand back an
    /// empty buffer for the kept ids (true); otherwise leave `ids` to be compacted in place.
    fn park_identity(&mut self) -> bool {
        if !self.full {
            return false;
        }
        std::mem::swap(&mut self.ids, &mut self.spare);
        self.spare_is_identity = true;
        self.ids.clear();
        self.full = false;
        true
    }

    /// Forget the cached statistics (the set's values or order changed).
    fn changed(&mut self) {
        self.stats = None;
        self.fin = None;
    }

    #[inline]
    #[track_caller]
    fn assert_settled(&self) {
        assert!(
            self.pending.is_none(),
            "candidates read with a pending temperature: call settle() first"
        );
    }

    /// The blocks' maxima when known (see `block_max`), else `&[]`.
    pub(super) fn known_block_max(&self) -> &[f32] {
        if self.full && self.block_max_valid {
            &self.block_max
        } else {
            &[]
        }
    }

    /// Shrink the set with `filter(ids, identity, logits, block_max) -> kept`, which compacts
    /// the kept candidates to the front in order (see [`retain_where_dispatch`]).
    fn compact(&mut self, filter: impl FnOnce(&mut Vec<u32>, bool, Target<'_>, &[f32]) -> usize) {
        self.settle();
        let bm = std::mem::take(&mut self.block_max);
        let valid = self.full && self.block_max_valid;
        let identity = self.park_identity();
        let view = self.view.take();
        let target = match view {
            // SAFETY: the row outlives the view (`check_and_view`'s contract)
            Some((p, n)) => Target::Into {
                src: unsafe { view_row(p, n) },
                dst: &mut self.logits,
            },
            None => Target::InPlace(&mut self.logits),
        };
        let w = filter(
            &mut self.ids,
            identity,
            target,
            if valid { &bm } else { &[] },
        );
        self.block_max = bm;
        self.block_max_valid = false;
        self.ids.truncate(w);
        self.logits.truncate(w);
        self.changed();
    }

    /// The set's values: the row read in place while the view lasts, else `logits`.
    #[inline]
    fn vals(&self) -> &[f32] {
        Self::vals_in(self.view, &self.logits)
    }

    /// [`Self::vals`] from the two fields (so that another field can be borrowed beside it).
    #[inline]
    fn vals_in(view: Option<(std::ptr::NonNull<f32>, usize)>, logits: &[f32]) -> &[f32] {
        match view {
            // SAFETY: the row outlives the view (`check_and_view`'s contract)
            Some((p, n)) => unsafe { view_row(p, n) },
            None => logits,
        }
    }

    /// End the view by copying the row into `logits`, for a change made in place.
    fn own(&mut self) {
        if let Some((p, n)) = self.view.take() {
            // SAFETY: the row outlives the view (`check_and_view`'s contract)
            let row = unsafe { view_row(p, n) };
            self.logits.clear();
            self.logits.extend_from_slice(row);
        }
    }
}

/// The row a view reads (see `Candidates::view`).
///
/// # Safety
/// `(p, n)` is a live view: the row outlives it (`Candidates::check_and_view`'s contract).
unsafe fn view_row<'a>(p: std::ptr::NonNull<f32>, n: usize) -> &'a [f32] {
    unsafe { std::slice::from_raw_parts(p.as_ptr(), n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::kernels::draw::{draw_from_logits, final_stats};
    use crate::strategy::kernels::test_rows::big_row;
    use crate::strategy::kernels::SPLIT_MIN;

    /// The draw's pass (no varentropy) gives the sum, entropy and blocks of the full pass, bit
    /// for bit; a full pass is computed when only the draw's is cached, and reused by the draw.
    #[test]
    fn the_draws_final_pass_is_the_full_one_without_varentropy() {
        for n in [3_001, SPLIT_MIN + 1000] {
            let l = big_row(n);
            let mut c = Candidates::default();
            c.check_and_fill(&l).unwrap();
            c.scale(1.0 / 0.7);
            let lean = c.draw_stats();
            let lean_blocks = c.draw_blocks.clone();
            assert!(lean.stats.varentropy_nats2.is_nan());
            let full = c.final_stats();
            assert!(full.stats.varentropy_nats2.is_finite());
            let key = |f: &FinalStats| {
                (
                    f.sum.to_bits(),
                    f.stats.entropy_nats.to_bits(),
                    f.stats.log_z.to_bits(),
                    f.kept,
                )
            };
            assert_eq!(key(&lean), key(&full), "n {n}");
            assert_eq!(lean_blocks, c.draw_blocks);
            // the draw reuses the full pass
            let again = c.draw_stats();
            assert_eq!(again.stats.varentropy_nats2, full.stats.varentropy_nats2);
        }
    }

    /// A temperature left pending and folded into the final pass gives, bit for bit, the
    /// statistics and draws of the logits scaled first, on rows short and long (halves).
    #[test]
    fn a_pending_temperature_equals_scaling_first() {
        for n in [3_001, SPLIT_MIN + 1000] {
            let l = big_row(n);
            for inv in [1.0f32 / 0.7, 0.5, 1.0] {
                let (mut lazy, mut eager) = (Candidates::default(), Candidates::default());
                lazy.check_and_fill(&l).unwrap();
                eager.check_and_fill(&l).unwrap();
                lazy.scale(inv);
                eager.scale(inv);
                eager.settle();
                assert!(lazy.pending.is_some() && eager.pending.is_none());
                let (a, b) = (lazy.final_stats(), eager.final_stats());
                assert_eq!(
                    (a.sum.to_bits(), a.kept, a.stats.max_logit.to_bits()),
                    (b.sum.to_bits(), b.kept, b.stats.max_logit.to_bits()),
                    "n {n}, 1/T {inv}"
                );
                assert_eq!(
                    a.stats.entropy_nats.to_bits(),
                    b.stats.entropy_nats.to_bits()
                );
                assert_eq!(lazy.draw_blocks, eager.draw_blocks);
                for u in [0.0, 0.25, 0.5, 0.9, 0.999_999] {
                    assert_eq!(lazy.draw(u), eager.draw(u), "n {n}, 1/T {inv}, u {u}");
                }
                // settling afterwards leaves the cached statistics valid and equal
                lazy.settle();
                assert_eq!(lazy.logits(), eager.logits());
                assert_eq!(lazy.final_stats().sum.to_bits(), b.sum.to_bits());
            }
        }
    }

    #[test]
    fn long_rows_split_in_halves_keep_blocks_copy_and_draw_consistent() {
        let l = big_row(SPLIT_MIN + 1000);
        let mut c = Candidates::default();
        let st = c.check_and_fill(&l).unwrap();
        assert!(c
            .logits
            .iter()
            .zip(&l)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_eq!(c.ids.len(), l.len());
        let mut blocks = Vec::new();
        let fin = final_stats(&l, &mut blocks);
        assert_eq!(blocks.len(), l.len().div_ceil(BLOCK));
        assert!((blocks.iter().sum::<f64>() / fin.sum - 1.0).abs() < 1e-12);
        // a plain f64 reference
        let m = fin.stats.max_logit as f64;
        let z: f64 = l.iter().map(|&x| (x as f64 - m).exp()).sum();
        let h: f64 = -l
            .iter()
            .map(|&x| (x as f64 - m).exp() / z)
            .filter(|&p| p > 0.0)
            .map(|p| p * p.ln())
            .sum::<f64>();
        assert!(
            (st.entropy_nats - h).abs() < 1e-5,
            "{} vs {h}",
            st.entropy_nats
        );
        for u in [0.0, 0.3, 0.7, 0.999_999] {
            let (i, _) = draw_from_logits(&l, &fin, &blocks, u);
            assert!(l[i] > f32::NEG_INFINITY);
        }
    }

    #[test]
    fn block_maxima_skip_only_what_cannot_pass() {
        let l = big_row(10_007);
        let mut c = Candidates::default();
        c.check_and_fill(&l).unwrap();
        assert_eq!(c.known_block_max().len(), l.len().div_ceil(BLOCK));
        let mut plain = Candidates::default();
        plain.fill(&l);
        assert!(plain.known_block_max().is_empty());
        let (mut va, mut vb) = (Vec::new(), Vec::new());
        for cut in [-11.0, 0.5, 18.5, 21.9] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            c.positions_at_least(cut, &mut a);
            plain.positions_at_least(cut, &mut b);
            assert_eq!(a, b, "cut {cut}");
        }
        for k in [1, 3, 40, 700] {
            assert_eq!(c.kth_largest(k, &mut va), plain.kth_largest(k, &mut vb));
        }
        assert_eq!(c.max_logit(), plain.max_logit());
        assert_eq!(c.argmax_position(), plain.argmax_position());
        // scaling keeps the maxima in step
        c.scale(0.5);
        plain.scale(0.5);
        c.settle();
        plain.settle();
        assert_eq!(c.argmax_position(), plain.argmax_position());
        c.retain_at_least(5.0);
        plain.retain_at_least(5.0);
        assert_eq!((&c.ids, &c.logits), (&plain.ids, &plain.logits));
        assert!(
            c.known_block_max().is_empty(),
            "a shrunk set has no block maxima"
        );
    }

    #[test]
    fn cached_stats_follow_changes() {
        let l = big_row(3_000);
        let mut c = Candidates::default();
        // the one-read check/copy/moments pass agrees with the two-pass one (to rounding: it
        // evaluates early blocks relative to a smaller running maximum)
        let fused = c.check_and_fill(&l).unwrap();
        assert_eq!(c.logits, l);
        let plain = dist_stats(&l);
        assert_eq!(fused.max_logit, plain.max_logit);
        assert!((fused.log_z - plain.log_z).abs() < 1e-6);
        assert!((fused.entropy_nats - plain.entropy_nats).abs() < 1e-6);
        assert!((fused.varentropy_nats2 - plain.varentropy_nats2).abs() < 1e-5);
        assert_eq!(c.stats(), fused);
        c.scale(0.5);
        assert_eq!(c.stats(), dist_stats(&c.logits.clone()));
        c.retain_at_least(0.0);
        assert_eq!(c.stats(), dist_stats(&c.logits.clone()));
    }

    /// A row read in place gives, bit for bit, the set a copied row gives after every kind of
    /// change (compaction from the row, a temperature applied, an in-place rewrite, keeping one
    /// or some positions, the final pass and the draw), and the row itself is never written.
    #[test]
    fn a_row_read_in_place_equals_a_copied_one() {
        let l = big_row(200_003); // long: the passes run as two halves
        let before = l.clone();
        type Op = fn(&mut Candidates);
        let ops: [(&str, Op); 7] = [
            ("nothing", |_| {}),
            ("retain_ge", |c| c.retain_logit_at_least(15.0)),
            ("retain_where", |c| c.retain_where(10.0, |x| x < 18.0)),
            ("scale, then filter", |c| {
                c.scale(1.0 / 0.8);
                c.retain_ge(20.0);
            }),
            ("pending scale", |c| c.scale(1.3)),
            ("keep_one", |c| {
                let p = c.argmax_position().unwrap();
                c.keep_one(p);
            }),
            ("rewrite in place", |c| {
                let (_, l) = c.parts_mut();
                l[7] = 30.0;
                c.touch();
            }),
        ];
        for (name, op) in ops {
            let (mut a, mut b) = (Candidates::default(), Candidates::default());
            let sa = a.check_and_fill(&l).unwrap();
            // SAFETY: `l` outlives the view, which ends below
            let sb = unsafe { b.check_and_view(&l) }.unwrap();
            assert_eq!(sa, sb, "{name}");
            op(&mut a);
            op(&mut b);
            let (fa, fb) = (a.final_stats(), b.final_stats());
            assert_eq!(fa.sum.to_bits(), fb.sum.to_bits(), "{name}");
            assert_eq!(a.draw(0.37), b.draw(0.37), "{name}");
            a.settle();
            b.settle();
            assert_eq!(a.ids, b.ids, "{name}");
            assert_eq!(
                a.logits().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.logits().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{name}"
            );
            assert_eq!(
                a.rewrote_row(),
                b.rewrote_row(),
                "{name}: the same memory policy either way"
            );
            b.end_view();
            // a view still open is dropped (the set empties); a set that owns its values stays
            assert_eq!(b.ids.len(), b.vals().len(), "{name}");
            assert!(
                l.iter()
                    .zip(&before)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}"
            );
        }
    }
}
