//! Word splitting and hashing shared by the labelers.
//!
//! Two tokenizers, because the labelers want different things from text:
//!
//! - [`for_each_token`] (classifier): runs of alphanumeric characters are words, and every
//!   other non-space character is a token of its own, so `$`, `!` and `%` keep the signal
//!   they carry for spam or quality classification. Lowercased on request.
//! - [`for_each_norm_word`] (decontamination, lexicons): the GPT-3 / datatrove practice of
//!   comparing text after normalisation: lowercased, punctuation dropped, every run of
//!   digits replaced by `0` (datatrove's `norm_numbers`), so `"The answer: 42."` and
//!   `"the answer 17"` give the same words.
//!
//! Both call a closure with a borrowed `&str` per token and reuse one buffer, so no
//! per-document `String`s are built.

/// The splitmix64 finaliser: a cheap, well-mixed 64-bit hash of a 64-bit value.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xxh3 of a string with a seed.
#[inline]
pub fn hash_str(s: &str, seed: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(s.as_bytes(), seed)
}

/// Calls `f` for every classifier token of `text` (see the module docs).
pub fn for_each_token(text: &str, lowercase: bool, buf: &mut String, mut f: impl FnMut(&str)) {
    buf.clear();
    for c in text.chars() {
        if c.is_alphanumeric() {
            if lowercase && c.is_uppercase() {
                buf.extend(c.to_lowercase());
            } else {
                buf.push(c);
            }
            continue;
        }
        if !buf.is_empty() {
            f(buf);
            buf.clear();
        }
        if !c.is_whitespace() && !c.is_control() {
            let mut tmp = [0u8; 4];
            f(c.encode_utf8(&mut tmp));
        }
    }
    if !buf.is_empty() {
        f(buf);
        buf.clear();
    }
}

/// Calls `f` for every normalised word of `text`, with its byte range in `text` (see the
/// module docs).
pub fn for_each_norm_word(text: &str, buf: &mut String, mut f: impl FnMut(&str, usize, usize)) {
    buf.clear();
    let mut start = 0usize;
    let mut in_digits = false;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            if buf.is_empty() {
                start = i;
            }
            if c.is_numeric() {
                if !in_digits {
                    buf.push('0');
                    in_digits = true;
                }
            } else {
                in_digits = false;
                if c.is_uppercase() {
                    buf.extend(c.to_lowercase());
                } else {
                    buf.push(c);
                }
            }
            continue;
        }
        in_digits = false;
        // An apostrophe inside a word is dropped without splitting it: "don't" -> "dont".
        if (c == '\'' || c == '\u{2019}') && !buf.is_empty() {
            continue;
        }
        if !buf.is_empty() {
            f(buf, start, i);
            buf.clear();
        }
    }
    if !buf.is_empty() {
        f(buf, start, text.len());
        buf.clear();
    }
}

/// The normalised words of `text`, as owned strings (for indexes built once, and tests).
pub fn norm_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = String::new();
    for_each_norm_word(text, &mut buf, |w, _, _| out.push(w.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str, lower: bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = String::new();
        for_each_token(text, lower, &mut buf, |t| out.push(t.to_string()));
        out
    }

    #[test]
    fn classifier_tokens_keep_symbols() {
        let cases: &[(&str, bool, &[&str])] = &[
            (
                "Win $1000 NOW!!",
                true,
                &["win", "$", "1000", "now", "!", "!"],
            ),
            ("Win NOW", false, &["Win", "NOW"]),
            ("  \n ", true, &[]),
            ("Größe ÉTÉ", true, &["größe", "été"]),
        ];
        for (text, lower, want) in cases {
            assert_eq!(tokens(text, *lower), *want, "{text:?}");
        }
    }

    #[test]
    fn norm_words_follow_datatrove() {
        let cases: &[(&str, &[&str])] = &[
            ("The answer: 42.", &["the", "answer", "0"]),
            ("the answer 17", &["the", "answer", "0"]),
            ("Don't STOP-me now", &["dont", "stop", "me", "now"]),
            ("3.14 is pi", &["0", "0", "is", "pi"]),
            ("", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(norm_words(text), *want, "{text:?}");
        }
    }

    #[test]
    fn norm_word_ranges_point_into_the_text() {
        let text = "Hello, wide World";
        let mut spans = Vec::new();
        let mut buf = String::new();
        for_each_norm_word(text, &mut buf, |_, s, e| spans.push(&text[s..e]));
        assert_eq!(spans, ["Hello", "wide", "World"]);
    }
}
