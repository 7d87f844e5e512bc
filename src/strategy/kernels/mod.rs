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

use std::cmp::Ordering;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// The instruction set a kernel runs with. Ordered: each level includes the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    /// The widest level this CPU supports, detected once. `DECLAB_SIMD=portable|avx2|avx512`
    /// lowers it (for comparisons); it can never raise it above what the CPU has.
    pub fn detected() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let cpu = Isa::cpu();
            match std::env::var("DECLAB_SIMD").ok().as_deref() {
                Some("portable") => Isa::Portable,
                Some("avx2") => cpu.min(Isa::Avx2),
                _ => cpu,
            }
        })
    }

    /// What the CPU supports (ignores `DECLAB_SIMD`).
    pub fn cpu() -> Isa {
        static CPU: OnceLock<Isa> = OnceLock::new();
        *CPU.get_or_init(Isa::probe)
    }

    fn probe() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every level this CPU can run, narrowest first.
    pub fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= Isa::cpu())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// Defines `$name(args)` (runs at [`Isa::detected`]) and `$at(isa, args)` (runs at `isa`, lowered
/// to what the CPU has) over an `#[inline(always)]` body `$imp`, compiled once per ISA.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident / $at:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty = $imp:path) => {
        $(#[$m])*
        #[inline]
        $vis fn $name($($arg: $ty),*) -> $ret {
            $at(Isa::detected(), $($arg),*)
        }

        #[allow(dead_code)]
        $vis fn $at(isa: Isa, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) -> $ret {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) -> $ret {
                    $imp($($arg),*)
                }
                match isa.min(Isa::cpu()) {
                    // SAFETY: the CPU supports the level (clamped to `Isa::cpu()` above)
                    Isa::Avx512 => return unsafe { v4($($arg),*) },
                    Isa::Avx2 => return unsafe { v3($($arg),*) },
                    Isa::Portable => {}
                }
            }
            let _ = isa;
            $imp($($arg),*)
        }
    };
}

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
}

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

    /// Reset to the full vocabulary, reusing the buffers.
    pub fn fill(&mut self, logits: &[f32]) {
        self.block_max_valid = false;
        self.identity_ids(logits.len());
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        self.sorted_by_id = true;
        self.pending = None;
        self.changed();
    }

    /// Check `logits` (see [`check_and_max`]), fill the set with them and return their
    /// statistics: one scan (which also records the blocks' maxima) and one exp pass.
    pub fn check_and_fill(&mut self, logits: &[f32]) -> Result<DistStats, super::SampleError> {
        if logits.is_empty() {
            return Err(super::SampleError::Empty);
        }
        self.block_max_valid = false;
        self.identity_ids(logits.len());
        self.pending = None;
        self.changed();
        let o = fused_stats_at(
            Isa::detected(),
            logits,
            &mut self.block_max,
            &mut self.logits,
        );
        // a bad row: find the culprit (the error names it) with a plain scan
        let max = check_scanned(logits, (o.m, o.bad))?;
        let ln2 = std::f64::consts::LN_2;
        let (s, s1, s2) = o.totals();
        let stats = stats_from_moments(max, s, s1 * ln2, s2 * ln2 * ln2);
        self.sorted_by_id = true;
        self.stats = Some(stats);
        self.block_max_valid = true;
        Ok(stats)
    }

    /// Forget the cached statistics (the set's values or order changed).
    fn changed(&mut self) {
        self.stats = None;
        self.fin = None;
    }

    /// The candidates' logits. The set must be settled (no pending temperature): processors
    /// start on a settled set, and one that scales and then reads calls [`Self::settle`].
    pub fn logits(&self) -> &[f32] {
        self.assert_settled();
        &self.logits
    }

    /// Ids and logits for a processor that rewrites logits in place (it calls [`Self::touch`]).
    pub fn parts_mut(&mut self) -> (&[u32], &mut [f32]) {
        self.settle();
        (&self.ids, &mut self.logits)
    }

    #[inline]
    #[track_caller]
    fn assert_settled(&self) {
        assert!(
            self.pending.is_none(),
            "candidates read with a pending temperature: call settle() first"
        );
    }

    /// Multiply a pending temperature into the logits (a no-op when none is pending). The
    /// values are those the final pass would have used, so the cached statistics stay valid.
    pub fn settle(&mut self) {
        let Some(f) = self.pending.take() else {
            return;
        };
        // long rows in two fixed halves on the pool (element-wise: same result either way)
        let split = split_point(self.logits.len());
        if split == 0 {
            scale_in_place(&mut self.logits, f);
        } else {
            let (a, b) = self.logits.split_at_mut(split);
            crate::pool::join(|| scale_in_place(a, f), || scale_in_place(b, f));
        }
        if self.block_max_valid && f > 0.0 {
            // x -> x·f is monotone for f > 0 (rounding included), so block maxima follow
            scale_in_place(&mut self.block_max, f);
        } else {
            self.block_max_valid = false;
        }
    }

    /// The blocks' maxima when known (see `block_max`), else `&[]`.
    fn known_block_max(&self) -> &[f32] {
        if self.full && self.block_max_valid {
            &self.block_max
        } else {
            &[]
        }
    }

    /// Positions of the candidates with logit >= `cut` (compared in f64, exactly).
    pub fn positions_at_least(&self, cut: f64, out: &mut Vec<usize>) {
        self.assert_settled();
        positions_f32(&self.logits, f32_at_least(cut), out, self.known_block_max())
    }

    /// The k-th largest logit of the set (1 <= k <= len); `vals` is scratch.
    pub fn kth_largest(&self, k: usize, vals: &mut Vec<f32>) -> f32 {
        self.assert_settled();
        kth_largest_blocks(&self.logits, k, vals, self.known_block_max())
    }

    /// Entropy, varentropy and log Z of the current set (cached until the set changes).
    pub fn stats(&mut self) -> DistStats {
        self.settle();
        match self.stats {
            Some(s) => s,
            None => {
                let s = dist_stats(&self.logits);
                self.stats = Some(s);
                s
            }
        }
    }

    /// Forget what is cached about the set after writing `ids` or `logits` directly.
    pub fn touch(&mut self) {
        self.changed();
        self.full = false;
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Keep the candidates for which `keep(index, logit)` is true, preserving their order.
    pub fn retain(&mut self, mut keep: impl FnMut(usize, f32) -> bool) {
        self.settle();
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
    /// logits instead of a call per token.
    pub fn retain_where(&mut self, lower: f32, keep: impl Fn(f32) -> bool) {
        self.compact(|ids, identity, logits, bm| {
            retain_where_dispatch(ids, identity, logits, lower, keep, bm)
        });
    }

    /// Shrink the set with `filter(ids, identity, logits, block_max) -> kept`, which compacts
    /// the kept candidates to the front in order (see [`retain_where_dispatch`]).
    fn compact(&mut self, filter: impl FnOnce(&mut Vec<u32>, bool, &mut [f32], &[f32]) -> usize) {
        self.settle();
        let bm = std::mem::take(&mut self.block_max);
        let valid = self.full && self.block_max_valid;
        let identity = self.park_identity();
        let w = filter(
            &mut self.ids,
            identity,
            &mut self.logits,
            if valid { &bm } else { &[] },
        );
        self.block_max = bm;
        self.block_max_valid = false;
        self.ids.truncate(w);
        self.logits.truncate(w);
        self.changed();
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
        #[cfg(target_arch = "x86_64")]
        if Isa::detected() == Isa::Avx512 {
            // SAFETY: the CPU has AVX-512 (`Isa::detected`)
            self.compact(|ids, identity, logits, bm| unsafe {
                retain_ge_avx512(ids, identity, logits, c, bm)
            });
            return;
        }
        self.retain_where(c, |_| true);
    }

    /// Shrink to the single candidate at `pos`.
    pub fn keep_one(&mut self, pos: usize) {
        self.settle();
        let (id, l) = (self.ids[pos], self.logits[pos]);
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
        for &p in positions {
            scratch_ids.push(self.ids[p]);
            scratch_logits.push(self.logits[p]);
        }
        self.park_identity();
        std::mem::swap(&mut self.ids, scratch_ids);
        std::mem::swap(&mut self.logits, scratch_logits);
        self.sorted_by_id = false;
        self.changed();
    }

    /// Sort by token id (cheap when the set is small; a no-op when already sorted).
    pub fn sort_by_id(&mut self) {
        if self.sorted_by_id {
            return;
        }
        self.settle();
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

    /// Statistics of the final (sampled-from) distribution over the set, with the per-block
    /// sums [`Self::draw`] walks: one exp pass (with a pending temperature folded in), cached
    /// until the set changes. The set must be in id order for the draw (`sort_by_id`).
    pub fn final_stats(&mut self) -> FinalStats {
        if let Some(f) = self.fin {
            return f;
        }
        // the maximum of the scaled set is the scaled maximum (x -> x·f is monotone for f > 0)
        let raw_max = match self.known_block_max() {
            [] => max_finite(&self.logits),
            bm => max_finite(bm),
        };
        let f = match self.pending {
            Some(f) if f > 0.0 => Some(f),
            Some(_) => {
                self.settle();
                return self.final_stats();
            }
            None => None,
        };
        let m = f.map_or(raw_max, |f| raw_max * f);
        let fin = final_stats_scaled(&self.logits, f, m, &mut self.draw_blocks);
        self.fin = Some(fin);
        fin
    }

    /// Draw a position with u in [0,1) (see [`draw_from_logits`]); returns it and its
    /// unnormalised weight.
    pub fn draw(&mut self, u: f64) -> (usize, f64) {
        let fin = self.final_stats();
        draw_scaled(&self.logits, self.pending, &fin, &self.draw_blocks, u)
    }

    pub fn max_logit(&self) -> f32 {
        self.assert_settled();
        match self.known_block_max() {
            [] => max_finite(&self.logits),
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
            let end = (start + BLOCK).min(self.logits.len());
            return first_position_of(&self.logits[start..end], m).map(|i| start + i);
        }
        if self.sorted_by_id {
            return first_position_of(&self.logits, m);
        }
        self.logits
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == m)
            .min_by_key(|(i, _)| self.ids[*i])
            .map(|(i, _)| i)
    }
}

/// The smallest f32 `c` with `c as f64 >= cut`, so that `l >= c` <=> `l as f64 >= cut` for every
/// f32 `l` (a NaN cut gives NaN: nothing passes, as in f64).
pub fn f32_at_least(cut: f64) -> f32 {
    let c = cut as f32; // nearest (saturating to ±inf)
    if (c as f64) < cut {
        c.next_up()
    } else {
        c
    }
}

/// Summary of a distribution given by logits: entropy and varentropy in nats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistStats {
    pub max_logit: f32,
    /// ln Σ exp(l_i): the log partition function.
    pub log_z: f64,
    pub entropy_nats: f64,
    /// Var[-ln p] under p, in nats².
    pub varentropy_nats2: f64,
}

