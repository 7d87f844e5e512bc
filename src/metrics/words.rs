//! Word tokenisation shared by every text metric.
//!
//! Definition: a text's words are the maximal runs of non-whitespace
//! characters, where whitespace is Unicode `White_Space` (exactly
//! [`str::split_whitespace`]). Case and punctuation are preserved, so
//! `"Hello, hello"` has the two distinct words `"Hello,"` and `"hello"`.
//! Reference: Python's `str.split()` with no argument agrees on every
//! character Python also treats as whitespace (ASCII whitespace, U+0085,
//! U+00A0, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000, U+1680);
//! Python additionally splits on U+001C..U+001F, which Rust does not.

/// Splits `text` on Unicode whitespace, preserving case. Empty or
/// all-whitespace text gives no words.
pub fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_any_unicode_whitespace() {
        assert_eq!(
            words("  The cat\tsat\non\u{00A0}the\u{3000}Mat. "),
            vec!["The", "cat", "sat", "on", "the", "Mat."]
        );
    }

    #[test]
    fn empty_and_blank_text_have_no_words() {
        assert!(words("").is_empty());
        assert!(words(" \n\t ").is_empty());
    }

    #[test]
    fn case_is_preserved() {
        assert_eq!(words("A a"), vec!["A", "a"]);
    }
}
