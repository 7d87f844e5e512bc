//! Property tests (proptest) over random logits for every strategy kind, and over arbitrary
//! input to the config loader and `declab dist`: no panic, valid distributions.

use declab::strategy::{self, kernels, Sampler};
use proptest::prelude::*;
use rand::SeedableRng;

fn spec(yaml: &str) -> declab::strategy::StrategySpec {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    declab::config::strategy::parse_single(v.as_mapping().unwrap(), "p").unwrap()
}

fn all_kinds() -> Vec<declab::strategy::StrategySpec> {
    declab::config::strategy::examples()
        .iter()
        .map(|y| spec(y))
        .chain([
            spec("{kind: typical_p, typical_p: 0.2, temperature: 3.0}"),
            spec("{kind: top_p, top_p: 0.5, temperature: 0.1}"),
        ])
        .collect()
}

fn logits_strategy() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![8 => -30.0f32..30.0, 1 => Just(f32::NEG_INFINITY), 1 => Just(0.0f32)],
        1..300,
    )
    .prop_filter("at least one finite logit", |v| {
        v.iter().any(|x| x.is_finite())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn final_distributions_are_valid_for_every_kind(logits in logits_strategy(), seed in any::<u64>()) {
        let v = logits.len();
        for s in all_kinds() {
            let mut sampler = Sampler::new(strategy::build(&s.processors, v));
            let d = sampler.final_distribution(&logits).unwrap();
            let sum: f64 = d.probs.iter().sum();
            prop_assert!((sum - 1.0).abs() < 1e-5, "{}: sum {sum}", s.id);
            prop_assert!(d.probs.iter().all(|p| p.is_finite() && *p >= 0.0), "{}", s.id);
            for (p, l) in d.probs.iter().zip(&logits) {
                if *l == f32::NEG_INFINITY {
                    prop_assert_eq!(*p, 0.0, "{}: a masked token got probability", s.id);
                }
            }
            prop_assert!(d.entropy_nats >= 0.0 && d.entropy_nats <= (v as f64).ln() + 1e-6, "{}: H {}", s.id, d.entropy_nats);
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let mut sampler = Sampler::new(strategy::build(&s.processors, v));
            for _ in 0..3 {
                let step = sampler.sample(&logits, &mut rng).unwrap();
                prop_assert!(step.p_final > 0.0, "{}: drew a token with zero probability", s.id);
                prop_assert!(logits[step.token as usize].is_finite());
                prop_assert!(step.entropy_nats >= 0.0 && step.entropy_nats <= (v as f64).ln() + 1e-6);
            }
        }
    }

    #[test]
    fn target_entropy_solve_hits_reachable_targets(logits in prop::collection::vec(-20.0f32..20.0, 2..400), frac in 0.05f64..0.95) {
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let (h_lo, _) = kernels::entropy_at_temperature(&logits, max, 0.05);
        let (h_hi, _) = kernels::entropy_at_temperature(&logits, max, 5.0);
        prop_assume!(h_hi - h_lo > 1e-3);
        let target = h_lo + frac * (h_hi - h_lo);
        let t = strategy::solve_temperature(&logits, target, 0.05, 5.0);
        let scaled: Vec<f32> = logits.iter().map(|l| l / t as f32).collect();
        let h = kernels::dist_stats(&scaled).entropy_nats;
        prop_assert!((h - target).abs() < 1e-3, "target {target}, got {h} at T {t}");
    }

    #[test]
    fn config_loader_never_panics(text in "\\PC{0,400}") {
        let _ = declab::config::parse(&text, std::path::Path::new("fuzz.yaml"), std::path::Path::new("."), String::new());
    }

    #[test]
    fn config_loader_never_panics_on_yaml_shaped_input(
        kind in prop_oneof![Just("greedy"), Just("top_p"), Just("entropy_switch"), Just("chain"), Just("target_entropy"), Just("mirostat"), Just("x")],
        key in prop_oneof![Just("top_p"), Just("temperature"), Just("chain"), Just("low"), Just("target"), Just("version"), Just("unit")],
        value in prop_oneof![Just("0.5"), Just("-1"), Just("[]"), Just("[0.1, 2]"), Just("{kind: greedy}"), Just("[{top_k: 3}]"), Just("bits"), Just("null"), Just("1e999")],
    ) {
        let yaml = format!("name: f\nseed: 1\nmodels: [{{id: m, gguf: a, tokenizer: b}}]\nprompts: [{{id: a, text: b}}]\nmax_new_tokens: 3\nstrategies:\n  - {{kind: {kind}, {key}: {value}}}\n");
        let _ = declab::config::parse(&yaml, std::path::Path::new("fuzz.yaml"), std::path::Path::new("."), String::new());
    }

    #[test]
    fn strategy_blocks_from_dist_never_panic(block in "\\PC{0,120}") {
        if let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(&block) {
            if let Some(m) = v.as_mapping() {
                let _ = declab::config::strategy::parse_single(m, "strategy");
            }
        }
    }
}

// ---- straightforward reference implementations (full sorts, f64), Hugging Face semantics ----

fn softmax(l: &[f64]) -> Vec<f64> {
    let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
    l.iter().map(|x| (x - m).exp() / z).collect()
}

/// Kept mask -> renormalised distribution.
fn renorm(p: &[f64], keep: &[bool]) -> Vec<f64> {
    let z: f64 = p
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(x, _)| x)
        .sum();
    p.iter()
        .zip(keep)
        .map(|(x, k)| if *k { x / z } else { 0.0 })
        .collect()
}

