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
