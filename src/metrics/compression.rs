//! Gzip compression ratio, a repetitiveness measure (higher = more
//! redundant text).
//!
//! Definition: `compression_ratio(text) = len(utf8(text)) /
//! len(gzip(utf8(text), level 9))`, where the gzip stream is a 10-byte
//! header (no file name, no extra fields) + raw DEFLATE at level 9 (window
//! 2^15, memLevel 8, default strategy) + an 8-byte CRC32/ISIZE trailer.
//! Empty text is defined as `0.0` (there is nothing to compress, and the
//! bare formula would give `0 / 20`, which is `0.0` anyway but only by
//! accident of the framing overhead). The pooled variant joins the texts
//! with `"\n"` first.
//!
//! Reference: Python's `len(gzip.compress(text.encode("utf-8"),
//! compresslevel=9))`. The encoder is flate2's `GzEncoder` with
//! `Compression::new(9)` on the zlib C backend (flate2 feature `zlib`),
//! which emits byte-identical DEFLATE streams to CPython's `zlib` module;
//! the tests pin compressed lengths measured with CPython 3.11 / zlib 1.2.13.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::metric::{Compute, Family, Metric, Needs};

/// `compression_ratio` of one sample.
pub const COMPRESSION_RATIO: Metric = Metric {
    name: "compression_ratio",
    family: Family::Diversity,
    higher_is_better: Some(false),
    unit: "ratio",
    needs: Needs::TEXT,
    description: "UTF-8 bytes / gzip-9 bytes (higher = more redundant)",
    compute: Compute::Sample(|s| Some(compression_ratio(s.text))),
};

/// `compression_ratio_pooled`: of a group's samples joined by newlines (Shaib et al. 2024's
/// homogeneity proxy).
pub const COMPRESSION_RATIO_POOLED: Metric = Metric {
    name: "compression_ratio_pooled",
    family: Family::Diversity,
    higher_is_better: Some(false),
    unit: "ratio",
    needs: Needs::TEXT,
    description: "compression ratio of the samples joined by newlines",
    compute: Compute::Group(|g| Some(compression_ratio_pooled(g.texts))),
};

/// Length in bytes of the gzip (level 9) compression of `bytes`, header and
/// trailer included: equals Python's `len(gzip.compress(bytes, 9))`.
///
/// Compression into memory cannot fail in practice; the `io::Result` only
/// mirrors the encoder's `Write` API.
pub fn gzip_len(bytes: &[u8]) -> std::io::Result<usize> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::new(9));
    enc.write_all(bytes)?;
    Ok(enc.finish()?.len())
}

/// UTF-8 bytes of `text` / gzip (level 9) bytes of `text`; `0.0` for empty
/// text.
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    match gzip_len(text.as_bytes()) {
        Ok(compressed) if compressed > 0 => text.len() as f64 / compressed as f64,
        // Unreachable for an in-memory buffer; keep the function total.
        _ => 0.0,
    }
}

/// [`compression_ratio`] of the texts joined with `"\n"`; `0.0` when the
/// joined text is empty (no texts, or only one empty text).
pub fn compression_ratio_pooled(texts: &[&str]) -> f64 {
    compression_ratio(&texts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected lengths measured with CPython 3.11.7 (zlib 1.2.13):
    /// `len(gzip.compress(t.encode(), compresslevel=9))`.
    const PY_GZIP_LEN: &[(&str, usize)] = &[
        ("", 20),
        ("a", 21),
        ("hello world", 31),
        ("The quick brown fox jumps over the lazy dog.", 63),
        (
            "the the the the the the the the the the the the the the the the",
            27,
        ),
        (
            "Ünïcödé — 日本語のテキスト, emoji 🎉🎉🎉 and more text text text",
            92,
        ),
    ];

    #[test]
    fn gzip_length_matches_python() {
        for &(text, expected) in PY_GZIP_LEN {
            assert_eq!(gzip_len(text.as_bytes()).ok(), Some(expected), "{text:?}");
        }
    }

    #[test]
    fn gzip_length_matches_python_on_long_text() {
        // "".join(f"word{i % 97} " for i in range(5000)) -> CPython gives LONG_LEN.
        let text: String = (0..5000).map(|i| format!("word{} ", i % 97)).collect();
        assert_eq!(gzip_len(text.as_bytes()).ok(), Some(LONG_LEN));
    }
    const LONG_LEN: usize = 406;

    #[test]
    fn gzip_length_matches_python_on_varied_text() {
        // Python: x = 12345; for each of 20000 words:
        //   x = (x * 1103515245 + 12345) % 2**31; word = f"t{(x >> 16) % 997} "
        let mut x: u64 = 12345;
        let text: String = (0..20000)
            .map(|_| {
                x = (x * 1_103_515_245 + 12_345) % (1 << 31);
                format!("t{} ", (x >> 16) % 997)
            })
            .collect();
        assert_eq!(text.len(), VARIED_RAW);
        assert_eq!(gzip_len(text.as_bytes()).ok(), Some(VARIED_LEN));
    }
    const VARIED_RAW: usize = 97855;
    const VARIED_LEN: usize = 34828;

    #[test]
    fn ratio_values() {
        assert_eq!(compression_ratio(""), 0.0);
        assert_eq!(compression_ratio("hello world"), 11.0 / 31.0);
        let rep = "the the the the the the the the the the the the the the the the";
        assert_eq!(compression_ratio(rep), rep.len() as f64 / 27.0);
    }

    #[test]
    fn pooled_joins_with_newline() {
        let texts = ["a b c", "a b c", "d"];
        assert_eq!(
            compression_ratio_pooled(&texts),
            compression_ratio("a b c\na b c\nd")
        );
        assert_eq!(compression_ratio_pooled(&[]), 0.0);
        assert_eq!(compression_ratio_pooled(&[""]), 0.0);
    }

    #[test]
    fn repetitive_text_compresses_better() {
        let rep = "same words again ".repeat(50);
        let varied: String = (0..150).map(|i| format!("w{} ", i * 7919 % 1000)).collect();
        assert!(compression_ratio(&rep) > compression_ratio(&varied));
    }
}