fn desc_order(p: &[f64]) -> Vec<usize> {
    let mut o: Vec<usize> = (0..p.len()).collect();
    o.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    o
}

fn ref_top_p(l: &[f64], top_p: f64) -> Vec<f64> {
    let p = softmax(l);
    let mut keep = vec![false; p.len()];
    let mut before = 0.0;
    for (n, i) in desc_order(&p).into_iter().enumerate() {
        if n > 0 && before >= top_p {
            break;
        }
        keep[i] = true;
        before += p[i];
    }
    renorm(&p, &keep)
}

fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|x| **x > 0.0)
        .map(|x| x * x.ln())
        .sum::<f64>()
}

fn ref_typical(l: &[f64], mass: f64) -> Vec<f64> {
    let p = softmax(l);
    let h = entropy(&p);
    let score: Vec<f64> = p.iter().map(|x| (-x.ln() - h).abs()).collect();
    let mut o: Vec<usize> = (0..p.len()).collect();
    o.sort_by(|&a, &b| score[a].total_cmp(&score[b]).then(a.cmp(&b)));
    let mut cum = 0.0;
    let mut last = o.len() - 1;
    for (n, &i) in o.iter().enumerate() {
        cum += p[i];
        if cum >= mass {
            last = n;
            break;
        }
    }
    let bound = score[o[last]];
    renorm(&p, &score.iter().map(|s| *s <= bound).collect::<Vec<_>>())
}

fn ref_min_p(l: &[f64], min_p: f64) -> Vec<f64> {
    let p = softmax(l);
    let pmax = p.iter().cloned().fold(0.0, f64::max);
    renorm(
        &p,
        &p.iter().map(|x| *x >= min_p * pmax).collect::<Vec<_>>(),
    )
}

fn ref_top_k(l: &[f64], k: usize) -> Vec<f64> {
    let p = softmax(l);
    let mut s = l.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let kth = s[k.min(s.len()) - 1];
    renorm(&p, &l.iter().map(|x| *x >= kth).collect::<Vec<_>>())
}

fn ref_eta(l: &[f64], eps: f64) -> Vec<f64> {
    let p = softmax(l);
    let h = entropy(&p);
    let eta = eps.min(eps.sqrt() * (-h).exp());
    let top = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    renorm(
        &p,
        &p.iter()
            .zip(l)
            .map(|(x, li)| *x >= eta || *li >= top)
            .collect::<Vec<_>>(),
    )
}

fn ref_mirostat_v2_first_step(l: &[f64], tau: f64) -> Vec<f64> {
    let p = softmax(l);
    let mu = 2.0 * tau;
    let mut keep: Vec<bool> = p.iter().map(|x| -x.log2() <= mu).collect();
    if !keep.iter().any(|k| *k) {
        keep[desc_order(&p)[0]] = true;
    }
    renorm(&p, &keep)
}

/// Mirostat v1's first step, straight from the definition: sort, Zipf exponent from the top 100
/// (differences taken in f32, as the logits are), k, keep the k most probable (ties: lower id).
fn ref_mirostat_v1_first_step(l: &[f32], tau: f64) -> Vec<f64> {
    let l64: Vec<f64> = l.iter().map(|&x| x as f64).collect();
    let p = softmax(&l64);
    let mu = 2.0 * tau;
    let mut sorted = l.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let (mut tb, mut tt) = (0.0, 0.0);
    for i in 0..99.min(sorted.len() - 1) {
        let t = ((i + 2) as f64 / (i + 1) as f64).ln();
        tb += t * (sorted[i] - sorted[i + 1]) as f64;
        tt += t * t;
    }
    let s = tb / tt;
    let e = s - 1.0;
    let k = ((e * mu.exp2()) / (1.0 - (l.len() as f64).powf(-e))).powf(1.0 / s);
    let k = if k.is_finite() {
        (k as usize).clamp(1, l.len())
    } else {
        l.len()
    };
    let mut keep = vec![false; l.len()];
    for &i in &desc_order(&l64)[..k] {
        keep[i] = true;
    }
    renorm(&p, &keep)
}

