//! Criterion benches: every strategy of `declab bench` at vocab 32k, 128k and 262k on real
//! Gemma 3 270M logit rows stored in `benches/fixtures/` (regenerate with `make bench-fixture`).
//! The rows are truncated to each vocabulary size, as `declab bench` does, and the timed steps
//! cycle through them (a confident, a middle and an uncertain step).
//!
//! `cargo bench --bench samplers` (or `make bench-criterion`); filter with a strategy name,
//! e.g. `cargo bench --bench samplers -- typical`. A one-pass floor (max over the logits) is
//! timed beside them, as the reference the `declab bench` ratios are relative to.
//!
//! `final_pass_262144`: the final exp pass alone at a temperature (t = 0.8) over a whole stored
//! row, as the draw runs it (`draw_stats`, no varentropy) and with the varentropy
//! (`final_stats`, as target_entropy's solve runs it).

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use declab::bench::{read_logit_fixture, strategies, FIXTURE_PATH};
use declab::strategy::{self, kernels, Sampler};

fn samplers(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE_PATH);
    let rows = read_logit_fixture(&path).expect("logit fixture");
    let strategies = strategies().expect("bench strategies");
    for vocab in [32_768usize, 131_072, 262_144] {
        let rows: Vec<&[f32]> = rows.iter().map(|r| &r[..vocab.min(r.len())]).collect();
        let mut group = c.benchmark_group(format!("vocab_{vocab}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("floor_max_pass", |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                kernels::max_finite(rows[i % rows.len()])
            })
        });
        for s in &strategies {
            let mut sampler = Sampler::new(strategy::build(&s.processors, vocab));
            let mut rng = declab::seed::rng(declab::seed::derive(&["criterion", &s.id]));
            let mut i = 0usize;
            group.bench_function(BenchmarkId::from_parameter(&s.id), |b| {
                b.iter(|| {
                    i += 1;
                    // stateful strategies (mirostat, feedback) restart now and then, as samples do
                    if i.is_multiple_of(64) {
                        sampler.reset(&[]);
                    }
                    sampler
                        .sample(rows[i % rows.len()], &mut rng)
                        .expect("valid logits")
                        .token
                })
            });
        }
        group.finish();
    }
}

fn final_pass(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE_PATH);
    let rows = read_logit_fixture(&path).expect("logit fixture");
    let sets: Vec<kernels::Candidates> = rows
        .iter()
        .map(|r| {
            let mut set = kernels::Candidates::default();
            set.check_and_fill(r).expect("valid logits");
            set.scale(1.0 / 0.8);
            set
        })
        .collect();
    let mut group = c.benchmark_group(format!("final_pass_{}", rows[0].len()));
    for (name, varentropy) in [("draw_stats", false), ("final_stats", true)] {
        let mut sets = sets.clone();
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let n = sets.len();
                let set = &mut sets[i % n];
                // the scale alternates between 1/0.8 and the next f32, so that each pass is
                // computed, not the cached one (the rows stay in place, as after a one read)
                let f = 1.0f32 / 0.8;
                set.set_pending_scale(if (i / n).is_multiple_of(2) {
                    f
                } else {
                    f.next_up()
                });
                if varentropy {
                    set.final_stats().sum
                } else {
                    set.draw_stats().sum
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = samplers, final_pass
}
criterion_main!(benches);
