//! Decoding strategies: the per-sample, stateful samplers declab compares.
//!
//! The protocol follows llama.cpp's sampler chain: every processor has `apply` (rewrite the
//! candidate set), `accept` (observe the chosen token) and `reset` (start a new sample). A
//! [`Chain`] is itself a processor. A [`Sampler`] wraps one processor tree with the terminal
//! categorical draw and produces per-step diagnostics ([`StepInfo`]).
//!
//! No I/O here, and no RNG of its own: the caller passes the sample's seeded ChaCha stream.
//! No processor sorts the whole vocabulary (Gemma's is 262,144 tokens); selections work on a
//! "head" of the candidates near the maximum ([`kernels::widen_head`]) with windowed
//! `select_nth_unstable` ([`kernels::visit_in_key_order`]).

mod chain;
pub mod dynatemp;
pub mod edt;
pub mod entropy_switch;
pub mod epsilon;
pub mod greedy;
pub mod kernels;
pub mod min_p;
pub mod mirostat;
pub mod registry;
pub mod repetition;
mod spec;
pub mod target_entropy;
pub mod temperature;
pub mod top_a;
pub mod top_k;
pub mod top_n_sigma;
pub mod top_p;
pub mod typical;
pub mod unit;

pub use chain::Chain;
pub use spec::{build, QuantileParam, StrategySpec};
pub use target_entropy::{solve_temperature, Signal, SolveFlag, TargetEntropy, TargetMode};
pub use unit::{Facts, PathError, ProcSpec, Unit};

use kernels::{Candidates, DistStats};
use rand::Rng;
use rand_chacha::ChaCha20Rng;

/// What one processor did at a step, beyond shrinking the candidate set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Effect {
    /// Temperature the processor divided the logits by (multiplied along a chain).
    pub temperature: Option<f64>,
    /// Branch taken by a switching strategy.
    pub branch: Option<&'static str>,
    /// Controller state (mirostat's mu in bits, a feedback controller's temperature, ...).
    pub controller: Option<f64>,
    /// How target_entropy's solve ended at this step.
    pub solve: Option<SolveFlag>,
}

impl Effect {
    pub fn temperature(t: f64) -> Self {
        Effect {
            temperature: Some(t),
            ..Default::default()
        }
    }

    /// Combine the effect of a later processor into this one.
    pub fn then(mut self, later: Effect) -> Self {
        self.temperature = match (self.temperature, later.temperature) {
            (Some(a), Some(b)) => Some(a * b),
            (a, b) => a.or(b),
        };
        self.branch = later.branch.or(self.branch);
        self.controller = later.controller.or(self.controller);
        self.solve = later.solve.or(self.solve);
        self
    }
}

/// Read-only facts about the current step that processors may use.
#[derive(Debug, Clone, Copy)]
pub struct StepCtx<'a> {
    /// The model's unmodified logits for this step.
    pub logits: &'a [f32],
    /// Entropy/varentropy of the unmodified distribution.
    pub base: DistStats,
    pub vocab_size: usize,
}

/// What the chain's processors learn about the token that was drawn.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub token: u32,
    /// Probability of the token under the final (sampled-from) distribution.
    pub p_final: f64,
    /// Probability of the token under the unmodified distribution.
    pub p_base: f64,
    /// Entropy (nats) of the final distribution.
    pub final_entropy_nats: f64,
}

/// A logits processor (llama.cpp's `llama_sampler_i` without the terminal draw).
pub trait Processor: Send {
    /// Rewrite the candidate set in place.
    fn apply(&mut self, cands: &mut Candidates, ctx: &StepCtx, scratch: &mut Scratch) -> Effect;
    /// Observe the chosen token (after the draw).
    fn accept(&mut self, _accepted: &Accepted) {}
    /// Forget per-sample state; `prompt` holds the prompt's token ids.
    fn reset(&mut self, _prompt: &[u32]) {}
}