impl DistStats {
    /// ln p of a token given its logit.
    pub fn log_prob(&self, logit: f32) -> f64 {
        logit as f64 - self.log_z
    }
}

/// Width of the lane split of the max passes: 2 AVX-512 registers, 4 AVX2, 8 SSE.
const MAX_LANES: usize = 32;
/// Logits per skip block of the selective filters.
const SKIP: usize = 64;

#[inline(always)]
fn max_impl(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; MAX_LANES];
    let chunks = logits.chunks_exact(MAX_LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &l) in lanes.iter_mut().zip(c) {
            *m = if l > *m { l } else { *m };
        }
    }
    let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &l in rest {
        m = m.max(l);
    }
    m
}

multiversion! {
    /// Largest logit (-inf when all are -inf). NaN must have been rejected by the caller
    /// (`check_and_max`).
    pub fn max_finite / max_finite_at(logits: &[f32]) -> f32 = max_impl
}

#[inline(always)]
fn scan_impl(logits: &[f32]) -> (f32, bool) {
    let mut lanes = [f32::NEG_INFINITY; MAX_LANES];
    let mut bad = [0u32; MAX_LANES];
    let chunks = logits.chunks_exact(MAX_LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..MAX_LANES {
            let l = c[j];
            #[allow(clippy::eq_op)]
            let nan = l != l;
            bad[j] |= (nan | (l == f32::INFINITY)) as u32;
            lanes[j] = if l > lanes[j] { l } else { lanes[j] };
        }
    }
    // fold the lanes as a tree with the same comparison (a NaN is flagged by `bad`, so the
    // NaN-aware f32::max, a scalar chain per lane, is not needed): it runs once per block of
    // the one-read pass, where the scalar fold cost a third of the pass
    let mut w = MAX_LANES;
    while w > 1 {
        w /= 2;
        for j in 0..w {
            lanes[j] = if lanes[j + w] > lanes[j] {
                lanes[j + w]
            } else {
                lanes[j]
            };
        }
    }
    let mut m = lanes[0];
    let mut any_bad = bad.iter().fold(0, |a, &b| a | b) != 0;
    for &l in rest {
        any_bad |= l.is_nan() | (l == f32::INFINITY);
        m = if l > m { l } else { m };
    }
    (m, any_bad)
}

multiversion! {
    /// Largest logit and whether any logit is NaN or +inf, in one pass.
    fn scan_logits / scan_logits_at(logits: &[f32]) -> (f32, bool) = scan_impl
}

/// Check logits at the boundary (NaN and +inf are rejected, -inf means "masked") and return the
/// largest, in one vectorised pass; the culprit is located only on failure.
pub fn check_and_max(logits: &[f32]) -> Result<f32, super::SampleError> {
    check_scanned(logits, scan_logits(logits))
}

/// [`check_and_max`] on a scan already made.
fn check_scanned(logits: &[f32], (m, bad): (f32, bool)) -> Result<f32, super::SampleError> {
    use super::SampleError;
    if logits.is_empty() {
        return Err(SampleError::Empty);
    }
    if bad {
        for (i, &l) in logits.iter().enumerate() {
            if l.is_nan() {
                return Err(SampleError::NanLogit(i));
            }
            if l == f32::INFINITY {
                return Err(SampleError::InfiniteLogit(i));
            }
        }
    }
    if m == f32::NEG_INFINITY {
        return Err(SampleError::NoCandidate);
    }
    Ok(m)
}

#[inline(always)]
fn first_position_impl(logits: &[f32], m: f32) -> Option<usize> {
    let mut base = 0;
    for c in logits.chunks(SKIP) {
        let mut hit = 0u32;
        for &l in c {
            hit |= (l == m) as u32;
        }
        if hit != 0 {
            return c.iter().position(|&l| l == m).map(|i| base + i);
        }
        base += c.len();
    }
    None
}

multiversion! {
    /// First position holding exactly `m`.
    fn first_position_of / first_position_of_at(logits: &[f32], m: f32) -> Option<usize> = first_position_impl
}

#[inline(always)]
fn scale_impl(logits: &mut [f32], f: f32) {
    for l in logits {
        *l *= f;
    }
}

multiversion! {
    fn scale_in_place / scale_in_place_at(logits: &mut [f32], f: f32) -> () = scale_impl
}

/// Before compacting `n` candidates: with `identity` (implicit ids), `ids` emptied with room for
/// the kept ids plus `slack` (a full register written at the last kept position); otherwise it
/// must hold the n ids being compacted in place.
#[inline(always)]
fn ids_for_compaction(ids: &mut Vec<u32>, identity: bool, n: usize, slack: usize) {
    if identity {
        ids.clear();
        ids.reserve(n + slack);
    } else {
        assert_eq!(ids.len(), n);
    }
}

#[inline(always)]
fn retain_where_impl<F: Fn(f32) -> bool>(
    ids: &mut Vec<u32>,
    identity: bool,
    logits: &mut [f32],
    lower: f32,
    keep: F,
    block_max: &[f32],
) -> usize {
    let n = logits.len();
    ids_for_compaction(ids, identity, n, 0);
    let id_out = ids.as_mut_ptr();
    let mut w = 0;
    let mut r = 0;
    while r < n {
        // a whole block below `lower` (known without reading it) is skipped
        if r % BLOCK == 0 && block_max.get(r / BLOCK).is_some_and(|&m| m < lower) {
            r = (r + BLOCK).min(n);
            continue;
        }
        let end = (r + SKIP).min(n);
        let mut hit = 0u32;
        for &l in &logits[r..end] {
            hit |= (l >= lower) as u32;
        }
        if hit != 0 {
            // branch-free: write every candidate, advance past the kept ones (w <= i, so the
            // writes land on positions already read). Against a kept/dropped branch, at 262k
            // with a threshold-only `keep`: 18k kept 445-659 -> 298-323 µs, 80k kept
            // 1523-1653 -> 367 µs (the path of CPUs without AVX-512 compress)
            for i in r..end {
                let l = logits[i];
                let take = l >= lower && keep(l);
                // SAFETY: w <= i < n, within `ids`' length (compacting: asserted above) or
                // capacity (identity: reserved above); ids are read and written only through
                // this pointer in the loop
                let id = if identity {
                    i as u32
                } else {
                    unsafe { id_out.add(i).read() }
                };
                unsafe { id_out.add(w).write(id) };
                logits[w] = l;
                w += take as usize;
            }
        }
        r = end;
    }
    if identity {
        // SAFETY: the first w ids were written above
        unsafe { ids.set_len(w) };
    }
    w
}

/// The pure-threshold filter (`l >= c`) with AVX-512's compress: 16 logits compared, the kept
/// ones and their ids packed into place by two instructions and two full-register stores (at
/// w <= i, so they only overwrite logits already loaded). Returns the new length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn retain_ge_avx512(
    ids: &mut Vec<u32>,
    identity: bool,
    logits: &mut [f32],
    c: f32,
    block_max: &[f32],
) -> usize {
    use std::arch::x86_64::*;
    let n = logits.len();
    ids_for_compaction(ids, identity, n, 16);
    let (lp, ip) = (logits.as_mut_ptr(), ids.as_mut_ptr());
    let vc = _mm512_set1_ps(c);
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut w = 0;
    let mut r = 0;
    while r < n {
        if r % BLOCK == 0 && block_max.get(r / BLOCK).is_some_and(|&m| m < c) {
            r = (r + BLOCK).min(n);
            continue;
        }
        let end = (r + BLOCK - r % BLOCK).min(n);
        while r + 16 <= end {
            // SAFETY: r + 16 <= n; the stores write 16 lanes at w <= r, i.e. below r + 16
            // (logits and, when compacting, ids: positions already loaded) or into the
            // reserved n + 16 (fresh ids)
            unsafe {
                let x = _mm512_loadu_ps(lp.add(r));
                let k = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, vc);
                if k != 0 {
                    let id = if identity {
                        _mm512_add_epi32(iota, _mm512_set1_epi32(r as i32))
                    } else {
                        _mm512_loadu_si512(ip.add(r).cast())
                    };
                    _mm512_storeu_ps(lp.add(w), _mm512_maskz_compress_ps(k, x));
                    _mm512_storeu_si512(ip.add(w).cast(), _mm512_maskz_compress_epi32(k, id));
                    w += k.count_ones() as usize;
                }
            }
            r += 16;
        }
        while r < end {
            // SAFETY: w <= r < n
            unsafe {
                let l = *lp.add(r);
                if l >= c {
                    let id = if identity { r as u32 } else { *ip.add(r) };
                    *lp.add(w) = l;
                    *ip.add(w) = id;
                    w += 1;
                }
            }
            r += 1;
        }
    }
    if identity {
        // SAFETY: the first w ids were written above
        unsafe { ids.set_len(w) };
    }
    w
}

