//! Packing documents into fixed-length sequences for `clm`/`mlm`.
//!
//! Documents are laid end to end, each followed by the end-of-text id (and preceded by the
//! beginning-of-text id when asked), and the stream is cut into rows of exactly
//! `seq_len + 1` ids (inputs are `tokens[..seq_len]`, targets `tokens[1..]`). Rows do not
//! overlap, so every id of every document lands in exactly one row; a document longer than
//! the room left continues at the start of the next row.
//!
//! Per row, `doc_ids` names every document that contributed ids, in order, and `doc_starts`
//! the positions where a document begins. A row that begins in the middle of a document
//! lists that document first in `doc_ids` without a start for it, so
//! `doc_ids.len() == doc_starts.len() + 1` exactly when `doc_starts[0] != 0` (or is empty).
//!
//! The tail (the ids left when a work unit ends) is padded to a full row with the pad id
//! (the end-of-text id when the tokenizer has no pad token) by default, so nothing is lost;
//! [`Tail::Drop`] drops it instead, counting the dropped ids.
//!
//! **`sft` packing** ([`SftPacker`], `pack = true`) is different: a conversation is never
//! split, since its response would lose the prompt it answers. Whole conversations are
//! placed first fit: each goes to the earliest open row with room for it, or opens a new
//! row. At most [`SftPacker::OPEN_ROWS`] rows are open at once (the oldest is written when
//! one more is needed), a row with room for fewer than two ids (no conversation can train in
//! less) is written at once, and the rest are written in opening order when the work unit
//! ends. The placement depends only on the conversations' lengths in input order, so it is
//! the same on every run. Rows hold at most `seq_len` ids and are stored unpadded, like
//! unpacked `sft` rows; `doc_starts` marks where each conversation begins (the first at 0).

use serde::{Deserialize, Serialize};

use crate::schema::RowBuilder;

/// What to do with the ids left over at the end of a work unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tail {
    /// Pad the last row to full length with the pad id. The default: no id is lost.
    #[default]
    Pad,
    /// Drop the last, partial row (its ids are counted in the report).
    Drop,
}

/// Packs documents into rows of a fixed length.
#[derive(Debug)]
pub struct Packer {
    len: usize,
    buf: Vec<i32>,
    ids: Vec<String>,
    starts: Vec<i32>,
    /// Rows emitted so far.
    pub rows: u64,
}

impl Packer {
    /// Rows of `row_len` ids (`seq_len + 1`).
    pub fn new(row_len: usize) -> Self {
        assert!(row_len >= 2, "a packed row holds at least two ids");
        Packer {
            len: row_len,
            buf: Vec::with_capacity(row_len),
            ids: Vec::new(),
            starts: Vec::new(),
            rows: 0,
        }
    }

    /// Appends one document's ids (separators included), emitting every row it completes.
    pub fn push(&mut self, doc_id: &str, mut ids: &[i32], out: &mut RowBuilder) {
        let mut first = true;
        while !ids.is_empty() {
            let take = (self.len - self.buf.len()).min(ids.len());
            if first {
                self.starts.push(self.buf.len() as i32);
            }
            self.ids.push(doc_id.to_string());
            self.buf.extend_from_slice(&ids[..take]);
            ids = &ids[take..];
            first = false;
            if self.buf.len() == self.len {
                self.emit(out);
            }
        }
    }

    fn emit(&mut self, out: &mut RowBuilder) {
        out.push_packed(&self.buf, &self.ids, &self.starts);
        self.buf.clear();
        self.ids.clear();
        self.starts.clear();
        self.rows += 1;
    }

    /// Ids waiting for a full row.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Ends the unit: pads or drops the partial row. Returns `(padding ids, dropped ids)`.
    pub fn finish(&mut self, tail: Tail, pad_id: i32, out: &mut RowBuilder) -> (u64, u64) {
        if self.buf.is_empty() {
            return (0, 0);
        }
        match tail {
            Tail::Pad => {
                let pad = self.len - self.buf.len();
                self.buf.resize(self.len, pad_id);
                self.emit(out);
                (pad as u64, 0)
            }
            Tail::Drop => {
                let dropped = self.buf.len() as u64;
                self.buf.clear();
                self.ids.clear();
                self.starts.clear();
                (0, dropped)
            }
        }
    }
}

/// A packed `sft` row being filled.
#[derive(Debug, Default)]
struct OpenRow {
    ids: Vec<i32>,
    mask: Vec<i8>,
    doc_ids: Vec<String>,
    starts: Vec<i32>,
}

/// Packs whole `sft` conversations into rows of at most `seq_len` ids, first fit (see the
/// module docs).
#[derive(Debug)]
pub struct SftPacker {
    seq_len: usize,
    open: Vec<OpenRow>,
    /// Rows emitted so far.
    pub rows: u64,
}

