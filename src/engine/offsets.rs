//! Where each generated token's text ends in the sample's text: the token boundaries the HTML
//! report's sample viewer paints (`SampleRecord::text_ends`).
//!
//! A token's text is not a property of the token alone. Byte-level BPE (SmolLM2) and byte
//! fallback (Gemma 3's `<0xE4>`) split one character over several tokens; SentencePiece's `▁`
//! turns into a space only inside a sequence; skipped special tokens decode to nothing. So the
//! boundaries come from decoding, the way streaming detokenizers do it (Hugging Face TGI's
//! `decode_token`, llama.cpp's server): decode a short window of tokens with and without the
//! newest one and take the difference, holding the token back while the window ends in an
//! incomplete character (U+FFFD). A token whose bytes end inside a character gets an empty
//! piece and the token that completes the character carries all of it.
//!
//! The windows are checked against the whole decode: every piece must be the next bytes of the
//! sample's text. Where a decoder breaks that (it never did on Gemma 3 or SmolLM2), the
//! boundaries are recomputed from whole prefixes (`decode(ids[..=i])`, quadratic), which agree
//! with the text by construction.

use super::tokenizer::Tokenizer;
use anyhow::Result;

/// End (a byte offset into `text`) of each token's text, one per id, non-decreasing, each on a
/// character boundary of `text`. `full` is the whole decode of `ids` (what
/// [`crate::engine::decode`] gives, which the caller already holds); `text` is `full` or a
/// prefix of it (a generation cut at a stop string), and ends past it are clamped to it.
pub fn text_ends(tokenizer: &Tokenizer, ids: &[u32], full: &str, text: &str) -> Result<Vec<u32>> {
    let decode = |ids: &[u32]| crate::engine::decode(tokenizer, ids);
    let ends = match windowed(&decode, ids, full)? {
        Some(ends) => ends,
        None => by_prefixes(&decode, ids, full)?,
    };
    Ok(clamp(ends, text))
}

/// Ends from windows of the decode; `None` when a window's new text is not the next part of
/// `full`.
fn windowed(
    decode: &dyn Fn(&[u32]) -> Result<String>,
    ids: &[u32],
    full: &str,
) -> Result<Option<Vec<usize>>> {
    let mut ends = Vec::with_capacity(ids.len());
    // The window starts at token `prefix`; tokens `prefix..read` are already accounted for.
    let (mut prefix, mut read, mut done) = (0usize, 0usize, 0usize);
    // decode(ids[prefix..read]), changed only when the window moves
    let mut before = String::new();
    for i in 0..ids.len() {
        let now = decode(&ids[prefix..=i])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let Some(piece) = now.strip_prefix(before.as_str()) else {
                return Ok(None);
            };
            if !full[done..].starts_with(piece) {
                return Ok(None);
            }
            done += piece.len();
            prefix = read;
            read = i + 1;
            before = decode(&ids[prefix..read])?;
        }
        ends.push(done);
    }
    // Tokens held back at the end (a lone byte the text shows as U+FFFD) end with the text.
    if done != full.len() {
        if !full.is_char_boundary(done) {
            return Ok(None);
        }
        if let Some(last) = ends.last_mut() {
            *last = full.len();
        }
    }
    Ok(Some(ends))
}

/// Ends from whole prefixes: the longest prefix of `full` that `decode(ids[..=i])` agrees with,
/// on a character boundary.
fn by_prefixes(
    decode: &dyn Fn(&[u32]) -> Result<String>,
    ids: &[u32],
    full: &str,
) -> Result<Vec<usize>> {
    let mut ends = Vec::with_capacity(ids.len());
    let mut last = 0usize;
    for i in 0..ids.len() {
        let d = decode(&ids[..=i])?;
        let mut common = d
            .bytes()
            .zip(full.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        while !full.is_char_boundary(common) {
            common -= 1;
        }
        last = last.max(common);
        ends.push(last);
    }
    if let Some(e) = ends.last_mut() {
        *e = full.len();
    }
    Ok(ends)
}

/// `ends` limited to `text` (a prefix of the decode), as u32.
fn clamp(ends: Vec<usize>, text: &str) -> Vec<u32> {
    ends.into_iter().map(|e| e.min(text.len()) as u32).collect()
}

/// The pieces `text` splits into at `ends` (one per token). `None` when the ends do not fit the
/// text (out of order, past its end, inside a character, or not ending with it).
pub fn pieces<'a>(text: &'a str, ends: &[u32]) -> Option<Vec<&'a str>> {
    let mut out = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for &e in ends {
        let e = e as usize;
        if e < start || e > text.len() || !text.is_char_boundary(e) {
            return None;
        }
        out.push(&text[start..e]);
        start = e;
    }
    (start == text.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decode that is not a concatenation of per-token texts: token 2 ("b") erases the
    /// previous character, so windows disagree with the whole decode and the prefix fallback
    /// takes over.
    fn odd_decode(ids: &[u32]) -> Result<String> {
        let mut s = String::new();
        for &i in ids {
            match i {
                0 => s.push('a'),
                1 => s.push('é'),
                2 => {
                    s.pop();
                    s.push('b')
                }
                _ => {}
            }
        }
        Ok(s)
    }

    #[test]
    fn a_decoder_windows_cannot_follow_falls_back_to_prefixes() {
        let ids = [0, 1, 2, 0];
        let full = odd_decode(&ids).unwrap();
        assert_eq!(full, "aba");
        let w = windowed(&odd_decode, &ids, &full).unwrap();
        assert!(w.is_none(), "{w:?}");
        let p = by_prefixes(&odd_decode, &ids, &full).unwrap();
        assert_eq!(p, vec![1, 1, 2, 3]);
        assert_eq!(
            pieces(&full, &clamp(p, &full)).unwrap(),
            vec!["a", "", "b", "a"]
        );
    }

    #[test]
    fn pieces_refuse_ends_that_do_not_fit() {
        assert_eq!(pieces("aé", &[1, 3]).unwrap(), vec!["a", "é"]);
        assert!(pieces("aé", &[2, 3]).is_none(), "inside é");
        assert!(pieces("aé", &[1]).is_none(), "short of the end");
        assert!(pieces("aé", &[3, 1]).is_none(), "out of order");
        assert!(pieces("aé", &[1, 4]).is_none(), "past the end");
        assert_eq!(pieces("", &[]).unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn ends_are_clamped_to_a_cut_text() {
        assert_eq!(clamp(vec![1, 3, 5], "abc"), vec![1, 3, 3]);
    }
}