/// [`retain_where_impl`] at the detected ISA (generic, so dispatched by hand); returns the new
/// length. With `identity`, the ids are implicit (position = id) and the kept ones are pushed
/// onto the empty `ids`; otherwise `ids` is compacted in place.
fn retain_where_dispatch<F: Fn(f32) -> bool>(
    ids: &mut Vec<u32>,
    identity: bool,
    logits: &mut [f32],
    lower: f32,
    keep: F,
    bm: &[f32],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn v4<F: Fn(f32) -> bool>(
            i: &mut Vec<u32>,
            id: bool,
            l: &mut [f32],
            lo: f32,
            k: F,
            bm: &[f32],
        ) -> usize {
            retain_where_impl(i, id, l, lo, k, bm)
        }
        #[target_feature(enable = "avx2,fma")]
        fn v3<F: Fn(f32) -> bool>(
            i: &mut Vec<u32>,
            id: bool,
            l: &mut [f32],
            lo: f32,
            k: F,
            bm: &[f32],
        ) -> usize {
            retain_where_impl(i, id, l, lo, k, bm)
        }
        match Isa::detected() {
            // SAFETY: `Isa::detected` never exceeds what the CPU supports
            Isa::Avx512 => return unsafe { v4(ids, identity, logits, lower, keep, bm) },
            Isa::Avx2 => return unsafe { v3(ids, identity, logits, lower, keep, bm) },
            Isa::Portable => {}
        }
    }
    retain_where_impl(ids, identity, logits, lower, keep, bm)
}

#[inline(always)]
fn positions_impl(logits: &[f32], c: f32, out: &mut Vec<usize>, block_max: &[f32]) {
    out.clear();
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        // a whole block below `c` (known without reading it) is skipped
        if block_max.get(b).is_some_and(|&m| m < c) {
            continue;
        }
        let mut base = b * BLOCK;
        for chunk in block.chunks(SKIP) {
            let mut hit = 0u32;
            for &l in chunk {
                hit |= (l >= c) as u32;
            }
            if hit != 0 {
                for (i, &l) in chunk.iter().enumerate() {
                    if l >= c {
                        out.push(base + i);
                    }
                }
            }
            base += chunk.len();
        }
    }
}

multiversion! {
    fn positions_f32 / positions_f32_at(logits: &[f32], c: f32, out: &mut Vec<usize>, block_max: &[f32]) -> () = positions_impl
}

#[inline(always)]
fn values_impl(logits: &[f32], c: f32, out: &mut Vec<f32>, block_max: &[f32]) {
    out.clear();
    out.reserve(logits.len());
    let dst = &mut out.spare_capacity_mut()[..logits.len()];
    let mut w = 0;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if block_max.get(b).is_some_and(|&m| m < c) {
            continue;
        }
        for chunk in block.chunks(SKIP) {
            let mut hit = 0u32;
            for &l in chunk {
                hit |= (l >= c) as u32;
            }
            if hit != 0 {
                // branch-free: write every value, advance past the kept ones (w <= index)
                for &l in chunk {
                    dst[w].write(l);
                    w += (l >= c) as usize;
                }
            }
        }
    }
    // SAFETY: the first w elements were written above
    unsafe { out.set_len(w) };
}

/// [`values_impl`] with AVX-512's compress: 16 values compared and the kept ones packed in a
/// few instructions (the scalar form costs a cycle or two per value read).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn values_avx512(logits: &[f32], c: f32, out: &mut Vec<f32>, block_max: &[f32]) {
    use std::arch::x86_64::*;
    out.clear();
    // room for a whole register written at the last kept position
    out.reserve(logits.len() + 16);
    let dst = out.as_mut_ptr();
    let vc = _mm512_set1_ps(c);
    let mut w = 0;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if block_max.get(b).is_some_and(|&m| m < c) {
            continue;
        }
        let chunks = block.chunks_exact(16);
        let rest = chunks.remainder();
        for ch in chunks {
            // SAFETY: `ch` holds 16 f32; w + 16 <= logits.len() + 16, within the capacity
            unsafe {
                let x = _mm512_loadu_ps(ch.as_ptr());
                let k = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, vc);
                // branch-free: whether a register holds a kept value is as good as random
                // in a block that holds one (a mispredicted branch costs more than the store)
                _mm512_storeu_ps(dst.add(w), _mm512_maskz_compress_ps(k, x));
                w += k.count_ones() as usize;
            }
        }
        for &l in rest {
            if l >= c {
                // SAFETY: w < logits.len(), within the capacity
                unsafe { dst.add(w).write(l) };
                w += 1;
            }
        }
    }
    // SAFETY: the first w elements were written above
    unsafe { out.set_len(w) };
}

thread_local! {
    /// A half's output in [`values_f32`] (sized for a whole half, reused across steps).
    static HALF_VALUES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The logits >= `c`, in order, into `out` (blocks whose maximum is below `c` skipped). Long
/// rows are read as the two halves the one-read pass wrote them in, each on the thread that
/// wrote it (its own core's cache: read from one thread, the other half crosses cores).
fn values_f32(logits: &[f32], c: f32, out: &mut Vec<f32>, block_max: &[f32]) {
    let isa = Isa::detected();
    let split = split_point(logits.len());
    if split == 0 {
        return values_f32_at(isa, logits, c, out, block_max);
    }
    let (la, lb) = logits.split_at(split);
    let (ba, bb) = block_max.split_at((split / BLOCK).min(block_max.len()));
    let half = |l: &[f32], bm: &[f32], out: &mut Vec<f32>| {
        HALF_VALUES.with_borrow_mut(|v| {
            values_f32_at(isa, l, c, v, bm);
            out.extend_from_slice(v);
        })
    };
    let mut second = Vec::new();
    out.clear();
    crate::pool::join(|| half(la, ba, out), || half(lb, bb, &mut second));
    out.append(&mut second);
}

fn values_f32_at(isa: Isa, logits: &[f32], c: f32, out: &mut Vec<f32>, block_max: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn v3(l: &[f32], c: f32, out: &mut Vec<f32>, bm: &[f32]) {
            values_impl(l, c, out, bm)
        }
        match isa.min(Isa::cpu()) {
            // SAFETY: the CPU supports the level (clamped to `Isa::cpu()`)
            Isa::Avx512 => return unsafe { values_avx512(logits, c, out, block_max) },
            Isa::Avx2 => return unsafe { v3(logits, c, out, block_max) },
            Isa::Portable => {}
        }
    }
    values_impl(logits, c, out, block_max)
}

impl Candidates {
    /// The logits >= `cut` (compared in f64, exactly), in order, into `out`.
    pub fn values_at_least(&self, cut: f64, out: &mut Vec<f32>) {
        self.assert_settled();
        values_f32(&self.logits, f32_at_least(cut), out, self.known_block_max())
    }
}

/// Σ e^{d·s}, Σ (d·s) e^{d·s}, Σ (d·s)² e^{d·s} with d = l - m (m >= every l), and the count of
/// non-zero terms: the vectorised pass behind entropy and varentropy, for processors that
/// model a distribution on a subset of its logits.
pub fn scaled_moments(logits: &[f32], m: f32, s: f32) -> (f64, f64, f64, usize) {
    exp_moments_at(Isa::detected(), logits, None, m, s, None)
}

/// The `i`-th largest of `vals` (0-based) in f32's total order (`total_cmp`), with the larger
/// ones before it, as `select_nth_unstable_by` with a descending comparator leaves them: the
/// selection runs on integer keys (bits mapped so that unsigned order is descending total
/// order), about twice as fast as comparing floats through `total_cmp`.
fn select_desc(vals: &mut [f32], i: usize) -> f32 {
    // descending total order as unsigned order, and back
    let key = |b: u32| !(if b >> 31 == 1 { !b } else { b | 0x8000_0000 });
    let unkey = |k: u32| {
        let m = !k;
        if m >> 31 == 1 {
            m & 0x7FFF_FFFF
        } else {
            !m
        }
    };
    // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is valid for
    // both; `vals` is not used while `keys` lives
    let keys: &mut [u32] =
        unsafe { std::slice::from_raw_parts_mut(vals.as_mut_ptr().cast(), vals.len()) };
    for x in keys.iter_mut() {
        *x = key(*x);
    }
    keys.select_nth_unstable(i);
    for x in keys.iter_mut() {
        *x = unkey(*x);
    }
    vals[i]
}

/// The k-th largest logit (1 <= k <= len); `vals` is scratch (see `kth_largest_blocks`).
pub fn kth_largest(logits: &[f32], k: usize, vals: &mut Vec<f32>) -> f32 {
    kth_largest_blocks(logits, k, vals, &[])
}

/// [`kth_largest`] with the blocks' maxima (`&[]` when unknown). One compress pass collects the
/// logits at or above a cut that holds at least k of them, usually a few more than k, and a
/// selection runs on those (the selection, not the pass, is what costs when the cut is loose:
/// ~5 ns per value). The cut:
/// * k <= blocks / 2: the k-th largest block maximum. The k largest maxima are k logits in k
///   distinct blocks, so at least k logits are at or above it.
/// * otherwise, on long rows: a rank taken from a strided sample of 4096 logits, with a margin
///   of three standard deviations (and 8) above the expected rank; if it falls short, or
///   neither applies, the cut widens from the maximum: 4, 8, 16, ... nats.
///
/// Afterwards `vals[..k]` holds the k largest logits (in no order).
fn kth_largest_blocks(logits: &[f32], k: usize, vals: &mut Vec<f32>, bm: &[f32]) -> f32 {
    assert!(k >= 1 && k <= logits.len(), "k = {k} of {}", logits.len());
    let n = logits.len();
    const SAMPLE: usize = 4096;
    let cut = if !bm.is_empty() && k <= bm.len() / 2 {
        vals.clear();
        vals.extend_from_slice(bm);
        Some(select_desc(vals, k - 1))
    } else if n >= 4 * SAMPLE && k <= n - n / 8 {
        let stride = n / SAMPLE;
        vals.clear();
        vals.extend((0..SAMPLE).map(|i| logits[i * stride + stride / 2]));
        let r = (k * SAMPLE) as f64 / n as f64;
        let q = ((r + 3.0 * r.sqrt() + 8.0).ceil() as usize).min(SAMPLE);
        Some(select_desc(vals, q - 1))
    } else {
        None
    };
    if let Some(c) = cut {
        values_f32(logits, c, vals, bm);
    }
    if vals.len() < k || cut.is_none() {
        let max = if bm.is_empty() {
            max_finite(logits)
        } else {
            max_finite(bm)
        } as f64;
        let mut width = 4.0;
        loop {
            values_f32(logits, f32_at_least(max - width), vals, bm);
            if vals.len() >= k || width > 1e4 {
                break;
            }
            width *= 2.0;
        }
        if vals.len() < k {
            vals.clear();
            vals.extend_from_slice(logits);
        }
    }
    select_desc(vals, k - 1)
}

