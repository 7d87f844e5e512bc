//! Speed of declab's own quantised projection kernels (`engine::qrows`) on their own, one input
//! row at a time (a single stream's step): Gemma 3 270M's 262,144 x 640 Q8_0 output projection,
//! which streams 178 MB from memory per token, and smaller Q8_0 / Q5_0 matrices that stay in
//! the caches. Prints ms per call and the weight bytes read per second, to set against the
//! machine's plain read bandwidth. Weights are random blocks (scales kept small); the numbers
//! do not depend on their values.
//! Run: RAYON_NUM_THREADS=2 cargo run --release --example qrows_speed
use declab::engine::qrows::{QKind, QRows, QuantInput};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let cases = [
        (QKind::Q8_0, 262_144usize, 640usize, 30usize),
        (QKind::Q8_0, 8192, 640, 2000),
        (QKind::Q5_0, 4096, 640, 2000),
        (QKind::Q4_1, 1536, 576, 2000),
        (QKind::Q4K, 640, 1024, 2000),
        (QKind::Q4K, 640, 2048, 2000),
        (QKind::Q6K, 640, 2048, 2000),
    ];
    for (kind, n, k, reps) in cases {
        let bb = kind.block_bytes();
        let mut state = 1u64;
        let w = QRows::from_gguf(kind, &[n], k, |_, _, buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // the block's leading f16 scale(s): small, finite
                *b = match scale_byte(kind, i % bb) {
                    Some(j) => [0x00, 0x20][j % 2], // f16 2^-7
                    None => (state >> 33) as u8,
                };
            }
            Ok(())
        })?;
        for rows in [1usize, 27] {
            let x: Vec<f32> = (0..k * rows)
                .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let xq = QuantInput::new(&x, k);
            let reps = if rows == 1 { reps } else { reps.div_ceil(8) };
            std::hint::black_box(w.matmul(&xq));
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(w.matmul(&xq));
            }
            let el = t.elapsed().as_secs_f64() / reps as f64;
            let bytes = (n * kind.row_bytes(k)) as f64;
            println!(
                "{kind:?} {n:>7} x {k}, {rows:>2} rows: {:8.3} ms, {:5.1} GB/s of weights, {:5.1} G multiply-adds/s",
                el * 1e3,
                bytes / el / 1e9,
                (n * k * rows) as f64 / el / 1e9
            );
        }
    }
    Ok(())
}

/// Where byte `j` of a block is one of its f16 scales (or minima): its place among them.
fn scale_byte(kind: QKind, j: usize) -> Option<usize> {
    match kind {
        QKind::Q4_1 | QKind::Q4K => (j < 4).then_some(j),
        QKind::Q6K => (j >= 208).then(|| j - 208),
        _ => (j < 2).then_some(j),
    }
}