/// Reusable buffers shared by processors within one step.
#[derive(Debug, Default)]
pub struct Scratch {
    pub keys: Vec<f64>,
    pub order: Vec<usize>,
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

/// Per-step diagnostics recorded in the traces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    pub token: u32,
    /// Entropy of the model's unmodified distribution (nats).
    pub entropy_nats: f64,
    /// Varentropy of the unmodified distribution (nats²).
    pub varentropy_nats2: f64,
    /// Product of the temperatures applied; 0 when the step was greedy; 1 when none.
    pub temperature: f64,
    /// Entropy of the distribution actually sampled from (nats).
    pub final_entropy_nats: f64,
    /// Candidates with non-zero final probability.
    pub kept: u32,
    /// ln p of the chosen token under the unmodified distribution.
    pub logprob: f64,
    /// p of the chosen token under the final distribution.
    pub p_final: f64,
    /// Self-certainty of the unmodified distribution: KL(U ‖ p) (nats), see [`Confidence`].
    pub self_certainty: f64,
    /// DeepConf's token confidence of the unmodified distribution (nats), see [`Confidence`].
    pub confidence: f64,
    pub branch: Option<&'static str>,
    pub controller: Option<f64>,
    /// How target_entropy's solve ended, on steps where one ran.
    pub solve: Option<SolveFlag>,
}

/// How many of the most likely tokens DeepConf's token confidence averages over (its reference
/// implementation asks vLLM for 20 logprobs).
pub const CONFIDENCE_TOP_K: usize = 20;

/// Confidence statistics of the model's unmodified next-token distribution p, for the
/// best-of-N selectors ([`crate::select`]), taken in the step's one read of the logits (the
/// finite logits' sum is summed there; the top 20 come from the blocks' maxima it records).
///
/// * `self_certainty` = KL(U ‖ p) = −ln V − (1/V) Σ_j ln p_j over the V finite (unmasked) logits:
///   Kang et al. 2025, "Scalable Best-of-N Selection for Large Language Models via
///   Self-Certainty", eq. 3 (a masked token would make it infinite, so masks are left out of U).
///   0 for a uniform p, large for a peaked one.
/// * `confidence` = −(1/k) Σ_{j ≤ k} ln p_(j) over the k = min(20, V) most likely tokens: Fu et
///   al. 2025, "Deep Think with Confidence" (DeepConf), token confidence C_i. Large when the
///   head is peaked (one likely token, the rest of the top 20 far below).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    pub self_certainty: f64,
    pub confidence: f64,
}

impl Confidence {
    /// From a filled candidate set (the full row, right after [`Candidates::check_and_fill`])
    /// and its statistics; `top` is scratch.
    pub fn of_row(cands: &Candidates, base: &DistStats, top: &mut Vec<f32>) -> Confidence {
        let (mean_logit, v) = cands.row_mean_logit();
        let k = CONFIDENCE_TOP_K.min(v).max(1);
        cands.largest_values(k, top);
        // descending order: the sum does not depend on how the selection left them
        let top_sum: f64 = top.iter().map(|&l| l as f64).sum();
        Confidence {
            self_certainty: base.log_z - mean_logit - (v.max(1) as f64).ln(),
            confidence: base.log_z - top_sum / k as f64,
        }
    }
}

impl StepInfo {
    pub fn p_base(&self) -> f64 {
        self.logprob.exp()
    }
}

/// Why a step could not be sampled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error("the logits contain NaN at token {0}")]
    NanLogit(usize),
    #[error("the logits contain +infinity at token {0}")]
    InfiniteLogit(usize),
    #[error("every logit is -infinity: no token can be sampled")]
    NoCandidate,
    #[error("the logits are empty")]
    Empty,
    #[error("token {0} is outside the vocabulary of {1}")]
    TokenOutOfRange(u32, usize),
}

/// Check logits at the boundary: NaN and +inf are rejected, -inf means "masked".
pub fn check_logits(logits: &[f32]) -> Result<(), SampleError> {
    kernels::check_and_max(logits).map(|_| ())
}

/// The final distribution at one step, for inspection (`declab dist`) and tests.
#[derive(Debug, Clone)]
pub struct FinalDist {
    /// Probability per vocabulary entry (0 for removed tokens).
    pub probs: Vec<f64>,
    pub entropy_nats: f64,
    pub temperature: f64,
    pub kept: usize,
    pub effect: Effect,
}

/// A complete per-sample sampler: a processor tree plus the terminal categorical draw.
///
/// The step buffers (candidates, processor scratch, the draw's block sums: ~3 MiB at vocab
/// 262,144) are per thread, not per sampler: a batch's rows are sampled on the few threads of
/// the pool, so a batch of 32 holds three sets instead of 32. Nothing in them outlives a step.
pub struct Sampler {
    root: Box<dyn Processor>,
    /// A step of this sample rewrote the whole row: copy each row as it is read from then on
    /// (memory traffic only; the values are the same either way).
    copy_row: bool,
}