impl Candidates {
    /// The k largest logits of the set (k <= len), in descending order, into `out`.
    pub fn largest_values(&self, k: usize, out: &mut Vec<f32>) {
        self.assert_settled();
        kth_largest_blocks(&self.logits, k, out, self.known_block_max());
        out.truncate(k);
        out.sort_unstable_by(|a, b| b.total_cmp(a));
    }
}

/// 2^y for y <= 0, written so LLVM vectorises it (libm's `exp2f` is a scalar call). y < -125
/// (including -inf) gives 0, so no result is subnormal. y = n + f with n = round(y), |f| <= 1/2,
/// and Cephes' degree-5 polynomial for 2^f (relative error < 2e-7), evaluated with fused
/// multiply-adds (-20 % time per exp pass against separate multiplies and adds); 2^n is built
/// from bits. The AVX2 and AVX-512 builds have FMA instructions; the portable build of a
/// non-native binary calls libm's `fmaf` instead: the same results, much slower, and only on
/// CPUs older than AVX2.
#[inline(always)]
pub fn exp2_nonpos(y: f32) -> f32 {
    let yc = y.max(-125.0);
    let t = yc + EXP2_MAGIC;
    let n = t - EXP2_MAGIC;
    let f = yc - n;
    // Horner with fused multiply-adds (one rounding per step, the same on every ISA)
    let mut p = f.mul_add(EXP2_P[0], EXP2_P[1]);
    p = f.mul_add(p, EXP2_P[2]);
    p = f.mul_add(p, EXP2_P[3]);
    p = f.mul_add(p, EXP2_P[4]);
    p = f.mul_add(p, EXP2_P[5]);
    let e = f.mul_add(p, 1.0);
    // the low mantissa bits of t hold n (in [-125, 0]): 2^n = bits((n + 127) << 23)
    let pow2 = f32::from_bits(t.to_bits().wrapping_sub(EXP2_BIAS) << 23);
    // NaN (from an infinite temperature scale) gives 0, like the masked lanes of the passes
    if y >= -125.0 {
        e * pow2
    } else {
        0.0
    }
}

/// Round-to-nearest by adding 1.5·2^23 (vectorises; `round` may not).
const EXP2_MAGIC: f32 = 12_582_912.0;
/// The bits of EXP2_MAGIC minus the f32 exponent bias: t.bits - EXP2_BIAS = n + 127.
const EXP2_BIAS: u32 = 0x4B40_0000 - 127;
/// Cephes `exp2f`: 2^f = 1 + f·P(f) on [-1/2, 1/2], highest degree first.
const EXP2_P: [f32; 6] = [
    1.535_336_2e-4,
    1.339_887_4e-3,
    9.618_437e-3,
    5.550_332_5e-2,
    2.402_264_8e-1,
    6.931_472e-1,
];

/// exp(x) for x <= 0 as `2^(x·log2 e)`: the same function the moment passes evaluate, so the
/// draw's weights agree with their sums. Relative error < 2e-7 + 7e-8·|x| (the second term is
/// the rounding of x·log2 e, the same size as the rounding already in a logit difference).
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    exp2_nonpos(x * std::f32::consts::LOG2_E)
}

/// Logits per block of the moment passes: f32 lane sums are flushed into f64 once per block.
pub const BLOCK: usize = 256;

/// Sums of one block: Σ e (reduced to f64 by [`tree_sum`]'s tree), and per lane Σ e·d, Σ e·d²
/// (f32) and the count of e > 0.
struct BlockSums {
    total: f64,
    s1: [f32; LANES],
    s2: [f32; LANES],
    n: [u32; LANES],
}

/// Lanes of the moment passes (one AVX-512 register).
const LANES: usize = 16;

/// Σ of 16 f32 lanes in f64 by a fixed tree (lane j + lane j+8, then +4, +2, +1): the same
/// result on every ISA, and four dependent adds instead of sixteen.
#[inline(always)]
fn tree_sum(x: &[f32; LANES]) -> f64 {
    let mut v = [0f64; 8];
    for j in 0..8 {
        v[j] = x[j] as f64 + x[j + 8] as f64;
    }
    let w = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (w[0] + w[2]) + (w[1] + w[3])
}

/// Add a block's f32 lane sums into f64 lane accumulators (reduced once, at the end, by
/// [`lanes_total`]): no horizontal reduction per block.
#[inline(always)]
fn lanes_add(acc: &mut [f64; LANES], x: &[f32; LANES]) {
    for j in 0..LANES {
        acc[j] += x[j] as f64;
    }
}

/// Σ of f64 lane accumulators by the fixed tree of [`tree_sum`].
#[inline(always)]
fn lanes_total(x: &[f64; LANES]) -> f64 {
    let mut v = [0f64; 8];
    for j in 0..8 {
        v[j] = x[j] + x[j + 8];
    }
    let w = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (w[0] + w[2]) + (w[1] + w[3])
}

/// The moments of one block in log2 units (y = (l - m)·k, e = 2^y): portable form (LLVM
/// vectorises it at the ISA it is compiled for).
// the lane index walks the input and four accumulators in step
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn block_sums_portable<const PRE: bool>(block: &[f32], pre: f32, m: f32, k: f32) -> BlockSums {
    let mut s = [0f32; LANES];
    let mut b = BlockSums {
        total: 0.0,
        s1: [0.0; LANES],
        s2: [0.0; LANES],
        n: [0; LANES],
    };
    for c in block.chunks_exact(LANES) {
        for j in 0..LANES {
            // a pending temperature: the scaled logit, rounded as `scale` rounds it
            let x = if PRE { c[j] * pre } else { c[j] };
            let y = (x - m) * k;
            let e = exp2_nonpos(y);
            // masked tokens (y = -inf, e = 0) add exactly 0, not 0·inf = NaN
            let live = y >= -125.0;
            let ey = if live { e * y } else { 0.0 };
            b.n[j] += live as u32;
            s[j] += if live { e } else { 0.0 };
            b.s1[j] += ey;
            // Σ e·y² as a fused multiply-add of e·y and y (one rounding, the same on every ISA)
            if live {
                b.s2[j] = ey.mul_add(y, b.s2[j]);
            }
        }
    }
    b.total = tree_sum(&s);
    b
}

/// [`block_sums_portable`] in AVX-512 intrinsics: the same values, lane for lane, on one 16-lane
/// register (LLVM's autovectoriser stops at 256-bit registers here), so the results are
/// bit-identical to the portable form. exp2 takes 2^n by `vscalefps` and rounds y by
/// `vrndscaleps` (exact, the same values as the portable bit tricks for y >= -125; the lanes
/// below are masked out, so y needs no clamp): 19 instructions per 16 logits instead of 24, on a
/// CPU whose 512-bit units retire about one per cycle.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn block_sums_avx512<const PRE: bool>(block: &[f32], pre: f32, m: f32, k: f32) -> BlockSums {
    use std::arch::x86_64::*;
    let ps = _mm512_set1_ps;
    let (vm, vk, lim, zero) = (ps(m), ps(k), ps(-125.0), _mm512_setzero_ps());
    let (vpre, one) = (ps(pre), ps(1.0));
    let pc = EXP2_P.map(|c| _mm512_set1_ps(c));
    let one_i = _mm512_set1_epi32(1);
    let (mut s, mut s1, mut s2, mut n) = (zero, zero, zero, _mm512_setzero_si512());
    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    for c in block.chunks_exact(LANES) {
        // SAFETY: `c` holds exactly 16 f32
        let x = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        let x = if PRE { _mm512_mul_ps(x, vpre) } else { x };
        let y = _mm512_mul_ps(_mm512_sub_ps(x, vm), vk);
        // exp2_nonpos(y): n = round(y) (ties to even, as the magic-number add), f = y - n
        let nn = _mm512_roundscale_ps::<NEAREST>(y);
        let f = _mm512_sub_ps(y, nn);
        let mut p = _mm512_fmadd_ps(f, pc[0], pc[1]);
        p = _mm512_fmadd_ps(f, p, pc[2]);
        p = _mm512_fmadd_ps(f, p, pc[3]);
        p = _mm512_fmadd_ps(f, p, pc[4]);
        p = _mm512_fmadd_ps(f, p, pc[5]);
        let p = _mm512_fmadd_ps(f, p, one);
        let live = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(y, lim);
        // p·2^n, exact: p in [0.7, 1.5] and n >= -125 keep it a normal number
        let e = _mm512_maskz_scalef_ps(live, p, nn);
        let ey = _mm512_maskz_mul_ps(live, e, y);
        n = _mm512_mask_add_epi32(n, live, n, one_i);
        s = _mm512_add_ps(s, e);
        s1 = _mm512_add_ps(s1, ey);
        s2 = _mm512_mask3_fmadd_ps(ey, y, s2, live);
    }
    // Σ e in f64 by tree_sum's tree, in registers: the two 8-lane halves converted and added
    // (lane j + lane j+8), then the upper half onto the lower (+4), again (+2), and the pair
    let v = _mm512_add_pd(
        _mm512_cvtps_pd(_mm512_castps512_ps256(s)),
        _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(s)),
    );
    let w = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd::<1>(v));
    let u = _mm_add_pd(_mm256_castpd256_pd128(w), _mm256_extractf128_pd::<1>(w));
    let total = _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
    let mut b = BlockSums {
        total,
        s1: [0.0; LANES],
        s2: [0.0; LANES],
        n: [0; LANES],
    };
    // SAFETY: each destination holds 16 lanes of 4 bytes
    unsafe {
        _mm512_storeu_ps(b.s1.as_mut_ptr(), s1);
        _mm512_storeu_ps(b.s2.as_mut_ptr(), s2);
        _mm512_storeu_si512(b.n.as_mut_ptr().cast(), n);
    }
    b
}

