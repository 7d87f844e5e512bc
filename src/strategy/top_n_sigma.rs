//! `top_n_sigma`: Tang et al. 2024 ("Top-nσ: Not All Logits Are You Need") as implemented in
//! llama.cpp (`llama_sampler_top_n_sigma_apply`): keep logits >= max - n·σ, where σ is the
//! population standard deviation over the finite logits of the current candidates. n <= 0 is
//! a no-op. The mask is invariant to temperature applied before it.

use super::kernels::Candidates;
use super::{Effect, Processor, Scratch, StepCtx};

#[derive(Debug)]
pub struct TopNSigma {
    pub n: f64,
}

impl Processor for TopNSigma {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if self.n <= 0.0 || cands.len() <= 1 {
            return Effect::default();
        }
        // one lane-split pass (vectorises): max, Σl, Σl², count over the finite logits
        const LANES: usize = 16;
        let (mut mx, mut s1, mut s2, mut n) = (
            [f32::NEG_INFINITY; LANES],
            [0f64; LANES],
            [0f64; LANES],
            [0u32; LANES],
        );
        let chunks = cands.logits.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..LANES {
                let l = c[j];
                let finite = l > f32::NEG_INFINITY;
                let v = if finite { l as f64 } else { 0.0 };
                mx[j] = if l > mx[j] { l } else { mx[j] };
                s1[j] += v;
                s2[j] += v * v;
                n[j] += finite as u32;
            }
        }
        let mut max = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let (mut sum, mut sq): (f64, f64) = (s1.iter().sum(), s2.iter().sum());
        let mut count: usize = n.iter().map(|&x| x as usize).sum();
        for &l in rest {
            if l > f32::NEG_INFINITY {
                max = max.max(l as f64);
                sum += l as f64;
                sq += (l as f64) * (l as f64);
                count += 1;
            }
        }
        if count == 0 {
            return Effect::default();
        }
        let mean = sum / count as f64;
        let var = (sq / count as f64 - mean * mean).max(0.0);
        let threshold = max - self.n * var.sqrt();
        cands.retain(|_, l| (l as f64) >= threshold);
        Effect::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;

    #[test]
    fn keeps_within_n_sigma_of_max() {
        // logits 4,3,2,1: mean 2.5, population std sqrt(1.25)=1.1180; n=1 -> threshold 2.882
        let l = [4.0f32, 3.0, 2.0, 1.0];
        assert_close(
            &final_probs(Box::new(TopNSigma { n: 1.0 }), &l),
            &softmax_subset(&l, &[0, 1], 1.0),
            1e-7,
        );
        // n=2 -> threshold 1.764: keeps 4,3,2
        assert_close(
            &final_probs(Box::new(TopNSigma { n: 2.0 }), &l),
            &softmax_subset(&l, &[0, 1, 2], 1.0),
            1e-7,
        );
    }

    #[test]
    fn ignores_neg_inf_in_sigma() {
        let l = [4.0f32, 3.0, f32::NEG_INFINITY, 2.0];
        // finite 4,3,2: mean 3, std .8165; n=1 -> 3.18: keeps only 4
        assert_close(
            &final_probs(Box::new(TopNSigma { n: 1.0 }), &l),
            &[1.0, 0.0, 0.0, 0.0],
            1e-9,
        );
    }
}