/// Distinct logits on a grid (no near-ties, which f32/f64 rounding could order differently).
fn distinct_logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(0u32..40_000, 2..2000)
        .prop_map(|mut v| {
            v.sort_unstable();
            v.dedup();
            // a deterministic shuffle so that ids and values are not monotone
            let n = v.len();
            let mut out = vec![0f32; n];
            for (i, x) in v.into_iter().enumerate() {
                out[(i * 7919) % n] = x as f32 / 2000.0 - 10.0;
            }
            out
        })
        .prop_filter("needs distinct positions", |v| {
            v.len() >= 2 && v.len() % 7919 != 0
        })
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn fast_paths_match_reference_implementations(l in distinct_logits(), q in 0.05f64..0.99, k in 1usize..60) {
        let l64: Vec<f64> = l.iter().map(|&x| x as f64).collect();
        let cases: Vec<(String, Vec<f64>)> = vec![
            (format!("{{kind: top_p, top_p: {q}}}"), ref_top_p(&l64, q)),
            (format!("{{kind: typical_p, typical_p: {q}}}"), ref_typical(&l64, q)),
            (format!("{{kind: min_p, min_p: {q}}}"), ref_min_p(&l64, q)),
            (format!("{{kind: top_k, top_k: {k}}}"), ref_top_k(&l64, k)),
            (format!("{{kind: eta_cutoff, eta_cutoff: {}}}", q / 10.0), ref_eta(&l64, q / 10.0)),
            (format!("{{kind: mirostat, version: 2, mirostat_tau: {}}}", q * 6.0), ref_mirostat_v2_first_step(&l64, q * 6.0)),
        ];
        for (yaml, want) in cases {
            let s = spec(&yaml);
            let got = Sampler::new(strategy::build(&s.processors, l.len())).final_distribution(&l).unwrap().probs;
            prop_assert!(close(&got, &want), "{yaml}: fast path differs from the reference\n got {:?}\nwant {:?}",
                got.iter().enumerate().filter(|(_, p)| **p > 0.0).take(8).collect::<Vec<_>>(),
                want.iter().enumerate().filter(|(_, p)| **p > 0.0).take(8).collect::<Vec<_>>());
        }
    }
}

/// The fast paths on vocabulary-sized rows shaped like LM logits (the chunk-skipping filters and
/// head widening only show their edges at this size), against the same references.
#[test]
fn fast_paths_match_references_on_vocabulary_sized_rows() {
    for (r, row) in declab::bench::synthetic_logit_rows(60_000, 3, 11)
        .into_iter()
        .enumerate()
    {
        let l64: Vec<f64> = row.iter().map(|&x| x as f64).collect();
        for q in [0.3, 0.9, 0.99] {
            let cases: Vec<(String, Vec<f64>)> = vec![
                (format!("{{kind: top_p, top_p: {q}}}"), ref_top_p(&l64, q)),
                (
                    format!("{{kind: typical_p, typical_p: {q}}}"),
                    ref_typical(&l64, q),
                ),
                (
                    format!("{{kind: min_p, min_p: {}}}", q / 10.0),
                    ref_min_p(&l64, q / 10.0),
                ),
                (
                    format!("{{kind: top_k, top_k: {}}}", (q * 100.0) as usize),
                    ref_top_k(&l64, (q * 100.0) as usize),
                ),
                (
                    format!("{{kind: eta_cutoff, eta_cutoff: {}}}", q / 100.0),
                    ref_eta(&l64, q / 100.0),
                ),
                (
                    format!("{{kind: mirostat, version: 2, mirostat_tau: {}}}", q * 8.0),
                    ref_mirostat_v2_first_step(&l64, q * 8.0),
                ),
                // k from a few to a few thousand on these rows
                (
                    format!("{{kind: mirostat, version: 1, mirostat_tau: {}}}", q * 8.0),
                    ref_mirostat_v1_first_step(&row, q * 8.0),
                ),
            ];
            for (yaml, want) in cases {
                let s = spec(&yaml);
                let got = Sampler::new(strategy::build(&s.processors, row.len()))
                    .final_distribution(&row)
                    .unwrap()
                    .probs;
                let kept = |p: &[f64]| p.iter().filter(|&&x| x > 0.0).count();
                assert_eq!(kept(&got), kept(&want), "row {r}, {yaml}: kept sets differ");
                assert!(
                    close(&got, &want),
                    "row {r}, {yaml}: fast path differs from the reference"
                );
            }
        }
    }
}