/// Σ e, Σ e·d, Σ e·d² with d = (l - m)·scale, e = exp(d), and the number of non-zero e: the
/// moments behind entropy and varentropy. Evaluated in log2 units (y = (l - m)·scale·log2 e,
/// e = 2^y; the y sums are turned into nats once, in f64). 16 f32 lanes accumulate blocks of
/// [`BLOCK`] values, flushed into f64 per block: this vectorises (f64 accumulators in the inner
/// loop do not) and keeps the sums accurate to ~1e-7 relative. `blocks`, when given, receives
/// each block's Σ e (the last block holds the remainder), for [`draw_from_logits`].
#[inline(always)]
fn moments_outer(
    logits: &[f32],
    pre: Option<f32>,
    m: f32,
    k: f32,
    mut blocks: Option<&mut [f64]>,
    block_sums: impl Fn(&[f32]) -> BlockSums,
) -> (f64, f64, f64, usize) {
    let (mut a, mut b, mut c2, mut count) = (0f64, 0f64, 0f64, 0usize);
    let (mut b_lanes, mut c2_lanes, mut n_lanes) = ([0f64; LANES], [0f64; LANES], [0u32; LANES]);
    let full = logits.chunks_exact(BLOCK);
    let rest = full.remainder();
    for (i, block) in full.enumerate() {
        let sums = block_sums(block);
        // a block's Σ e at once (the draw walks them; the total is their sequential sum), the
        // other sums lane by lane
        let bs = sums.total;
        if let Some(v) = blocks.as_deref_mut() {
            v[i] = bs;
        }
        a += bs;
        lanes_add(&mut b_lanes, &sums.s1);
        lanes_add(&mut c2_lanes, &sums.s2);
        for (acc, &x) in n_lanes.iter_mut().zip(&sums.n) {
            *acc += x;
        }
    }
    b += lanes_total(&b_lanes);
    c2 += lanes_total(&c2_lanes);
    count += n_lanes.iter().map(|&x| x as usize).sum::<usize>();
    let mut bs = 0f64;
    for &l in rest {
        let l = pre.map_or(l, |f| l * f);
        let y = (l - m) * k;
        let e = exp2_nonpos(y) as f64;
        if y >= -125.0 {
            count += 1;
            bs += e;
            b += e * y as f64;
            c2 += e * y as f64 * y as f64;
        }
    }
    if let Some(v) = blocks {
        if !rest.is_empty() {
            v[logits.len() / BLOCK] = bs;
        }
    }
    a += bs;
    let ln2 = std::f64::consts::LN_2;
    (a, b * ln2, c2 * ln2 * ln2, count)
}

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

/// [`moments_outer`] at `isa` (lowered to what the CPU has), over two halves for long rows.
fn exp_moments_at(
    isa: Isa,
    logits: &[f32],
    pre: Option<f32>,
    m: f32,
    scale: f32,
    blocks: Option<&mut Vec<f64>>,
) -> (f64, f64, f64, usize) {
    // each part writes its blocks' sums into its own piece of one presized buffer (parts
    // pushing onto two Vecs whose headers share a cache line bounced it between the cores)
    let blocks = blocks.map(|v| {
        v.clear();
        v.resize(logits.len().div_ceil(BLOCK), 0.0);
        &mut v[..]
    });
    let split = split_point(logits.len());
    if split == 0 {
        return exp_moments_part(isa, logits, pre, m, scale, blocks);
    }
    let (la, lb) = logits.split_at(split);
    let (ra, rb) = match blocks {
        Some(v) => {
            let (a, b) = v.split_at_mut(split / BLOCK);
            (Some(a), Some(b))
        }
        None => (None, None),
    };
    let (a, b) = crate::pool::join(
        move || exp_moments_part(isa, la, pre, m, scale, ra),
        move || exp_moments_part(isa, lb, pre, m, scale, rb),
    );
    (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3)
}

/// One contiguous part of [`exp_moments_at`]; `pre`, a pending temperature's scale, multiplies
/// each logit first (a separate instantiation, so the unscaled passes pay nothing for it).
fn exp_moments_part(
    isa: Isa,
    logits: &[f32],
    pre: Option<f32>,
    m: f32,
    scale: f32,
    blocks: Option<&mut [f64]>,
) -> (f64, f64, f64, usize) {
    type Out = (f64, f64, f64, usize);
    let k = scale * std::f32::consts::LOG2_E;
    let f = pre.unwrap_or(1.0);
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn v4<const PRE: bool>(l: &[f32], f: f32, m: f32, k: f32, b: Option<&mut [f64]>) -> Out {
            let pre = PRE.then_some(f);
            moments_outer(l, pre, m, k, b, |x| block_sums_avx512::<PRE>(x, f, m, k))
        }
        #[target_feature(enable = "avx2,fma")]
        fn v3<const PRE: bool>(l: &[f32], f: f32, m: f32, k: f32, b: Option<&mut [f64]>) -> Out {
            let pre = PRE.then_some(f);
            moments_outer(l, pre, m, k, b, |x| block_sums_portable::<PRE>(x, f, m, k))
        }
        // SAFETY: the CPU supports the level (clamped to `Isa::cpu()`)
        match (isa.min(Isa::cpu()), pre.is_some()) {
            (Isa::Avx512, true) => return unsafe { v4::<true>(logits, f, m, k, blocks) },
            (Isa::Avx512, false) => return unsafe { v4::<false>(logits, f, m, k, blocks) },
            (Isa::Avx2, true) => return unsafe { v3::<true>(logits, f, m, k, blocks) },
            (Isa::Avx2, false) => return unsafe { v3::<false>(logits, f, m, k, blocks) },
            (Isa::Portable, _) => {}
        }
    }
    if pre.is_some() {
        moments_outer(logits, pre, m, k, blocks, |x| {
            block_sums_portable::<true>(x, f, m, k)
        })
    } else {
        moments_outer(logits, pre, m, k, blocks, |x| {
            block_sums_portable::<false>(x, f, m, k)
        })
    }
}

/// Moments of a part of a row in log2 units relative to its largest logit `m` so far, for the
/// one-pass check-and-statistics of [`Candidates::check_and_fill`]: Σe block by block (as
/// [`moments_outer`] sums it), Σe·y and Σe·y² in f64 lanes plus a scalar part (the last, short
/// block and the shifts' cross terms).
#[derive(Debug, Clone, Copy)]
struct Online {
    m: f32,
    s: f64,
    s1: [f64; LANES],
    s2: [f64; LANES],
    r1: f64,
    r2: f64,
    /// A NaN or +inf logit was seen.
    bad: bool,
}

impl Online {
    const EMPTY: Online = Online {
        m: f32::NEG_INFINITY,
        s: 0.0,
        s1: [0.0; LANES],
        s2: [0.0; LANES],
        r1: 0.0,
        r2: 0.0,
        bad: false,
    };

    /// Re-express the sums relative to a larger maximum: y -> y - δ with δ = (m' - m)·k, so
    /// Σe -> 2^-δ Σe, Σe·y -> 2^-δ (Σe·y - δ Σe), Σe·y² -> 2^-δ (Σe·y² - 2δ Σe·y + δ² Σe).
    /// Linear in the parts: each lane scales with its own Σe·y term; the δ·Σe terms (Σe is a
    /// scalar) go to the scalar part.
    fn shift_to(&mut self, m: f32, k: f32) {
        if m > self.m {
            if self.s > 0.0 {
                let d = (m as f64 - self.m as f64) * k as f64;
                let f = (-d).exp2();
                for j in 0..LANES {
                    let (a1, a2) = (self.s1[j], self.s2[j]);
                    self.s1[j] = f * a1;
                    self.s2[j] = f * (a2 - 2.0 * d * a1);
                }
                let (s, r1, r2) = (self.s, self.r1, self.r2);
                self.s = f * s;
                self.r1 = f * (r1 - d * s);
                self.r2 = f * (r2 - 2.0 * d * r1 + d * d * s);
            }
            self.m = m;
        }
    }

    fn merge(mut self, mut other: Online, k: f32) -> Online {
        let m = if other.m > self.m { other.m } else { self.m };
        self.shift_to(m, k);
        other.shift_to(m, k);
        for j in 0..LANES {
            self.s1[j] += other.s1[j];
            self.s2[j] += other.s2[j];
        }
        Online {
            m,
            s: self.s + other.s,
            r1: self.r1 + other.r1,
            r2: self.r2 + other.r2,
            bad: self.bad | other.bad,
            ..self
        }
    }

    /// Σe, Σe·y, Σe·y².
    fn totals(&self) -> (f64, f64, f64) {
        (
            self.s,
            lanes_total(&self.s1) + self.r1,
            lanes_total(&self.s2) + self.r2,
        )
    }
}

/// One read of a row: per [`BLOCK`], its maximum and NaN/+inf check (the block is then in L1),
/// the running maximum raised and the sums shifted when the block holds a new maximum, the
/// block's exp moments relative to it, and the copy.
#[inline(always)]
fn fused_outer(
    logits: &[f32],
    k: f32,
    block_max: &mut [f32],
    copy: &mut [MaybeUninit<f32>],
    block_sums: impl Fn(&[f32], f32) -> BlockSums,
) -> Online {
    let mut o = Online::EMPTY;
    for (i, block) in logits.chunks(BLOCK).enumerate() {
        let (bm, bad) = scan_impl(block);
        block_max[i] = bm;
        for (d, &x) in copy[i * BLOCK..].iter_mut().zip(block) {
            d.write(x);
        }
        if bad || o.bad {
            o.bad = true;
            continue; // an error follows; the copy is still completed
        }
        o.shift_to(bm, k);
        if o.m == f32::NEG_INFINITY {
            continue; // nothing live yet
        }
        if block.len() == BLOCK {
            let b = block_sums(block, o.m);
            o.s += b.total;
            lanes_add(&mut o.s1, &b.s1);
            lanes_add(&mut o.s2, &b.s2);
        } else {
            for &l in block {
                let y = (l - o.m) * k;
                if y >= -125.0 {
                    let e = exp2_nonpos(y) as f64;
                    o.s += e;
                    o.r1 += e * y as f64;
                    o.r2 += e * y as f64 * y as f64;
                }
            }
        }
    }
    o
}

