//! `top_a`: remove tokens with p < a · p_max² (BlinkDL's RWKV sampler; text-generation-webui's
//! `TopALogitsWarper`, koboldcpp's `top_a`). The threshold falls quadratically with the model's
//! confidence: a sure step (p_max near 1) cuts like min_p = a, an unsure one keeps far more.
//! The top token always stays (p_max >= a · p_max² since a <= 1 and p_max <= 1).
//!
//! In logit space (no softmax): p_i >= a · p_max²  <=>  l_i >= ln a + 2·l_max − log Z. One pass
//! for log Z, one to cut. This file is the worked example of README's "Adding a strategy": the
//! unit, its registry line, its tests (including its promise on real Gemma 3 rows).

use super::kernels::Candidates;
use super::unit::{Param, ProcSpec, Range, Simple, Stateless};
use super::{Effect, Processor, Scratch, StepCtx};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TopA {
    pub top_a: f64,
}

pub const PARAM: Param = Param {
    key: "top_a",
    abbrev: "a",
    range: Range::Probability,
    example: "0.2",
};

pub const SIMPLE: Simple = Simple {
    param: PARAM,
    kind: true,
    examples: &["{kind: top_a, top_a: 0.2}"],
    make: |top_a| ProcSpec::new(TopA { top_a }),
};

impl Stateless for TopA {
    const OP: &'static str = "top_a";
}

impl Processor for TopA {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if self.top_a <= 0.0 || cands.len() <= 1 {
            return Effect::default();
        }
        let stats = cands.stats();
        let max = stats.max_logit as f64;
        let cut = self.top_a.ln() + 2.0 * max - stats.log_z;
        cands.retain_at_least(cut.min(max));
        Effect::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;
    use crate::strategy::Sampler;

    #[test]
    fn quadratic_threshold_by_hand() {
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        // a = 0.5: 0.5 · 0.25 = 0.125 keeps .5, .3, .15
        assert_close(
            &final_probs(Box::new(TopA { top_a: 0.5 }), &l),
            &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
            1e-6,
        );
        // a = 1: 0.25 keeps .5, .3
        assert_close(
            &final_probs(Box::new(TopA { top_a: 1.0 }), &l),
            &[0.625, 0.375, 0.0, 0.0],
            1e-6,
        );
        // a = 0.1: 0.025 keeps all
        assert_close(
            &final_probs(Box::new(TopA { top_a: 0.1 }), &l),
            &[0.5, 0.3, 0.15, 0.05],
            1e-6,
        );
    }

    /// The promise on real distributions: on Gemma 3 rows (262,144 logits, three entropies),
    /// the kept set is exactly {p >= a · p_max²} computed in f64 from the raw logits (tokens
    /// within 1e-9 relative of the threshold are not judged), and the kept tokens keep their
    /// relative probabilities.
    #[test]
    fn keeps_exactly_the_quadratic_set_on_real_rows() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/fixtures/gemma3-270m-logits.f16");
        let rows = crate::bench::read_logit_fixture(&path).unwrap();
        for row in &rows {
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &l| a.max(l as f64));
            let z: f64 = row.iter().map(|&l| (l as f64 - m).exp()).sum();
            let p: Vec<f64> = row.iter().map(|&l| (l as f64 - m).exp() / z).collect();
            let p_max = p.iter().cloned().fold(0.0, f64::max);
            for a in [0.01, 0.1, 0.2, 0.5, 1.0] {
                let threshold = a * p_max * p_max;
                let d = Sampler::new(Box::new(TopA { top_a: a }))
                    .final_distribution(row)
                    .unwrap();
                let kept_mass: f64 = p.iter().filter(|&&x| x >= threshold).sum();
                let mut kept = 0;
                for (i, (&pi, &qi)) in p.iter().zip(&d.probs).enumerate() {
                    if (pi - threshold).abs() <= 1e-9 * threshold {
                        continue;
                    }
                    if pi >= threshold {
                        kept += 1;
                        let want = pi / kept_mass;
                        assert!(
                            (qi - want).abs() <= 1e-6 * want.max(1e-12) + 1e-12,
                            "a={a} token {i}: {qi} vs {want}"
                        );
                    } else {
                        assert_eq!(qi, 0.0, "a={a} token {i}: p {pi} < {threshold} was kept");
                    }
                }
                assert!(kept >= 1 && d.kept >= kept, "a={a}: {kept} vs {}", d.kept);
            }
        }
    }
}