/// One thread's step buffers (see [`Sampler`]).
#[derive(Default)]
struct Workspace {
    cands: Candidates,
    scratch: Scratch,
}

impl Workspace {
    /// The step's one read of the model's row: the full candidate set, the unmodified
    /// distribution's statistics and the selectors' confidence fields. Sampling and teacher
    /// forcing both start here, so they record the same values for the same logits. The row is
    /// read where it is, not copied ([`Candidates::check_and_view`]): every caller ends the view
    /// ([`Candidates::end_view`]) before it returns, while `logits` is still borrowed.
    /// With `copy`, the row is copied as it is read ([`Candidates::check_and_fill`]), for a
    /// strategy whose last step rewrote the whole row anyway.
    fn read_row(
        &mut self,
        logits: &[f32],
        copy: bool,
    ) -> Result<(DistStats, Confidence), SampleError> {
        let base = if copy {
            self.cands.check_and_fill(logits)?
        } else {
            // SAFETY: see above; nothing writes `logits` while it is borrowed
            unsafe { self.cands.check_and_view(logits) }?
        };
        let conf = Confidence::of_row(&self.cands, &base, &mut self.scratch.logits);
        Ok((base, conf))
    }
}

thread_local! {
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

impl Sampler {
    pub fn new(root: Box<dyn Processor>) -> Self {
        Sampler {
            root,
            copy_row: false,
        }
    }

    pub fn reset(&mut self, prompt: &[u32]) {
        self.copy_row = false;
        self.root.reset(prompt);
    }

    /// Apply the processors to `logits`; leaves the final candidates (in token-id order) in
    /// `w.cands` and returns the base and final distribution summaries.
    fn apply(
        &mut self,
        w: &mut Workspace,
        logits: &[f32],
    ) -> Result<(DistStats, Confidence, Effect, kernels::FinalStats), SampleError> {
        let (base, conf) = w.read_row(logits, self.copy_row)?;
        let ctx = StepCtx {
            logits,
            base,
            vocab_size: logits.len(),
        };
        let effect = self.root.apply(&mut w.cands, &ctx, &mut w.scratch);
        // sticky: a strategy whose steps rewrite the row only some of the time (entropy_switch
        // with a temperature in one branch) pays more for a switch than it saves on a view
        self.copy_row |= w.cands.rewrote_row();
        w.cands.sort_by_id();
        // one exp pass, with a temperature still pending folded in (or cached by a processor
        // that evaluated this very set); no step reads the final varentropy
        let fin = w.cands.draw_stats();
        if fin.kept == 0 {
            return Err(SampleError::NoCandidate);
        }
        Ok((base, conf, effect, fin))
    }

    /// One decoding step: apply, draw with `rng`, accept. The draw walks the final
    /// distribution in token-id order (inverse CDF, one uniform f64), so it does not depend on
    /// how processors ordered the candidates, and it never materialises the probabilities.
    pub fn sample(
        &mut self,
        logits: &[f32],
        rng: &mut ChaCha20Rng,
    ) -> Result<StepInfo, SampleError> {
        let (base, conf, effect, fin, token, weight) = WORKSPACE.with_borrow_mut(|w| {
            let r = self.apply(w, logits).map(|(base, conf, effect, fin)| {
                let u: f64 = rng.random();
                let (pos, weight) = w.cands.draw(u);
                (base, conf, effect, fin, w.cands.ids[pos], weight)
            });
            w.cands.end_view();
            r
        })?;
        let p_final = weight / fin.sum;
        let logprob = base.log_prob(logits[token as usize]);
        let accepted = Accepted {
            token,
            p_final,
            p_base: logprob.exp(),
            final_entropy_nats: fin.stats.entropy_nats,
        };
        self.root.accept(&accepted);
        Ok(StepInfo {
            token,
            entropy_nats: base.entropy_nats,
            varentropy_nats2: base.varentropy_nats2,
            temperature: effect.temperature.unwrap_or(1.0),
            final_entropy_nats: fin.stats.entropy_nats,
            kept: fin.kept as u32,
            logprob,
            p_final,
            self_certainty: conf.self_certainty,
            confidence: conf.confidence,
            branch: effect.branch,
            controller: effect.controller,
            solve: effect.solve,
        })
    }

    /// The final distribution over the whole vocabulary at this step, without drawing.
    pub fn final_distribution(&mut self, logits: &[f32]) -> Result<FinalDist, SampleError> {
        let mut probs = vec![0.0; logits.len()];
        let (effect, fin) = WORKSPACE.with_borrow_mut(|w| {
            let r = self.apply(w, logits).map(|(_, _, effect, fin)| {
                let m = fin.stats.max_logit;
                w.cands.settle(); // the values the final pass used, so `fin` still holds
                for (&id, &l) in w.cands.ids.iter().zip(w.cands.logits()) {
                    probs[id as usize] = kernels::exp_nonpos(l - m) as f64 / fin.sum;
                }
                (effect, fin)
            });
            w.cands.end_view();
            r
        })?;
        Ok(FinalDist {
            probs,
            entropy_nats: fin.stats.entropy_nats,
            temperature: effect.temperature.unwrap_or(1.0),
            kept: fin.kept,
            effect,
        })
    }
}

/// What a teacher-forced step records: the trace fields of the model's unmodified distribution
/// for a token that was given, not drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForcedStep {
    pub entropy_nats: f64,
    pub varentropy_nats2: f64,
    /// ln p of the given token.
    pub logprob: f64,
    pub conf: Confidence,
}