/// [`fused_outer`] at `isa` (lowered to what the CPU has).
fn fused_part(
    isa: Isa,
    logits: &[f32],
    k: f32,
    block_max: &mut [f32],
    copy: &mut [MaybeUninit<f32>],
) -> Online {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn v4(l: &[f32], k: f32, b: &mut [f32], c: &mut [MaybeUninit<f32>]) -> Online {
            fused_outer(l, k, b, c, |x, m| block_sums_avx512::<false>(x, 1.0, m, k))
        }
        #[target_feature(enable = "avx2,fma")]
        fn v3(l: &[f32], k: f32, b: &mut [f32], c: &mut [MaybeUninit<f32>]) -> Online {
            fused_outer(l, k, b, c, |x, m| {
                block_sums_portable::<false>(x, 1.0, m, k)
            })
        }
        match isa.min(Isa::cpu()) {
            // SAFETY: the CPU supports the level (clamped to `Isa::cpu()` above)
            Isa::Avx512 => return unsafe { v4(logits, k, block_max, copy) },
            Isa::Avx2 => return unsafe { v3(logits, k, block_max, copy) },
            Isa::Portable => {}
        }
    }
    fused_outer(logits, k, block_max, copy, |x, m| {
        block_sums_portable::<false>(x, 1.0, m, k)
    })
}

/// The check, the block maxima, the copy into `copy` and the exp moments of a row in one read,
/// as two fixed halves (on two threads when off the pool) for long rows, like
/// [`exp_moments_at`].
fn fused_stats_at(
    isa: Isa,
    logits: &[f32],
    block_max: &mut Vec<f32>,
    copy: &mut Vec<f32>,
) -> Online {
    let k = std::f32::consts::LOG2_E;
    let n = logits.len();
    // each half writes its own piece of the presized block maxima (not two Vecs whose headers
    // share a cache line)
    block_max.clear();
    block_max.resize(n.div_ceil(BLOCK), f32::NEG_INFINITY);
    copy.clear();
    copy.reserve(n);
    let dst = &mut copy.spare_capacity_mut()[..n];
    let split = split_point(n);
    let out = if split == 0 {
        fused_part(isa, logits, k, block_max, dst)
    } else {
        let (la, lb) = logits.split_at(split);
        let (da, db) = dst.split_at_mut(split);
        let (ra, rb) = block_max.split_at_mut(split / BLOCK);
        let (a, b) = crate::pool::join(
            move || fused_part(isa, la, k, ra, da),
            move || fused_part(isa, lb, k, rb, db),
        );
        a.merge(b, k)
    };
    // SAFETY: every element of the first n was written by the pass above
    unsafe { copy.set_len(n) };
    out
}

fn exp_moments(logits: &[f32], m: f32, scale: f32) -> (f64, f64, f64) {
    let (s, s1, s2, _) = scaled_moments(logits, m, scale);
    (s, s1, s2)
}

