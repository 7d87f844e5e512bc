//! Strategy promises on the real models: `experiments/validity.yaml` (Gemma 3 270M and
//! SmolLM2-135M-Instruct, 12 prompts x 3 samples x 56 tokens) run through the CLI, then every
//! claim checked on the samples it wrote (README "Strategies on real models"). Synthetic rows
//! cannot show these: H(T) of a 262,144-token row is nothing like a 5-token one's.

mod common;

use std::collections::BTreeMap;

use common::*;
use declab::record::SampleRecord;

/// Steps before a controller is judged.
const WARM_UP: usize = 8;

fn summary_means(dir: &std::path::Path) -> BTreeMap<(String, String, String), f64> {
    let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (m, s, k, v) = (col("model"), col("strategy"), col("metric"), col("mean"));
    r.records()
        .map(|x| {
            let x = x.unwrap();
            (
                (x[m].to_string(), x[s].to_string(), x[k].to_string()),
                x[v].parse().unwrap(),
            )
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A controller's figures over one (model, strategy): the realised signal after the warm-up.
struct Tracking {
    mean: f64,
    mean_abs_sample_error: f64,
    median_step_dlnt: f64,
    samples: usize,
}

fn tracking(
    recs: &[&SampleRecord],
    target: f64,
    realised: impl Fn(&SampleRecord) -> Vec<f64>,
) -> Tracking {
    let (mut sum, mut n, mut abs_err) = (0.0, 0usize, Vec::new());
    let mut dlnt = Vec::new();
    for r in recs {
        let v = realised(r);
        if v.is_empty() {
            continue;
        }
        let m = v.iter().sum::<f64>() / v.len() as f64;
        sum += m * v.len() as f64;
        n += v.len();
        abs_err.push((m - target).abs());
        let t = &r.trace.temperature[(WARM_UP - 1).min(r.trace.temperature.len())..];
        dlnt.extend(
            t.windows(2)
                .filter(|w| w[0] > 0.0 && w[1] > 0.0)
                .map(|w| (w[1] as f64).ln() - (w[0] as f64).ln())
                .map(f64::abs),
        );
    }
    Tracking {
        mean: sum / n as f64,
        mean_abs_sample_error: abs_err.iter().sum::<f64>() / abs_err.len() as f64,
        median_step_dlnt: median(dlnt),
        samples: abs_err.len(),
    }
}

fn surprise_nats(r: &SampleRecord) -> Vec<f64> {
    r.trace.p_final[WARM_UP.min(r.trace.p_final.len())..]
        .iter()
        .map(|&p| -(p.max(f32::MIN_POSITIVE) as f64).ln())
        .collect()
}

fn final_entropy_nats(r: &SampleRecord) -> Vec<f64> {
    r.trace.final_entropy[WARM_UP.min(r.trace.final_entropy.len())..]
        .iter()
        .map(|&h| h as f64)
        .collect()
}

#[test]
fn strategies_keep_their_promises_on_both_real_models() {
    let models = real_models_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("validity");
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/validity.yaml");
    declab()
        .env("DECLAB_MODELS", &models)
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let records: Vec<SampleRecord> = std::fs::read_to_string(out.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2 * 12 * 18 * 3);
    assert!(records.iter().all(|r| r.ok()), "every sample succeeded");
    let means = summary_means(&out);
    let mut failures = Vec::new();
    let mut table = String::new();
    for model in ["gemma3-270m", "smollm2-135m"] {
        let of = |s: &str| -> Vec<&SampleRecord> {
            records
                .iter()
                .filter(|r| r.model == model && r.strategy == s)
                .collect()
        };
        let mean =
            |s: &str, metric: &str| means[&(model.to_string(), s.to_string(), metric.to_string())];

        // distinct-2 and NLL rise with temperature
        let ts = [
            "temperature(t=0.7)",
            "temperature(t=1.0)",
            "temperature(t=1.5)",
        ];
        for metric in ["distinct_2", "nll_mean"] {
            let v: Vec<f64> = ts.iter().map(|s| mean(s, metric)).collect();
            table.push_str(&format!("{model} {metric} at T 0.7/1.0/1.5: {v:.3?}\n"));
            if !(v[0] < v[1] && v[1] < v[2]) {
                failures.push(format!(
                    "{model}: {metric} does not rise with temperature: {v:?}"
                ));
            }
        }
        // truncation keeps NLL below plain temperature at T = 1.5
        let plain = mean("temperature(t=1.5)", "nll_mean");
        for s in ["top_p(p=0.9,t=1.5)", "min_p(min_p=0.1,t=1.5)"] {
            let nll = mean(s, "nll_mean");
            table.push_str(&format!("{model} {s} nll {nll:.3} vs plain {plain:.3}\n"));
            if nll >= plain {
                failures.push(format!(
                    "{model}: {s} NLL {nll} is not below plain T = 1.5's {plain}"
                ));
            }
        }
        // the solve meets its target on every step it did not clamp, and never misses
        for (s, target) in [
            ("target_entropy(target=1.5)", 1.5),
            ("target_entropy(target=3.0)", 3.0),
        ] {
            let (mut met, mut clamped) = (0, 0);
            for r in of(s) {
                let flags = r.trace.solve.as_ref().expect("solve flags recorded");
                for (i, f) in flags.iter().enumerate() {
                    match f.map(|f| format!("{f:?}")).as_deref() {
                        Some("Met") => {
                            met += 1;
                            let h = r.trace.final_entropy[i] as f64;
                            if (h - target).abs() > 1e-4 {
                                failures.push(format!("{model} {s} step {i}: met but H = {h}"));
                            }
                        }
                        Some("ClampedMin") | Some("ClampedMax") => clamped += 1,
                        // a single candidate: nothing to solve
                        None => {}
                        other => failures.push(format!("{model} {s} step {i}: {other:?}")),
                    }
                }
            }
            table.push_str(&format!(
                "{model} {s}: {met} steps met, {clamped} clamped\n"
            ));
            if met == 0 {
                failures.push(format!("{model} {s}: no step met its target"));
            }
        }
        // feedback: mean within 0.15 nats, mean per-sample |error| <= 0.5, median |d ln T| <= 0.25
        for target in [1.0, 2.0, 3.0, 4.0] {
            for signal in ["entropy", "surprise"] {
                let s = format!("target_entropy(target={target:?},mode=feedback,signal={signal})");
                let recs = of(&s);
                let f = if signal == "entropy" {
                    final_entropy_nats
                } else {
                    surprise_nats
                };
                let t = tracking(&recs, target, f);
                table.push_str(&format!(
                    "{model} {s}: mean {:.3}, mean |sample error| {:.3}, median |dlnT| {:.3}, {} samples\n",
                    t.mean, t.mean_abs_sample_error, t.median_step_dlnt, t.samples
                ));
                if (t.mean - target).abs() > 0.15
                    || t.mean_abs_sample_error > 0.5
                    || t.median_step_dlnt > 0.25
                    || t.samples < 30
                {
                    failures.push(format!("{model} {s}: misses the feedback figures"));
                }
            }
        }
        // mirostat v2 at T = 1.5: realised surprise (nats) against tau (bits)
        for tau_bits in [3.0f64, 5.0] {
            let s = format!("mirostat(tau={tau_bits:?},t=1.5,version=2)");
            let recs = of(&s);
            let target = tau_bits * std::f64::consts::LN_2;
            let t = tracking(&recs, target, surprise_nats);
            table.push_str(&format!(
                "{model} {s}: mean surprise {:.3} nats vs {target:.3}, mean |sample error| {:.3}, {} samples\n",
                t.mean, t.mean_abs_sample_error, t.samples
            ));
            if (t.mean - target).abs() > 0.15 || t.mean_abs_sample_error > 0.5 || t.samples < 30 {
                failures.push(format!("{model} {s}: misses its target"));
            }
        }
        // entropy_switch: the branch its thresholds say, on every step
        let s = "entropy_switch(low=1.0,high=3.0,vhigh=6.0,L=greedy,M=top_p(p=0.9,t=0.8),H=min_p(min_p=0.1,t=1.2))";
        let mut counts = BTreeMap::new();
        for r in of(s) {
            let branches = r.trace.branch.as_ref().expect("branches recorded");
            for (i, b) in branches.iter().enumerate() {
                let (h, vh) = (r.trace.entropy[i] as f64, r.trace.varentropy[i] as f64);
                if (h - 1.0).abs() < 1e-5 || (h - 3.0).abs() < 1e-5 || (vh - 6.0).abs() < 1e-5 {
                    continue; // f32 trace at a threshold: not judged
                }
                let want = if h < 1.0 {
                    "low"
                } else if h > 3.0 || vh > 6.0 {
                    "high"
                } else {
                    "mid"
                };
                *counts.entry(b.clone()).or_insert(0) += 1;
                if b != want {
                    failures.push(format!(
                        "{model} switch step {i}: {b} where H {h}, VH {vh} say {want}"
                    ));
                }
            }
        }
        table.push_str(&format!("{model} entropy_switch branches: {counts:?}\n"));
        if counts.len() < 3 {
            failures.push(format!(
                "{model}: the switch did not visit every branch: {counts:?}"
            ));
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{}\n{table}", failures.join("\n"));
}
