//! Data mixtures (`[[data.mix]]`): several packed splits read as one, each contributing a
//! set share of the rows, Megatron-blend style.
//!
//! **Schedule.** Row `i` (0-based, over the whole run) comes from the source whose share is
//! furthest behind: the `j` with the largest `w_j · (i + 1) − n_j`, `n_j` the rows it gave so
//! far and `w_j` its normalised weight (ties to the first). After `n` rows every source has
//! given `w_j · n` rows to within one, so the realised ratios match the weights as closely as
//! whole rows allow, at every step, not only on average. The schedule depends on nothing
//! but the weights, so a resumed run recomputes every source's position from the rows drawn
//! (the cursor) and continues exactly. Each source keeps its own seeded epoch order; a small
//! source up-sampled past its size starts another epoch (a replay split, typically), a large
//! one down-sampled never reaches its end.

use quern_core::{Error, Result};
use tch::Tensor;

use crate::data::{BatchSource, DataCursor};

/// Sources read as one by weight.
pub struct MixRows {
    sources: Vec<Box<dyn BatchSource>>,
    /// Normalised weights (sum 1).
    weights: Vec<f64>,
    /// Rows each source gave so far.
    counts: Vec<u64>,
    /// Rows given so far (the sum of `counts`).
    drawn: u64,
}

impl std::fmt::Debug for MixRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixRows")
            .field("weights", &self.weights)
            .field("counts", &self.counts)
            .finish()
    }
}

/// The next source of the schedule (see the module docs).
fn pick(weights: &[f64], counts: &[u64], drawn: u64) -> usize {
    let mut best = 0;
    let mut best_gap = f64::NEG_INFINITY;
    for (j, (&w, &n)) in weights.iter().zip(counts).enumerate() {
        let gap = w * (drawn + 1) as f64 - n as f64;
        if gap > best_gap + 1e-12 {
            best = j;
            best_gap = gap;
        }
    }
    best
}

/// Rows each source gives in the first `rows` rows of the schedule.
pub fn schedule_counts(weights: &[f64], rows: u64) -> Vec<u64> {
    let mut counts = vec![0u64; weights.len()];
    for i in 0..rows {
        let j = pick(weights, &counts, i);
        counts[j] += 1;
    }
    counts
}

impl MixRows {
    /// `sources` with raw weights (non-negative, not all zero; the caller names the keys in
    /// errors). Every source must give rows of the same width.
    pub fn new(sources: Vec<Box<dyn BatchSource>>, weights: &[f64]) -> Result<Self> {
        let total: f64 = weights.iter().sum();
        if sources.len() != weights.len() || total <= 0.0 || weights.iter().any(|w| *w < 0.0) {
            return Err(Error::bug(
                "mixture weights must be non-negative, not all zero",
            ));
        }
        let width = sources.first().map(|s| s.row_width()).unwrap_or(0);
        if sources
            .iter()
            .any(|s| s.row_width() != width || !s.fixed_width())
        {
            return Err(Error::bug("mixture sources of different row widths"));
        }
        Ok(MixRows {
            weights: weights.iter().map(|w| w / total).collect(),
            counts: vec![0; sources.len()],
            drawn: 0,
            sources,
        })
    }
}

impl BatchSource for MixRows {
    fn row_width(&self) -> usize {
        self.sources[0].row_width()
    }
    fn rows(&self) -> usize {
        self.sources.iter().map(|s| s.rows()).sum()
    }
    fn next_rows(&mut self, n: usize) -> Result<Tensor> {
        // Which source gives each row, then each source's rows in one read.
        let mut order = Vec::with_capacity(n);
        for _ in 0..n {
            let j = pick(&self.weights, &self.counts, self.drawn);
            self.counts[j] += 1;
            self.drawn += 1;
            order.push(j);
        }
        let mut parts: Vec<Option<(Tensor, i64)>> = Vec::with_capacity(self.sources.len());
        for (j, s) in self.sources.iter_mut().enumerate() {
            let k = order.iter().filter(|&&o| o == j).count();
            parts.push(if k > 0 {
                Some((s.next_rows(k)?, 0))
            } else {
                None
            });
        }
        let mut rows = Vec::with_capacity(n);
        for j in order {
            let (t, at) = parts[j]
                .as_mut()
                .ok_or_else(|| Error::bug("a mixture source without rows"))?;
            rows.push(t.get(*at));
            *at += 1;
        }
        Ok(Tensor::stack(&rows, 0))
    }
    fn cursor(&self) -> DataCursor {
        DataCursor {
            epoch: 0,
            position: self.drawn,
        }
    }
    fn seek(&mut self, cursor: DataCursor) -> Result<()> {
        let counts = schedule_counts(&self.weights, cursor.position);
        for (s, &c) in self.sources.iter_mut().zip(&counts) {
            let per_epoch = s.rows().max(1) as u64;
            s.seek(DataCursor {
                epoch: c / per_epoch,
                position: c % per_epoch,
            })?;
        }
        self.counts = counts;
        self.drawn = cursor.position;
        Ok(())
    }
    fn mix_rows(&self) -> Option<Vec<u64>> {
        Some(self.counts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_keeps_every_share_within_a_row() {
        let w = [0.7, 0.2, 0.1];
        let mut counts = vec![0u64; 3];
        for i in 0..1000u64 {
            let j = pick(&w, &counts, i);
            counts[j] += 1;
            for (k, &c) in counts.iter().enumerate() {
                assert!(
                    (c as f64 - w[k] * (i + 1) as f64).abs() <= 1.0,
                    "row {i}: {counts:?}"
                );
            }
        }
        assert_eq!(counts, vec![700, 200, 100]);
        assert_eq!(schedule_counts(&w, 1000), counts);
        // A zero weight never gives a row.
        assert_eq!(schedule_counts(&[1.0, 0.0], 10), vec![10, 0]);
    }
}