fn stats_from_moments(m: f32, s: f64, s1: f64, s2: f64) -> DistStats {
    let mean_d = s1 / s;
    DistStats {
        max_logit: m,
        log_z: m as f64 + s.ln(),
        entropy_nats: (s.ln() - mean_d).max(0.0),
        varentropy_nats2: (s2 / s - mean_d * mean_d).max(0.0),
    }
}

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
/// [`Candidates::scale`] rounds it), whose largest value is `m`: a temperature folded into the
/// pass.
pub fn final_stats_scaled(
    logits: &[f32],
    pre: Option<f32>,
    m: f32,
    blocks: &mut Vec<f64>,
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
    let (s, s1, s2, kept) = exp_moments_at(Isa::detected(), logits, pre, m, 1.0, Some(blocks));
    FinalStats {
        stats: stats_from_moments(m, s, s1, s2),
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

/// Entropy and varentropy of softmax(logits) without materialising probabilities:
/// H = ln S - (Σ e·d)/S, Var = (Σ e·d²)/S - ((Σ e·d)/S)².
pub fn dist_stats(logits: &[f32]) -> DistStats {
    let m = max_finite(logits);
    let (s, s1, s2) = exp_moments(logits, m, 1.0);
    stats_from_moments(m, s, s1, s2)
}

/// Softmax into `probs` (same order as `logits`), f64 normalisation.
pub fn softmax_into(logits: &[f32], probs: &mut Vec<f64>) -> DistStats {
    let m = max_finite(logits);
    probs.clear();
    probs.extend(logits.iter().map(|&l| exp_nonpos(l - m) as f64));
    let (mut s, mut s1, mut s2) = (0f64, 0f64, 0f64);
    for (&e, &l) in probs.iter().zip(logits) {
        if e > 0.0 {
            let d = (l - m) as f64;
            s += e;
            s1 += e * d;
            s2 += e * d * d;
        }
    }
    let inv = 1.0 / s;
    for p in probs.iter_mut() {
        *p *= inv;
    }
    stats_from_moments(m, s, s1, s2)
}

/// Entropy (nats) of softmax(logits / t), and its derivative dH/dT = Var_T(l) / T³.
pub fn entropy_at_temperature(logits: &[f32], max_logit: f32, t: f64) -> (f64, f64) {
    let beta = 1.0 / t;
    // moments of d·β with d = l - max; H = ln S - E[dβ], Var_T(l) = Var(dβ)/β²
    let (s, s1, s2) = exp_moments(logits, max_logit, beta as f32);
    let mean = s1 / s;
    let var = (s2 / s - mean * mean).max(0.0);
    let h = (s.ln() - mean).max(0.0);
    (h, var / t)
}

#[inline(always)]
fn finite_moments_impl(logits: &[f32], pivot: f32) -> (f32, f64, f64, usize) {
    // f32 lanes over blocks of BLOCK values, added into f64 lanes per block (f64 lanes in the
    // inner loop vectorise at half the width; a horizontal sum per block is a chain of scalar
    // adds); values are taken relative to `pivot` so that Σ(l - pivot)² keeps its precision
    // when the logits sit far from 0
    let mut mx = [f32::NEG_INFINITY; LANES];
    let (mut sum_lanes, mut sq_lanes) = ([0f64; LANES], [0f64; LANES]);
    let mut n = [0u32; LANES];
    let blocks = logits.chunks_exact(BLOCK);
    let rest = blocks.remainder();
    for block in blocks {
        let (mut s1, mut s2) = ([0f32; LANES], [0f32; LANES]);
        for c in block.chunks_exact(LANES) {
            for j in 0..LANES {
                let l = c[j];
                let finite = l > f32::NEG_INFINITY;
                let v = if finite { l - pivot } else { 0.0 };
                mx[j] = if l > mx[j] { l } else { mx[j] };
                s1[j] += v;
                s2[j] += v * v;
                n[j] += finite as u32;
            }
        }
        lanes_add(&mut sum_lanes, &s1);
        lanes_add(&mut sq_lanes, &s2);
    }
    let mut max = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let (mut sum, mut sq) = (lanes_total(&sum_lanes), lanes_total(&sq_lanes));
    let mut count = n.iter().map(|&x| x as usize).sum::<usize>();
    for &l in rest {
        if l > f32::NEG_INFINITY {
            let v = (l - pivot) as f64;
            max = max.max(l);
            sum += v;
            sq += v * v;
            count += 1;
        }
    }
    (max, sum, sq, count)
}

multiversion! {
    /// [`finite_moments_at`] over one part of a row, about the given pivot.
    #[allow(dead_code)]
    fn finite_moments_part / finite_moments_part_at(logits: &[f32], pivot: f32) -> (f32, f64, f64, usize) = finite_moments_impl
}

/// Over the finite logits: max, Σ(l - pivot), Σ(l - pivot)² (f64), their count and the pivot
/// (the first finite logit).
pub fn finite_moments(logits: &[f32]) -> (f32, f64, f64, usize, f32) {
    finite_moments_at(Isa::detected(), logits)
}

/// [`finite_moments`] at `isa`; long rows as the two fixed halves of the one-read pass, each on
/// the thread (and core's cache) that wrote it.
pub fn finite_moments_at(isa: Isa, logits: &[f32]) -> (f32, f64, f64, usize, f32) {
    let pivot = logits
        .iter()
        .copied()
        .find(|l| l.is_finite())
        .unwrap_or(0.0);
    let split = split_point(logits.len());
    let (max, sum, sq, count) = if split == 0 {
        finite_moments_part_at(isa, logits, pivot)
    } else {
        let (la, lb) = logits.split_at(split);
        let (a, b) = crate::pool::join(
            || finite_moments_part_at(isa, la, pivot),
            || finite_moments_part_at(isa, lb, pivot),
        );
        (a.0.max(b.0), a.1 + b.1, a.2 + b.2, a.3 + b.3)
    };
    (max, sum, sq, count, pivot)
}

/// Positions of a "head" of the candidates, those within 4, 8, 16, ... nats of the maximum (all
/// of them past 64 nats, where p < 1.6e-28 each), grown until `enough(head, cut)` says it holds
/// the answer. Returns the cut (`-inf` once every candidate is in).
pub fn widen_head(
    cands: &Candidates,
    head: &mut Vec<usize>,
    mut enough: impl FnMut(&[usize], f64) -> bool,
) -> f64 {
    let max = cands.max_logit() as f64;
    let mut width = 4.0;
    loop {
        let cut = if width > 64.0 {
            f64::NEG_INFINITY
        } else {
            max - width
        };
        cands.positions_at_least(cut, head);
        if cut == f64::NEG_INFINITY || enough(head, cut) {
            return cut;
        }
        width *= 2.0;
    }
}

/// Positions of the `k` largest logits (ties: lower id first), in no particular order. Selects
/// among the candidates within 4, 8, 16, ... nats of the maximum, widening only while fewer than
/// `k` qualify ([`widen_head`]), so the usual case touches a few hundred tokens, not the
/// vocabulary.
pub fn top_k_positions(cands: &Candidates, k: usize, out: &mut Vec<usize>) {
    let k = k.min(cands.len());
    widen_head(cands, out, |head, _| head.len() >= k);
    if out.len() < k {
        out.clear();
        out.extend(0..cands.len());
    }
    if k > 0 && k < out.len() {
        out.select_nth_unstable_by(k - 1, |&a, &b| {
            cands.logits[b]
                .total_cmp(&cands.logits[a])
                .then(cands.ids[a].cmp(&cands.ids[b]))
        });
    }
    out.truncate(k);
}

/// Order candidates by a key (ascending), ties broken by lower token id.
#[inline]
fn cmp_key(a: (f64, u32), b: (f64, u32)) -> Ordering {
    a.0.partial_cmp(&b.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// Positions of the candidates in ascending `key` order (ties: lower id first), produced lazily
/// in growing windows: the caller's `visit` is called on each position in order until it returns
/// `false`. Costs O(V) per window instead of a full sort; the window grows 8x when exhausted.
pub fn visit_in_key_order(
    keys: &[f64],
    ids: &[u32],
    order: &mut Vec<usize>,
    mut visit: impl FnMut(usize) -> bool,
) {
    let n = keys.len();
    let mut window = 256.min(n);
    let mut done = 0usize; // how many of the sorted prefix have been visited
    loop {
        order.clear();
        order.extend(0..n);
        if window < n {
            order.select_nth_unstable_by(window - 1, |&a, &b| {
                cmp_key((keys[a], ids[a]), (keys[b], ids[b]))
            });
            order.truncate(window);
        }
        order.sort_unstable_by(|&a, &b| cmp_key((keys[a], ids[a]), (keys[b], ids[b])));
        for &pos in &order[done..] {
            if !visit(pos) {
                return;
            }
        }
        done = order.len();
        if window >= n {
            return;
        }
        window = (window * 8).min(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_f64_exp() {
        let mut worst = 0f64;
        let mut y = -125.0f32;
        while y <= 0.0 {
            let got = exp2_nonpos(y) as f64;
            let want = (y as f64).exp2();
            worst = worst.max(((got - want) / want).abs());
            y += 0.0007;
        }
        assert!(worst < 2e-7, "exp2: worst relative error {worst}");
        let mut x = -86.0f32;
        while x <= 0.0 {
            let got = exp_nonpos(x) as f64;
            let want = (x as f64).exp();
            let err = ((got - want) / want).abs();
            assert!(err < 2e-7 + 7e-8 * x.abs() as f64, "exp({x}): {err}");
            x += 0.0007;
        }
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(-100.0), 0.0);
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp2_nonpos(-1.0), 0.5);
    }

    #[test]
    fn vectorised_stats_match_a_naive_f64_reference() {
        let logits: Vec<f32> = (0..10_007)
            .map(|i| ((i * 7919 % 1000) as f32 / 37.0).sin() * 9.0)
            .collect();
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = logits.iter().map(|&l| (l as f64 - m).exp()).sum();
        let p: Vec<f64> = logits.iter().map(|&l| (l as f64 - m).exp() / z).collect();
        let h: f64 = -p.iter().map(|x| x * x.ln()).sum::<f64>();
        let v: f64 = p.iter().map(|x| x * (-x.ln() - h).powi(2)).sum();
        let s = dist_stats(&logits);
        assert!(
            (s.entropy_nats - h).abs() < 1e-6,
            "{} vs {h}",
            s.entropy_nats
        );
        assert!(
            (s.varentropy_nats2 - v).abs() < 1e-5,
            "{} vs {v}",
            s.varentropy_nats2
        );
        assert_eq!(max_finite(&logits) as f64, m);
    }

    #[test]
    fn entropy_of_uniform_is_ln_v() {
        let s = dist_stats(&[0.0; 8]);
        assert!((s.entropy_nats - 8f64.ln()).abs() < 1e-9);
        assert!(s.varentropy_nats2.abs() < 1e-12);
    }

    #[test]
    fn entropy_ignores_neg_inf() {
        let s = dist_stats(&[1.0, f32::NEG_INFINITY, 1.0]);
        assert!((s.entropy_nats - 2f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn varentropy_matches_definition() {
        let l = [2.0f32, 1.0, 0.0, -1.0];
        let mut p = Vec::new();
        let s = softmax_into(&l, &mut p);
        let h: f64 = -p.iter().map(|x| x * x.ln()).sum::<f64>();
        let v: f64 = p.iter().map(|x| x * (-x.ln() - h).powi(2)).sum();
        assert!((s.entropy_nats - h).abs() < 1e-7);
        assert!((s.varentropy_nats2 - v).abs() < 1e-7);
    }

    #[test]
    fn entropy_at_temperature_matches_softmax() {
        let l = [3.0f32, 1.0, 0.5, -2.0];
        let (h, _) = entropy_at_temperature(&l, 3.0, 0.5);
        let scaled: Vec<f32> = l.iter().map(|x| x / 0.5).collect();
        assert!((h - dist_stats(&scaled).entropy_nats).abs() < 1e-6);
    }

    #[test]
    fn derivative_matches_finite_difference() {
        let l = [3.0f32, 1.0, 0.5, -2.0, 0.1];
        // central difference with a step large enough for f32 exp (rounding ~1e-7)
        let (_, d) = entropy_at_temperature(&l, 3.0, 0.8);
        let (h1, _) = entropy_at_temperature(&l, 3.0, 0.8 - 1e-3);
        let (h2, _) = entropy_at_temperature(&l, 3.0, 0.8 + 1e-3);
        assert!(
            ((h2 - h1) / 2e-3 - d).abs() < 1e-3,
            "{} vs {d}",
            (h2 - h1) / 2e-3
        );
    }

    #[test]
    fn visit_order_matches_full_sort_with_ties() {
        let keys: Vec<f64> = (0..2000).map(|i| ((i * 7919) % 97) as f64).collect();
        let ids: Vec<u32> = (0..2000).collect();
        let mut order = Vec::new();
        let mut seen = Vec::new();
        visit_in_key_order(&keys, &ids, &mut order, |p| {
            seen.push(p);
            true
        });
        let mut expect: Vec<usize> = (0..2000).collect();
        expect.sort_by(|&a, &b| cmp_key((keys[a], ids[a]), (keys[b], ids[b])));
        assert_eq!(seen, expect);
    }

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

    /// A vocabulary-sized row with the shape of real logits: a few high, a long tail, masks.
    fn big_row(n: usize) -> Vec<f32> {
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

    #[test]
    fn every_isa_gives_bit_identical_results() {
        if Isa::cpu() < Isa::Avx512 {
            eprintln!(
                "note: this CPU has no AVX-512; only {:?} compared",
                Isa::available()
            );
        }
        let l = big_row(20_011);
        let m = max_finite_at(Isa::Portable, &l);
        for isa in Isa::available() {
            assert_eq!(max_finite_at(isa, &l).to_bits(), m.to_bits(), "{isa:?}");
            assert_eq!(scan_logits_at(isa, &l), scan_logits_at(Isa::Portable, &l));
            for scale in [1.0f32, 0.7, 1.6] {
                let a = exp_moments_at(Isa::Portable, &l, None, m, scale, None);
                let b = exp_moments_at(isa, &l, None, m, scale, None);
                assert_eq!(
                    (a.0.to_bits(), a.1.to_bits(), a.2.to_bits(), a.3),
                    (b.0.to_bits(), b.1.to_bits(), b.2.to_bits(), b.3),
                    "{isa:?} at scale {scale}"
                );
            }
            let (mut ba, mut bb) = (Vec::new(), Vec::new());
            let a = exp_moments_at(Isa::Portable, &l, None, m, 1.0, Some(&mut ba));
            let b = exp_moments_at(isa, &l, None, m, 1.0, Some(&mut bb));
            assert_eq!(a.0.to_bits(), b.0.to_bits());
            assert_eq!(ba, bb);
            // a pending temperature folded into the pass
            let (mut ba, mut bb) = (Vec::new(), Vec::new());
            let a = exp_moments_at(Isa::Portable, &l, Some(1.3), m * 1.3, 1.0, Some(&mut ba));
            let b = exp_moments_at(isa, &l, Some(1.3), m * 1.3, 1.0, Some(&mut bb));
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits(), a.2.to_bits(), a.3),
                (b.0.to_bits(), b.1.to_bits(), b.2.to_bits(), b.3),
                "{isa:?}, pending scale"
            );
            assert_eq!(ba, bb);
            let (mut va, mut vb) = (Vec::new(), Vec::new());
            values_f32_at(Isa::Portable, &l, 12.5, &mut va, &[]);
            values_f32_at(isa, &l, 12.5, &mut vb, &[]);
            assert_eq!(va, vb, "{isa:?}");
            assert_eq!(
                va,
                l.iter().copied().filter(|&x| x >= 12.5).collect::<Vec<_>>()
            );
            let (mut pa, mut pb) = (Vec::new(), Vec::new());
            positions_f32_at(Isa::Portable, &l, 15.0, &mut pa, &[]);
            positions_f32_at(isa, &l, 15.0, &mut pb, &[]);
            assert_eq!(pa, pb);
            let fa = finite_moments_at(Isa::Portable, &l);
            let fb = finite_moments_at(isa, &l);
            assert_eq!(
                (fa.0.to_bits(), fa.1.to_bits(), fa.2.to_bits(), fa.3),
                (fb.0.to_bits(), fb.1.to_bits(), fb.2.to_bits(), fb.3)
            );
            // rows long enough to be summed in halves
            let long = big_row(SPLIT_MIN + 777);
            let lm = max_finite(&long);
            let fa = finite_moments_at(Isa::Portable, &long);
            let fb = finite_moments_at(isa, &long);
            assert_eq!(
                (fa.0.to_bits(), fa.1.to_bits(), fa.2.to_bits(), fa.3),
                (fb.0.to_bits(), fb.1.to_bits(), fb.2.to_bits(), fb.3),
                "{isa:?}, long row"
            );
            let a = exp_moments_at(Isa::Portable, &long, None, lm, 0.9, None);
            let b = exp_moments_at(isa, &long, None, lm, 0.9, None);
            assert_eq!(
                (a.0.to_bits(), a.3),
                (b.0.to_bits(), b.3),
                "{isa:?}, long row"
            );
            let (mut sa, mut sb) = (l.clone(), l.clone());
            scale_in_place_at(Isa::Portable, &mut sa, 1.0 / 0.7);
            scale_in_place_at(isa, &mut sb, 1.0 / 0.7);
            assert!(sa.iter().zip(&sb).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert_eq!(
                first_position_of_at(isa, &l, m),
                l.iter().position(|&x| x == m)
            );
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
    fn selective_filters_match_a_plain_scan() {
        let l = big_row(10_000);
        for cut in [f64::NEG_INFINITY, -11.5, 0.1, 17.999_999_9, 19.0, 30.0] {
            let mut pos = Vec::new();
            let mut plain = Candidates::default();
            plain.fill(&l);
            plain.positions_at_least(cut, &mut pos);
            let want: Vec<usize> = (0..l.len()).filter(|&i| l[i] as f64 >= cut).collect();
            assert_eq!(pos, want, "cut {cut}");
            let mut c = Candidates::default();
            c.fill(&l);
            c.retain_at_least(cut);
            assert_eq!(c.ids, want.iter().map(|&i| i as u32).collect::<Vec<_>>());
        }
        let mut c = Candidates::default();
        c.fill(&l);
        c.retain_where(0.0, |x| x < 10.0);
        let want: Vec<u32> = (0..l.len() as u32)
            .filter(|&i| (0.0..10.0).contains(&l[i as usize]))
            .collect();
        assert_eq!(c.ids, want);
    }

    #[test]
    fn one_read_statistics_match_an_f64_reference_and_catch_bad_logits() {
        use crate::strategy::SampleError;
        let reference = |l: &[f32]| {
            let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = l.iter().map(|&x| (x as f64 - m).exp()).sum();
            let p: Vec<f64> = l.iter().map(|&x| (x as f64 - m).exp() / z).collect();
            let h: f64 = -p
                .iter()
                .filter(|&&x| x > 0.0)
                .map(|x| x * x.ln())
                .sum::<f64>();
            let v: f64 = p
                .iter()
                .filter(|&&x| x > 0.0)
                .map(|x| x * (-x.ln() - h).powi(2))
                .sum();
            (m + z.ln(), h, v)
        };
        // the maximum rises late (early blocks are rescaled), masked blocks come first, and
        // long rows are summed in halves
        let mut rising: Vec<f32> = (0..5_000).map(|i| i as f32 * 0.004 - 15.0).collect();
        rising[..700].fill(f32::NEG_INFINITY);
        for l in [big_row(9_999), rising, big_row(SPLIT_MIN + 4_321)] {
            let mut c = Candidates::default();
            let st = c.check_and_fill(&l).unwrap();
            let (log_z, h, v) = reference(&l);
            assert!((st.log_z - log_z).abs() < 1e-5, "{} vs {log_z}", st.log_z);
            assert!(
                (st.entropy_nats - h).abs() < 1e-5,
                "{} vs {h}",
                st.entropy_nats
            );
            assert!(
                (st.varentropy_nats2 - v).abs() < 1e-4,
                "{} vs {v}",
                st.varentropy_nats2
            );
            assert_eq!(c.logits, l);
            assert_eq!(c.known_block_max().len(), l.len().div_ceil(BLOCK));
            // every ISA gives the same bits
            for isa in Isa::available() {
                let (mut b1, mut b2, mut c1, mut c2) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let a = fused_stats_at(Isa::Portable, &l, &mut b1, &mut c1);
                let b = fused_stats_at(isa, &l, &mut b2, &mut c2);
                let (ta, tb) = (a.totals(), b.totals());
                assert_eq!(
                    (ta.0.to_bits(), ta.1.to_bits(), ta.2.to_bits()),
                    (tb.0.to_bits(), tb.1.to_bits(), tb.2.to_bits()),
                    "{isa:?}"
                );
                assert_eq!(b1, b2);
                assert!(c2.iter().zip(&l).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
        let mut c = Candidates::default();
        let mut l = big_row(3_000);
        l[2_345] = f32::NAN;
        assert_eq!(c.check_and_fill(&l), Err(SampleError::NanLogit(2_345)));
        l[2_345] = 0.0;
        l[17] = f32::INFINITY;
        assert_eq!(c.check_and_fill(&l), Err(SampleError::InfiniteLogit(17)));
        assert_eq!(
            c.check_and_fill(&[f32::NEG_INFINITY; 300]),
            Err(SampleError::NoCandidate)
        );
        assert_eq!(c.check_and_fill(&[]), Err(SampleError::Empty));
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
    fn integer_key_selection_is_total_order_selection() {
        let mut v: Vec<f32> = big_row(5_000);
        v.extend([
            0.0,
            -0.0,
            f32::NEG_INFINITY,
            -1e-30,
            1e-30,
            f32::MAX,
            -f32::MAX,
        ]);
        let mut sorted = v.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        for i in [0, 1, 7, 100, 2_500, v.len() - 3, v.len() - 1] {
            let mut w = v.clone();
            let x = select_desc(&mut w, i);
            assert_eq!(x.to_bits(), sorted[i].to_bits(), "rank {i}");
            assert!(w[..i].iter().all(|a| a.total_cmp(&x).is_ge()), "rank {i}");
            // the values themselves survive the round trip through the keys
            w.sort_by(|a, b| b.total_cmp(a));
            assert!(w
                .iter()
                .zip(&sorted)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn kth_largest_matches_a_sort() {
        let l = big_row(9_000);
        let mut sorted = l.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut vals = Vec::new();
        for k in [1, 2, 40, 500, 8_000, 9_000] {
            assert_eq!(kth_largest(&l, k, &mut vals), sorted[k - 1], "k = {k}");
        }
    }

    /// Every cut of the k-th largest (block maxima, strided sample, widening) on a long row,
    /// with and without the blocks' maxima, and the vectorised threshold filter against the
    /// generic one on the full set and on a compacted one.
    #[test]
    fn kth_largest_and_threshold_filters_on_long_rows() {
        let l = big_row(70_001);
        let mut sorted = l.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut c = Candidates::default();
        c.check_and_fill(&l).unwrap();
        assert!(!c.known_block_max().is_empty());
        let mut vals = Vec::new();
        for k in [1, 5, 300, 137, 600, 5_000, 40_000, 61_000, 69_999, 70_001] {
            assert_eq!(
                c.kth_largest(k, &mut vals),
                sorted[k - 1],
                "k = {k}, blocks"
            );
            assert_eq!(kth_largest(&l, k, &mut vals), sorted[k - 1], "k = {k}");
        }
        let mut top = Vec::new();
        c.largest_values(100, &mut top);
        assert_eq!(top, sorted[..100]);
        // the values above a cut, read as two halves (with and without the blocks' maxima)
        for cut in [
            sorted[0],
            sorted[17],
            sorted[4_000],
            sorted[69_000],
            f32::NEG_INFINITY,
        ] {
            let plain: Vec<f32> = l.iter().copied().filter(|&x| x >= cut).collect();
            c.values_at_least(cut as f64, &mut vals);
            assert_eq!(vals, plain, "cut {cut}, blocks");
            values_f32(&l, cut, &mut vals, &[]);
            assert_eq!(vals, plain, "cut {cut}");
        }
        for cut in [
            sorted[0],
            sorted[17],
            sorted[4_000],
            sorted[69_000],
            f32::NEG_INFINITY,
        ] {
            let (mut a, mut b) = (c.clone(), c.clone());
            a.retain_ge(cut);
            b.retain_where(cut, |_| true);
            assert_eq!((&a.ids, &a.logits), (&b.ids, &b.logits), "cut {cut}");
            // and again on the compacted set (ids no longer the identity)
            let lower = sorted[100];
            let (mut a2, mut b2) = (a.clone(), b.clone());
            a2.retain_ge(lower);
            b2.retain_where(lower, |_| true);
            assert_eq!(
                (&a2.ids, &a2.logits),
                (&b2.ids, &b2.logits),
                "cut {cut}, then {lower}"
            );
        }
    }

    #[test]
    fn finite_moments_match_an_f64_reference_on_long_rows() {
        // two halves summed apart (one past the split, -inf entries in both, values far from 0)
        let mut l: Vec<f32> = big_row(SPLIT_MIN * 2 + 301)
            .iter()
            .map(|x| x + 1000.0)
            .collect();
        for i in (0..l.len()).step_by(97) {
            l[i] = f32::NEG_INFINITY;
        }
        l[0] = f32::NEG_INFINITY;
        let (max, sum, sq, count, pivot) = finite_moments(&l);
        let finite: Vec<f64> = l
            .iter()
            .filter(|x| x.is_finite())
            .map(|&x| x as f64)
            .collect();
        let n = finite.len() as f64;
        let mean = finite.iter().sum::<f64>() / n;
        let var = finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert_eq!(pivot, l[1]);
        assert_eq!(count, finite.len());
        assert_eq!(max as f64, finite.iter().cloned().fold(f64::MIN, f64::max));
        let m = sum / count as f64;
        assert!((m + pivot as f64 - mean).abs() < 1e-9 * mean.abs(), "mean");
        let v = sq / count as f64 - m * m;
        assert!((v - var).abs() < 1e-5 * var, "variance {v} vs {var}");
    }

    #[test]
    fn f32_threshold_is_exact() {
        for cut in [0.1f64, -3.3, 1e-40, 1e39, -1e39, 2.5, f64::NEG_INFINITY] {
            let c = f32_at_least(cut);
            assert!(c as f64 >= cut, "{cut}");
            assert!(
                c == f32::NEG_INFINITY || (c.next_down() as f64) < cut,
                "{cut}"
            );
        }
        assert!(f32_at_least(f64::NAN).is_nan());
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
}
