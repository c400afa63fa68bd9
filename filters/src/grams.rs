//! Exact counting of repeated strings by precomputed hashes, shared by the Gopher
//! repetition and FineWeb filters (repeated lines, paragraphs and n-grams).

use crate::text::char_len;

/// How many entries ahead a table slot is worth prefetching.
pub(crate) const PREFETCH: usize = 8;

/// An open-addressing set of indexed items (word n-grams by their first word, lines,
/// paragraphs) keyed by precomputed 64-bit hashes: the slot comes from the hash, and each
/// slot keeps a 32-bit fingerprint of it (never 0: 0 marks a free slot), the index of the
/// item's first occurrence and, when asked, a count. Equal fingerprints are confirmed by
/// comparing the items, so the counts are exact. The probe touches only the 4-byte
/// fingerprint array, which [`GramTable::prefetch`] can load ahead.
#[derive(Default)]
pub(crate) struct GramTable {
    prints: Vec<u32>,
    pub(crate) words: Vec<u32>,
    pub(crate) counts: Vec<u32>,
    shift: u32,
}

impl GramTable {
    /// Empties the table for at most `n` distinct entries (load factor ≤ 1/2), with zeroed
    /// counts if `counts`.
    pub(crate) fn reset(&mut self, n: usize, counts: bool) {
        let cap = (2 * n).next_power_of_two().max(16);
        self.prints.clear();
        self.prints.resize(cap, 0);
        self.words.resize(cap, 0);
        if counts {
            self.counts.clear();
            self.counts.resize(cap, 0);
        }
        self.shift = 64 - cap.trailing_zeros();
    }

    #[inline]
    fn slot(&self, hash: u64) -> usize {
        (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Starts loading the slot `hash` will probe first.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        quern_core::hint::prefetch(&self.prints[self.slot(hash)]);
    }

    /// The slot of the n-gram starting at word `word` (hash `hash`; `same(word, other)`
    /// compares it with a stored one), and whether it was added now.
    #[inline]
    pub(crate) fn entry(
        &mut self,
        hash: u64,
        word: usize,
        same: impl Fn(usize, usize) -> bool,
    ) -> (usize, bool) {
        let print = (hash >> 32) as u32 | 1;
        let mask = self.prints.len() - 1;
        let mut i = self.slot(hash);
        loop {
            let p = self.prints[i];
            if p == 0 {
                self.prints[i] = print;
                self.words[i] = word as u32;
                return (i, true);
            }
            if p == print && same(word, self.words[i] as usize) {
                return (i, false);
            }
            i = (i + 1) & mask;
        }
    }
}

/// datatrove's `find_duplicates`: (how many parts repeat an earlier one, characters in
/// those repeats).
pub(crate) fn count_duplicates(parts: &[&str], table: &mut GramTable) -> (usize, usize) {
    table.reset(parts.len(), false);
    let (mut n, mut chars) = (0, 0);
    for (k, p) in parts.iter().enumerate() {
        let h = xxhash_rust::xxh3::xxh3_64(p.as_bytes());
        if !table.entry(h, k, |x, y| parts[x] == parts[y]).1 {
            n += 1;
            chars += char_len(p);
        }
    }
    (n, chars)
}
