//! The parts of a model load, each timed on its own in this process: a tokenizer.json through
//! `engine::tokenizer::load` (declab's own BPE from its cache where it applies), the GGUF
//! weights through `engine::load_weights` (header, packed rows, candle's tensors and the
//! throwaway step), and SmolLM2's tokenizer from its GGUF: as a run loads it
//! (`engine::tokenizer::load_gguf`, declab's own BPE from its cache beside the GGUF) and as
//! `tokenizers` builds it from the metadata. The first iteration pays for
//! fresh memory (page faults); later ones reuse freed heap.
//!
//! Run: cargo run --release --example load_parts -- [iterations]

use std::path::PathBuf;
use std::time::Instant;

use declab::engine;

fn main() -> anyhow::Result<()> {
    let models = PathBuf::from(std::env::var("DECLAB_MODELS").unwrap_or_else(|_| "models".into()));
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let gemma_tok = models.join("gemma-3-270m/tokenizer.json");
    let gemma = models.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf");
    let smol = models.join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    let device = candle_core::Device::Cpu;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    for i in 0..iters {
        let t = Instant::now();
        let tok = engine::tokenizer::load(&gemma_tok)?;
        let tok_ms = ms(t);
        let t = Instant::now();
        let w = engine::load_weights(&gemma, &device)?;
        let gemma_ms = ms(t);
        drop(w);
        let t = Instant::now();
        let w = engine::load_weights(&smol, &device)?;
        let smol_ms = ms(t);
        drop(w);
        let t = Instant::now();
        let own = engine::tokenizer::load_gguf(&smol)?;
        let own_ms = ms(t);
        let t = Instant::now();
        let hf = engine::gguf_tokenizer::from_gguf_file(&smol)?;
        let hf_ms = ms(t);
        println!(
            "{i}: gemma tokenizer.json {tok_ms:.0} ms ({tok:?}), gemma weights {gemma_ms:.0} ms, smollm2 weights {smol_ms:.0} ms, smollm2 GGUF tokenizer {own_ms:.0} ms ({own:?}; tokenizers from the metadata: {hf_ms:.0} ms, {} tokens)",
            hf.get_vocab_size(true)
        );
    }
    Ok(())
}