/// The trace fields of `logits` for the given `token`, with the kernels a sampling step uses
/// (the same one read, on the same thread-local buffers), so a teacher-forced text gets the
/// very values its generation recorded when the logits are the same.
pub fn forced_step(logits: &[f32], token: u32) -> Result<ForcedStep, SampleError> {
    let l = *logits
        .get(token as usize)
        .ok_or(SampleError::TokenOutOfRange(token, logits.len()))?;
    WORKSPACE.with_borrow_mut(|w| {
        let r = w.read_row(logits, false).map(|(base, conf)| ForcedStep {
            entropy_nats: base.entropy_nats,
            varentropy_nats2: base.varentropy_nats2,
            logprob: base.log_prob(l),
            conf,
        });
        w.cands.end_view();
        r
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// Final distribution of a processor on hand-made logits.
    pub fn final_probs(p: Box<dyn Processor>, logits: &[f32]) -> Vec<f64> {
        Sampler::new(p)
            .final_distribution(logits)
            .expect("valid logits")
            .probs
    }

    /// Softmax reference (f64) over the given subset, for expected values.
    pub fn softmax_subset(logits: &[f32], keep: &[usize], t: f64) -> Vec<f64> {
        let m = keep
            .iter()
            .map(|&i| logits[i] as f64 / t)
            .fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = keep.iter().map(|&i| (logits[i] as f64 / t - m).exp()).sum();
        let mut out = vec![0.0; logits.len()];
        for &i in keep {
            out[i] = (logits[i] as f64 / t - m).exp() / z;
        }
        out
    }

    pub fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol,
                "index {i}: {x} vs {y} (all: {a:?} vs {b:?})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn rejects_bad_logits() {
        assert_eq!(check_logits(&[]), Err(SampleError::Empty));
        assert_eq!(
            check_logits(&[0.0, f32::NAN]),
            Err(SampleError::NanLogit(1))
        );
        assert_eq!(
            check_logits(&[f32::INFINITY]),
            Err(SampleError::InfiniteLogit(0))
        );
        assert_eq!(
            check_logits(&[f32::NEG_INFINITY; 3]),
            Err(SampleError::NoCandidate)
        );
    }

    #[test]
    fn frequency_of_draws_matches_final_distribution() {
        let logits = [1.0f32, 0.5, 0.0, -1.0, 2.0];
        let mut s = Sampler::new(build(
            &[ProcSpec::new(temperature::Temperature { temperature: 0.8 })],
            logits.len(),
        ));
        let fin = s.final_distribution(&logits).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut counts = [0usize; 5];
        let n = 100_000;
        for _ in 0..n {
            counts[s.sample(&logits, &mut rng).unwrap().token as usize] += 1;
        }
        for (i, (&c, &p)) in counts.iter().zip(&fin.probs).enumerate() {
            let f = c as f64 / n as f64;
            // 5 standard errors of a binomial proportion
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((f - p).abs() < 5.0 * se + 1e-9, "token {i}: {f} vs {p}");
        }
    }

    /// The step buffers are per thread: samplers interleaved on one thread (as a batch's rows
    /// are) give exactly what each gives alone, over vocabularies of different sizes.
    #[test]
    fn interleaved_samplers_share_the_thread_buffers_without_mixing() {
        let specs = [
            vec![
                ProcSpec::new(top_k::TopK { top_k: 5 }),
                ProcSpec::new(temperature::Temperature { temperature: 1.3 }),
            ],
            vec![ProcSpec::new(temperature::Temperature { temperature: 0.7 })],
        ];
        let rows: Vec<Vec<f32>> = (0..2)
            .map(|r| {
                let n = [70_000, 300][r];
                (0..n)
                    .map(|i| ((i * 7919 + r * 13) % 1000) as f32 / 100.0)
                    .collect()
            })
            .collect();
        let run = |which: &[usize]| -> Vec<Vec<u32>> {
            let mut samplers: Vec<Sampler> = specs
                .iter()
                .zip(&rows)
                .map(|(s, row)| Sampler::new(build(s, row.len())))
                .collect();
            let mut rngs: Vec<ChaCha20Rng> = (0..2).map(ChaCha20Rng::seed_from_u64).collect();
            let mut out = vec![Vec::new(); 2];
            for _ in 0..20 {
                for &j in which {
                    let t = samplers[j].sample(&rows[j], &mut rngs[j]).unwrap().token;
                    out[j].push(t);
                }
            }
            out
        };
        let both = run(&[0, 1]);
        assert_eq!(both[0], run(&[0])[0]);
        assert_eq!(both[1], run(&[1])[1]);
    }

    /// f64 reference of the confidence fields: KL(U ‖ p) over the finite logits and −mean ln p
    /// of the 20 most likely tokens.
    fn confidence_reference(row: &[f32]) -> (f64, f64) {
        let fin: Vec<f64> = row
            .iter()
            .filter(|l| l.is_finite())
            .map(|&l| l as f64)
            .collect();
        let m = fin.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_z = m + fin.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        let v = fin.len() as f64;
        let kl = -v.ln() - fin.iter().map(|l| l - log_z).sum::<f64>() / v;
        let mut sorted = fin.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let k = 20.min(sorted.len());
        let conf = -sorted[..k].iter().map(|l| l - log_z).sum::<f64>() / k as f64;
        (kl, conf)
    }

    /// The selectors' per-step fields on real Gemma 3 rows (262,144 logits, low to high
    /// entropy) and on masked and short rows, against the f64 reference; sampling and teacher
    /// forcing record the same bits.
    #[test]
    fn confidence_fields_match_an_f64_reference_on_real_rows() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/fixtures/gemma3-270m-logits.f16");
        let mut rows = crate::bench::read_logit_fixture(&path).unwrap();
        let mut masked = rows[0].clone();
        for (i, l) in masked.iter_mut().enumerate() {
            if i % 3 == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
        rows.push(masked);
        rows.push(vec![1.0, 2.0, 0.5, f32::NEG_INFINITY, 3.0]);
        rows.push(vec![0.25; 40]); // uniform: KL 0, confidence ln 40
        for row in &rows {
            let (kl, conf) = confidence_reference(row);
            let token = row.iter().position(|l| l.is_finite()).unwrap() as u32;
            let step = Sampler::new(Box::new(greedy::Greedy))
                .sample(row, &mut ChaCha20Rng::seed_from_u64(1))
                .unwrap();
            let tol = 2e-5 * kl.abs().max(1.0);
            assert!(
                (step.self_certainty - kl).abs() < tol,
                "{} vs {kl}",
                step.self_certainty
            );
            assert!(
                (step.confidence - conf).abs() < 2e-5 * conf.max(1.0),
                "{} vs {conf}",
                step.confidence
            );
            let forced = forced_step(row, step.token).unwrap();
            assert_eq!(
                forced.conf,
                Confidence {
                    self_certainty: step.self_certainty,
                    confidence: step.confidence
                }
            );
            assert_eq!(forced.logprob, step.logprob);
            assert_eq!(forced.entropy_nats, step.entropy_nats);
            assert!(forced_step(row, token).is_ok());
        }
        let uniform = forced_step(&[0.25; 40], 3).unwrap();
        assert!(uniform.conf.self_certainty.abs() < 1e-6);
        assert!((uniform.conf.confidence - 40f64.ln()).abs() < 1e-6);
        assert_eq!(
            forced_step(&[0.0; 4], 4),
            Err(SampleError::TokenOutOfRange(4, 4))
        );
    }
}