impl SftPacker {
    /// Rows open for more conversations at once: enough for short conversations to fill
    /// the gaps of long ones, few enough that a unit holds little (64 × `seq_len` ids).
    pub const OPEN_ROWS: usize = 64;

    /// Rows of at most `seq_len` ids.
    pub fn new(seq_len: usize) -> Self {
        assert!(seq_len >= 2, "an sft row holds at least two ids");
        SftPacker {
            seq_len,
            open: Vec::new(),
            rows: 0,
        }
    }

    /// Places one conversation (1 to `seq_len` ids, cut by the caller as the unpacked path
    /// cuts it), writing the rows that this fills or pushes out.
    pub fn push(&mut self, doc_id: &str, ids: &[i32], mask: &[i8], out: &mut RowBuilder) {
        debug_assert!(!ids.is_empty() && ids.len() <= self.seq_len && ids.len() == mask.len());
        let n = ids.len().min(self.seq_len);
        let at = match self
            .open
            .iter()
            .position(|r| r.ids.len() + n <= self.seq_len)
        {
            Some(i) => i,
            None => {
                if self.open.len() == Self::OPEN_ROWS {
                    let oldest = self.open.remove(0);
                    self.emit(oldest, out);
                }
                self.open.push(OpenRow::default());
                self.open.len() - 1
            }
        };
        let row = &mut self.open[at];
        row.starts.push(row.ids.len() as i32);
        row.doc_ids.push(doc_id.to_string());
        row.ids.extend_from_slice(&ids[..n]);
        row.mask.extend_from_slice(&mask[..n]);
        if self.seq_len - row.ids.len() < 2 {
            let full = self.open.remove(at);
            self.emit(full, out);
        }
    }

    fn emit(&mut self, row: OpenRow, out: &mut RowBuilder) {
        out.push_sft_packed(&row.ids, &row.mask, &row.doc_ids, &row.starts);
        self.rows += 1;
    }

