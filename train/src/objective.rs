//! Training objectives: what the model predicts and where the loss counts.
//!
//! An [`Objective`] turns rows of token ids into model inputs and targets ([`Prepared`]),
//! then computes the loss *summed* over target positions. The trainer prepares every
//! micro-batch of a step first, adds up their target counts, and divides each micro-batch's
//! summed loss by that total, so gradient accumulation over k micro-batches gives exactly the
//! gradient of one batch k times larger, even when micro-batches hold different numbers of
//! targets (the normalization bug HF Trainer had). Later objectives (sft, cls, rm, dpo, rl)
//! implement the same trait.

use tch::{Kind, Reduction, Tensor};

use crate::model::Transformer;

/// Targets equal to this are ignored by the loss.
pub const IGNORE: i64 = -100;

/// One micro-batch ready for the model.
#[derive(Debug)]
pub struct Prepared {
    /// Model input ids `[B, T]` (int64), on the model's device.
    pub input: Tensor,
    /// Target ids `[B, T]` (int64), [`IGNORE`] where the loss does not count.
    pub targets: Tensor,
    /// Number of positions where the loss counts.
    pub count: i64,
}

/// A training objective.
pub trait Objective: Send {
    /// Its name in `run.toml` (`train.objective`).
    fn name(&self) -> &'static str;
    /// Whether the model attends causally (decoder) or to the whole sequence (encoder).
    fn causal(&self) -> bool;
    /// Builds inputs and targets from rows `[B, seq_len + 1]` of token ids. May draw from
    /// libtorch's global generator (the trainer seeds it per step, for exact resume).
    fn prepare(&self, rows: &Tensor) -> Prepared;
    /// The loss summed over target positions (a float32 scalar with a graph).
    fn loss_sum(&self, model: &Transformer, batch: &Prepared, train: bool) -> Tensor {
        let logits = model.forward(&batch.input, self.causal(), train);
        let v = logits.size().last().copied().unwrap_or(0);
        logits
            .view([-1, v])
            .to_kind(Kind::Float)
            .cross_entropy_loss(
                &batch.targets.reshape([-1]),
                None::<Tensor>,
                Reduction::Sum,
                IGNORE,
                0.0,
            )
    }
}

/// Causal language modelling: predict token t+1 from tokens up to t.
#[derive(Debug, Clone, Default)]
pub struct Clm;

impl Objective for Clm {
    fn name(&self) -> &'static str {
        "clm"
    }
    fn causal(&self) -> bool {
        true
    }
    fn prepare(&self, rows: &Tensor) -> Prepared {
        let (b, w) = rows.size2().expect("rows are [batch, seq_len + 1]");
        Prepared {
            input: rows.narrow(1, 0, w - 1),
            targets: rows.narrow(1, 1, w - 1),
            count: b * (w - 1),
        }
    }
}

/// Masked language modelling, BERT style: 15% of positions are selected; of those 80% become
/// the mask token, 10% a random token and 10% stay; the loss counts at selected positions.
#[derive(Debug, Clone)]
pub struct Mlm {
    /// Probability that a position is selected. BERT: 0.15.
    pub mask_prob: f64,
    /// The tokenizer's mask token.
    pub mask_id: i64,
    /// Random replacements are drawn from `[0, vocab_size)`.
    pub vocab_size: i64,
    /// Positions holding this id (padding) are never selected.
    pub pad_id: Option<i64>,
}

impl Objective for Mlm {
    fn name(&self) -> &'static str {
        "mlm"
    }
    fn causal(&self) -> bool {
        false
    }
    fn prepare(&self, rows: &Tensor) -> Prepared {
        let (_, w) = rows.size2().expect("rows are [batch, seq_len + 1]");
        // The packed row carries seq_len + 1 ids for clm; mlm uses the first seq_len.
        let input = rows.narrow(1, 0, w - 1);
        let dev = input.device();
        let shape = input.size();
        let mut selected = Tensor::rand(shape.as_slice(), (Kind::Float, dev)).lt(self.mask_prob);
        if let Some(pad) = self.pad_id {
            selected = selected.logical_and(&input.ne(pad));
        }
        let targets = input.where_self(
            &selected,
            &Tensor::full(shape.as_slice(), IGNORE, (Kind::Int64, dev)),
        );
        let r = Tensor::rand(shape.as_slice(), (Kind::Float, dev));
        let to_mask = selected.logical_and(&r.lt(0.8));
        let to_random = selected.logical_and(&r.ge(0.8)).logical_and(&r.lt(0.9));
        let random = Tensor::randint(self.vocab_size, shape.as_slice(), (Kind::Int64, dev));
        let masked = Tensor::full(shape.as_slice(), self.mask_id, (Kind::Int64, dev));
        let input = masked.where_self(&to_mask, &random.where_self(&to_random, &input));
        let count = selected.sum(Kind::Int64).int64_value(&[]);
        Prepared {
            input,
            targets,
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clm_shifts_by_one() {
        let _rng = crate::torch_rng_lock();
        let rows = Tensor::arange(10, (Kind::Int64, tch::Device::Cpu)).view([2, 5]);
        let p = Clm.prepare(&rows);
        assert_eq!(
            Vec::<i64>::try_from(p.input.reshape([-1])).unwrap(),
            vec![0, 1, 2, 3, 5, 6, 7, 8]
        );
        assert_eq!(
            Vec::<i64>::try_from(p.targets.reshape([-1])).unwrap(),
            vec![1, 2, 3, 4, 6, 7, 8, 9]
        );
        assert_eq!(p.count, 8);
    }

    #[test]
    fn mlm_follows_80_10_10() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(7);
        let (b, t) = (64i64, 257i64);
        // Ids 10.. so that the mask id (1) and pad (0) never occur in the input.
        let rows = Tensor::randint_low(10, 1000, [b, t], (Kind::Int64, tch::Device::Cpu));
        let obj = Mlm {
            mask_prob: 0.15,
            mask_id: 1,
            vocab_size: 1000,
            pad_id: Some(0),
        };
        let p = obj.prepare(&rows);
        let orig = rows.narrow(1, 0, t - 1);
        let sel = p.targets.ne(IGNORE);
        let n = p.count as f64;
        let total = (b * (t - 1)) as f64;
        assert!((n / total - 0.15).abs() < 0.01, "selected {n} of {total}");
        // Targets are the original ids where selected.
        assert!(bool::try_from(
            p.targets
                .masked_select(&sel)
                .eq_tensor(&orig.masked_select(&sel))
                .all()
        )
        .unwrap());
        // Unselected positions are untouched.
        let unsel = sel.logical_not();
        assert!(bool::try_from(
            p.input
                .masked_select(&unsel)
                .eq_tensor(&orig.masked_select(&unsel))
                .all()
        )
        .unwrap());
        let inp = p.input.masked_select(&sel);
        let masked = inp.eq(1).sum(Kind::Int64).int64_value(&[]) as f64 / n;
        let kept = inp
            .eq_tensor(&orig.masked_select(&sel))
            .sum(Kind::Int64)
            .int64_value(&[]) as f64
            / n;
        assert!((masked - 0.8).abs() < 0.03, "mask share {masked}");
        // 10% kept on purpose, plus random draws that hit the same id (rare with 1000 ids).
        assert!((kept - 0.1).abs() < 0.03, "kept share {kept}");
    }
}
