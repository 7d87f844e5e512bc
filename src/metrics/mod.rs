//! Per-text and per-group text metrics for generated samples.
//!
//! This module owns the pure, I/O-free text metrics that declab reports for
//! each decoding strategy: word splitting ([`words()`]), distinct-n
//! ([`distinct_n`], [`distinct_n_pooled`]), seq-rep-4 ([`repetition_4`]),
//! gzip compression ratio ([`compression_ratio`],
//! [`compression_ratio_pooled`]) and Self-BLEU ([`self_bleu()`],
//! [`sentence_bleu`]). Each submodule documents the exact definition and the
//! reference implementation it matches.

pub mod compression;
pub mod distinct;
pub mod repetition;
pub mod self_bleu;
pub mod words;

pub use compression::{compression_ratio, compression_ratio_pooled, gzip_len};
pub use distinct::{distinct_n, distinct_n_pooled};
pub use repetition::{repetition_4, repetition_n};
pub use self_bleu::{self_bleu, sentence_bleu};
pub use words::words;