    /// Ends the unit: writes the open rows in the order they were opened.
    pub fn finish(&mut self, out: &mut RowBuilder) {
        for row in std::mem::take(&mut self.open) {
            self.emit(row, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Objective;
    use arrow::array::{AsArray, ListArray};
    use arrow::datatypes::Int32Type;

    fn rows(b: &mut RowBuilder) -> Vec<(Vec<i32>, Vec<String>, Vec<i32>)> {
        let batch = b.finish().unwrap();
        let list = |i: usize| batch.column(i).as_list::<i32>().clone();
        let (t, d, s): (ListArray, ListArray, ListArray) = (list(0), list(1), list(2));
        (0..batch.num_rows())
            .map(|r| {
                (
                    t.value(r).as_primitive::<Int32Type>().values().to_vec(),
                    d.value(r)
                        .as_string::<i32>()
                        .iter()
                        .map(|x| x.unwrap().to_string())
                        .collect(),
                    s.value(r).as_primitive::<Int32Type>().values().to_vec(),
                )
            })
            .collect()
    }

    /// First fit, table-driven: conversations (as lengths, in input order) -> rows (as
    /// the conversations' letters), with the row cap, full rows and the open-row limit.
    #[test]
    fn sft_conversations_are_packed_whole_first_fit() {
        let cases: &[(&[usize], usize, &[&str])] = &[
            // 3 and 4 share a row; 6 opens a second; 2 fills the first gap (3+4+2 = 9 < 10).
            (&[3, 4, 6, 2], 10, &["abd", "c"]),
            // A row left with room for one id is written at once, before later rows.
            (&[9, 5, 5], 10, &["a", "bc"]),
            // A conversation of exactly seq_len ids is a row of its own.
            (&[10, 1, 1], 10, &["a", "bc"]),
            // A later short conversation goes back to the earliest row with room.
            (&[6, 6, 6, 3], 10, &["ad", "b", "c"]),
        ];
        for (ci, (lens, seq_len, want)) in cases.iter().enumerate() {
            let mut p = SftPacker::new(*seq_len);
            let mut b = RowBuilder::new(Objective::Sft).with_packed(true);
            let mut next = 0i32;
            let mut convs = Vec::new();
            for (k, &n) in lens.iter().enumerate() {
                let ids: Vec<i32> = (next..next + n as i32).collect();
                let mask: Vec<i8> = (0..n).map(|i| i8::from(i % 2 == 1)).collect();
                next += n as i32;
                let name = ((b'a' + k as u8) as char).to_string();
                p.push(&name, &ids, &mask, &mut b);
                convs.push((name, ids, mask));
            }
            p.finish(&mut b);
            assert_eq!(p.rows as usize, want.len(), "case {ci}");
            let batch = b.finish().unwrap();
            assert_eq!(batch.num_columns(), 4, "case {ci}: doc_starts stored");
            let col = |name: &str| batch.column_by_name(name).unwrap().as_list::<i32>().clone();
            let (ids, mask, docs, starts) = (
                col("input_ids"),
                col("loss_mask"),
                col("doc_ids"),
                col("doc_starts"),
            );
            let mut seen = 0;
            for r in 0..batch.num_rows() {
                let d: String = docs
                    .value(r)
                    .as_string::<i32>()
                    .iter()
                    .map(|x| x.unwrap())
                    .collect();
                assert_eq!(d, want[r], "case {ci} row {r}");
                let row_ids = ids.value(r).as_primitive::<Int32Type>().values().to_vec();
                let row_mask = mask
                    .value(r)
                    .as_primitive::<arrow::datatypes::Int8Type>()
                    .values()
                    .to_vec();
                let st = starts
                    .value(r)
                    .as_primitive::<Int32Type>()
                    .values()
                    .to_vec();
                assert!(row_ids.len() <= *seq_len);
                // Each conversation is whole, in place, with its own mask.
                for (j, c) in d.chars().enumerate() {
                    let (_, cids, cmask) = convs.iter().find(|x| x.0 == c.to_string()).unwrap();
                    let s = st[j] as usize;
                    let e = st.get(j + 1).map_or(row_ids.len(), |&e| e as usize);
                    assert_eq!(&row_ids[s..e], &cids[..], "case {ci}");
                    assert_eq!(&row_mask[s..e], &cmask[..], "case {ci}");
                    seen += 1;
                }
            }
            assert_eq!(seen, lens.len(), "case {ci}: every conversation once");
        }
        // More than OPEN_ROWS rows open: the oldest is written first.
        let mut p = SftPacker::new(10);
        let mut b = RowBuilder::new(Objective::Sft).with_packed(true);
        for k in 0..=SftPacker::OPEN_ROWS {
            p.push(&format!("c{k}"), &[1; 6], &[0, 1, 1, 1, 1, 1], &mut b);
        }
        assert_eq!(p.rows, 1);
        let first = b.finish().unwrap();
        let d = first
            .column_by_name("doc_ids")
            .unwrap()
            .as_list::<i32>()
            .value(0);
        assert_eq!(d.as_string::<i32>().value(0), "c0");
    }

    #[test]
    fn table_of_packings() {
        // (documents as lengths, row length, tail) -> rows as (doc ids, starts), padding, dropped
        type Case = (
            &'static [usize],
            usize,
            Tail,
            &'static [(&'static [&'static str], &'static [i32])],
            u64,
            u64,
        );
        let cases: &[Case] = &[
            (
                &[3, 3],
                3,
                Tail::Pad,
                &[(&["a"], &[0]), (&["b"], &[0])],
                0,
                0,
            ),
            (
                &[2, 3],
                4,
                Tail::Pad,
                &[(&["a", "b"], &[0, 2]), (&["b"], &[])],
                3,
                0,
            ),
            (
                &[9],
                4,
                Tail::Pad,
                &[(&["a"], &[0]), (&["a"], &[]), (&["a"], &[])],
                3,
                0,
            ),
            (&[5, 1], 4, Tail::Drop, &[(&["a"], &[0])], 0, 2),
            (
                &[1, 1, 1, 1],
                2,
                Tail::Pad,
                &[(&["a", "b"], &[0, 1]), (&["c", "d"], &[0, 1])],
                0,
                0,
            ),
        ];
        for (ci, (lens, row_len, tail, want, want_pad, want_drop)) in cases.iter().enumerate() {
            let mut p = Packer::new(*row_len);
            let mut b = RowBuilder::new(Objective::Clm);
            let mut next = 0;
            let mut all = Vec::new();
            for (di, &n) in lens.iter().enumerate() {
                let ids: Vec<i32> = (next..next + n as i32).collect();
                next += n as i32;
                all.extend_from_slice(&ids);
                p.push(&((b'a' + di as u8) as char).to_string(), &ids, &mut b);
            }
            let (pad, dropped) = p.finish(*tail, -1, &mut b);
            assert_eq!((pad, dropped), (*want_pad, *want_drop), "case {ci}");
            let got = rows(&mut b);
            assert_eq!(got.len(), want.len(), "case {ci}: {got:?}");
            let mut stream = Vec::new();
            for (r, (w_ids, w_starts)) in got.iter().zip(want.iter()) {
                assert_eq!(r.0.len(), *row_len, "case {ci}");
                assert_eq!(
                    r.1,
                    w_ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    "case {ci}"
                );
                assert_eq!(r.2, w_starts.to_vec(), "case {ci}");
                stream.extend(r.0.iter().copied().filter(|&t| t != -1));
            }
            // Every id lands exactly once, in order (minus what the tail dropped).
            assert_eq!(
                stream,
                all[..all.len() - *want_drop as usize].to_vec(),
                "case {ci}"
            );
        }
    }
}
