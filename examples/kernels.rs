//! Micro-timing of the sampler kernels on synthetic 262k logits (development aid).
use declab::strategy::kernels;
use std::time::Instant;

fn time<F: FnMut() -> f32>(name: &str, mut f: F) {
    let mut best = f64::MAX;
    let mut sink = 0.0;
    for _ in 0..50 {
        let t = Instant::now();
        sink += f();
        best = best.min(t.elapsed().as_secs_f64() * 1e6);
    }
    println!("{name:<24} {best:>9.1} us  ({sink})");
}

fn main() {
    let v: Vec<f32> = declab::bench::synthetic_logit_rows(262_144, 1, 1).remove(0);
    time("max_finite", || kernels::max_finite(&v));
    time("dist_stats", || kernels::dist_stats(&v).entropy_nats as f32);
    time("final_stats", || kernels::final_stats(&v).sum as f32);
    time("check_logits", || {
        declab::strategy::check_logits(&v).is_ok() as u8 as f32
    });
    let mut c = kernels::Candidates::default();
    time("fill", || {
        c.fill(&v);
        c.logits[5]
    });
    time("fill+shrink", || {
        c.fill(&v);
        c.ids.truncate(1);
        c.logits[0]
    });
    let mut p = Vec::new();
    time("softmax_into", || {
        kernels::softmax_into(&v, &mut p).entropy_nats as f32
    });
    time("lanes_sum f32", || lanes_sum(&v, 20.0));
    time("exp sum f32", || {
        v.iter()
            .map(|&x| kernels::exp_nonpos(x - 20.0))
            .sum::<f32>()
    });
}

#[allow(dead_code)]
pub fn lanes_sum(v: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; 16];
    for c in v.chunks_exact(16) {
        for j in 0..16 {
            acc[j] += kernels::exp_nonpos(c[j] - m);
        }
    }
    acc.iter().sum()
}
