//! Criterion benches: every strategy of `declab bench` at vocab 32k, 128k and 262k on real
//! Gemma 3 270M logit rows stored in `benches/fixtures/` (regenerate with `make bench-fixture`).
//! The rows are truncated to each vocabulary size, as `declab bench` does, and the timed steps
//! cycle through them (a confident, a middle and an uncertain step).
//!
//! `cargo bench --bench samplers` (or `make bench-criterion`); filter with a strategy name,
//! e.g. `cargo bench --bench samplers -- typical`. A one-pass floor (max over the logits) is
//! timed beside them, as the reference the `declab bench` ratios are relative to.

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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = samplers
}
criterion_main!(benches);
