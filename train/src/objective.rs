//! Training objectives: what the model predicts and where the loss counts.
//!
//! An [`Objective`] turns rows of token ids into model inputs and targets ([`Prepared`]),
//! then computes the loss *summed* over target positions. The trainer prepares every
//! micro-batch of a step first, adds up their target counts, and divides each micro-batch's
//! summed loss by that total, so gradient accumulation over k micro-batches gives exactly the
//! gradient of one batch k times larger, even when micro-batches hold different numbers of
//! targets (the normalization bug HF Trainer had). Later objectives (cls, rm, dpo, rl)
//! implement the same trait.
//!
//! [`Sft`] is causal language modelling where only response tokens count: the target at
//! position t is id t+1, counted when `loss_mask[t+1]` is 1, so its count (the normalizer)
//! is the number of response tokens of the whole step, however they fall into micro-batches.
//!
//! [`Rm`] and [`Dpo`] train on preference pairs: their count is the pairs, and
//! [`Objective::pairs`] gives each pair's scores for the metrics.
//!
//! [`Nsp`] (BERT pretraining) has two such terms, each with its own count: the masked-LM
//! loss over masked positions and the next-sentence loss over rows ([`Terms`]); the trainer
//! normalises each over the whole step, so accumulation holds for both.

use quern_core::{Error, Result};
use tch::{Kind, Reduction, Tensor};

use crate::data::Rows;
use crate::model::Transformer;
use quern_models::transformer::Extras;

/// Targets equal to this are ignored by the loss.
pub const IGNORE: i64 = -100;

/// One micro-batch ready for the model.
#[derive(Debug)]
pub struct Prepared {
    /// Model input ids `[B, T]` (int64), on the model's device.
    pub input: Tensor,
    /// Target ids `[B, T]` (int64), [`IGNORE`] where the loss does not count.
    pub targets: Tensor,
    /// Number of positions where the loss counts (`cls`: examples).
    pub count: i64,
    /// `cls`, `nsp`: which input ids are real tokens `[B, T]` (int64 0/1); `None` otherwise.
    pub mask: Option<Tensor>,
    /// Packed `sft` rows: the conversation of each input id `[B, T]` (int64); the model
    /// attends only inside a conversation, with positions restarting at each. `None`
    /// otherwise.
    pub segments: Option<Tensor>,
    /// `nsp`: the token types and next-sentence labels; `None` otherwise.
    pub nsp: Option<NspParts>,
}

/// What an `nsp` micro-batch holds beside its MLM inputs and targets.
#[derive(Debug)]
pub struct NspParts {
    /// Token types `[B, T]` (int64): 0 for `[CLS]` A `[SEP]`, 1 for B `[SEP]`.
    pub token_types: Tensor,
    /// Next-sentence labels `[B]` (int64): 0 = B follows A, 1 = B is random.
    pub labels: Tensor,
}

impl NspParts {
    /// Rows in the micro-batch: the NSP loss's count.
    pub fn rows(&self) -> i64 {
        self.labels.size().first().copied().unwrap_or(0)
    }
}

/// A loss of two terms, each summed over its own targets: BERT pretraining's masked-LM
/// cross-entropy (over the masked positions, [`Prepared::count`]) and next-sentence
/// cross-entropy (over the rows). The trainer divides each by its count over the whole step
/// and adds them, as `BertForPreTraining`'s `loss` adds the two means.
#[derive(Debug)]
pub struct Terms {
    /// MLM cross-entropy summed over the masked positions (fp32 scalar with a graph).
    pub mlm_sum: Tensor,
    /// NSP cross-entropy summed over the rows (fp32 scalar with a graph).
    pub nsp_sum: Tensor,
    /// Rows whose highest NSP logit is their label (int64 scalar).
    pub nsp_correct: Tensor,
}

/// What a preference micro-batch of `n` pairs gives ([`Objective::pairs`]).
#[derive(Debug)]
pub struct Pairs {
    /// The loss summed over the pairs (fp32 scalar with a graph).
    pub loss_sum: Tensor,
    /// Each pair's score of the chosen completion `[n]` (fp32, detached): the reward (`rm`)
    /// or the implicit reward `β · (log π − log π_ref)` (`dpo`).
    pub chosen: Tensor,
    /// The same for the rejected completion `[n]`.
    pub rejected: Tensor,
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
    /// Builds inputs and targets from a micro-batch as a source gives it (see
    /// [`Rows`]). Default: [`prepare`](Self::prepare) on packed rows; rows with a loss mask
    /// (`sft` rows) are refused, since an objective that ignored the mask would train on
    /// prompts and padding.
    fn prepare_rows(&self, rows: &Rows) -> Result<Prepared> {
        if rows.labels.is_some() {
            return Err(Error::bad_config(
                "train.objective",
                format!(
                    "`{}` trains on packed rows, but the data holds cls rows (input_ids + label): \
                     set train.objective = \"cls\"",
                    self.name()
                ),
            ));
        }
        if rows.loss_mask.is_some() {
            return Err(Error::bad_config(
                "train.objective",
                format!(
                    "`{}` trains on packed rows, but the data holds sft rows (input_ids + loss_mask): \
                     set train.objective = \"sft\"",
                    self.name()
                ),
            ));
        }
        Ok(self.prepare(&rows.ids))
    }
    /// Whether the model's input drops the row's last id (which is only a target), as in
    /// language modelling; `false` when the whole row is input (`cls`).
    fn shifts(&self) -> bool {
        true
    }
    /// The summed loss ([`loss_sum`](Self::loss_sum)) and, for a classifier, each row's
    /// predicted class `[B]` (int64), for validation metrics. Default: no predictions.
    fn loss_and_predictions(
        &self,
        model: &Transformer,
        batch: &Prepared,
        train: bool,
    ) -> (Tensor, Option<Tensor>) {
        (self.loss_sum(model, batch, train), None)
    }
    /// Objectives whose loss has two terms with their own counts (`nsp`): the terms of a
    /// micro-batch. Default: `None` (one term, [`loss_sum`](Self::loss_sum)).
    fn terms(&self, _model: &Transformer, _batch: &Prepared, _train: bool) -> Option<Terms> {
        None
    }
    /// Whether the objective trains on preference pairs (`rm`, `dpo`): its micro-batches
    /// come from [`crate::data::PrefRows`] and their loss and scores from
    /// [`pairs`](Self::pairs). Default `false`.
    fn pairwise(&self) -> bool {
        false
    }
    /// Preference objectives: the micro-batch's summed loss and each pair's scores. Default
    /// `None`.
    fn pairs(&self, _model: &Transformer, _batch: &Prepared, _train: bool) -> Option<Pairs> {
        None
    }
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
            mask: None,
            segments: None,
            nsp: None,
        }
    }
}

/// Supervised fine-tuning: causal language modelling whose loss counts only on response
/// tokens (`loss_mask` 1), the end-of-turn tokens included; prompts and padding are ignored.
/// Rows are `sft` rows (one conversation each, right-padded by [`crate::data::SftRows`]).
#[derive(Debug, Clone, Default)]
pub struct Sft;

impl Sft {
    /// Inputs and targets of rows `[B, W]` with their loss mask `[B, W]` (1 = the id is a
    /// target that counts): input ids `0..W-1`, target at t the id t+1, [`IGNORE`]d unless
    /// `mask[t+1]` is 1.
    pub fn shift(ids: &Tensor, mask: &Tensor) -> Prepared {
        Sft::shift_packed(ids, mask, None)
    }

    /// [`shift`](Self::shift) for rows that pack several conversations, `segments` `[B, W]`
    /// giving each id's conversation ([`Rows::segments`]): a target counts only inside its
    /// conversation (the first id of the next one is never the target of the last id of the
    /// one before), so the count is the response tokens each conversation has alone.
    pub fn shift_packed(ids: &Tensor, mask: &Tensor, segments: Option<&Tensor>) -> Prepared {
        let w = ids.size().last().copied().unwrap_or(0);
        if w < 2 {
            let b = ids.size().first().copied().unwrap_or(0);
            let empty = Tensor::zeros([b, 0], (Kind::Int64, ids.device()));
            return Prepared {
                input: empty.shallow_clone(),
                targets: empty,
                count: 0,
                mask: None,
                segments: None,
                nsp: None,
            };
        }
        let mut counts = mask.narrow(1, 1, w - 1).ne(0);
        if let Some(g) = segments {
            counts = counts.logical_and(&g.narrow(1, 1, w - 1).eq_tensor(&g.narrow(1, 0, w - 1)));
        }
        let next = ids.narrow(1, 1, w - 1);
        let targets = next.where_self(&counts, &Tensor::full_like(&next, IGNORE));
        Prepared {
            input: ids.narrow(1, 0, w - 1),
            targets,
            count: counts.sum(Kind::Int64).int64_value(&[]),
            mask: None,
            segments: segments.map(|g| g.narrow(1, 0, w - 1)),
            nsp: None,
        }
    }
}

impl Objective for Sft {
    fn name(&self) -> &'static str {
        "sft"
    }
    fn causal(&self) -> bool {
        true
    }
    /// Rows without a mask: every target counts (as [`Clm`]).
    fn prepare(&self, rows: &Tensor) -> Prepared {
        Sft::shift(rows, &Tensor::ones_like(rows))
    }
    fn prepare_rows(&self, rows: &Rows) -> Result<Prepared> {
        match &rows.loss_mask {
            Some(mask) => Ok(Sft::shift_packed(&rows.ids, mask, rows.segments.as_ref())),
            None => Err(Error::bad_config(
                "train.objective",
                "`sft` trains on sft rows (input_ids + loss_mask), but the data holds packed rows: \
                 tokenize with --objective sft, or set train.objective = \"clm\"",
            )),
        }
    }
    /// Packed rows: each conversation attends only to itself, with positions from 0
    /// ([`quern_models::transformer::positions_from_segments`]), so a conversation's logits
    /// are those it has alone; other rows: plain causal attention.
    fn loss_sum(&self, model: &Transformer, batch: &Prepared, train: bool) -> Tensor {
        let Some(seg) = &batch.segments else {
            return summed_ce(&model.forward(&batch.input, true, train), &batch.targets);
        };
        let positions = quern_models::transformer::positions_from_segments(seg);
        let extras = Extras {
            positions: Some(&positions),
            segments: Some(seg),
            ..Extras::default()
        };
        // Segments come from the reader with the ids' shape, and rows were checked against
        // the model's context before training.
        let hidden = model
            .hidden(&batch.input, &extras, true, train, None)
            .unwrap_or_else(|e| panic!("{e}"));
        summed_ce(&model.logits(&hidden), &batch.targets)
    }
}

/// Cross-entropy of logits `[.., V]` against targets (ignoring [`IGNORE`]), summed, in fp32.
fn summed_ce(logits: &Tensor, targets: &Tensor) -> Tensor {
    let v = logits.size().last().copied().unwrap_or(0);
    logits
        .view([-1, v])
        .to_kind(Kind::Float)
        .cross_entropy_loss(
            &targets.reshape([-1]),
            None::<Tensor>,
            Reduction::Sum,
            IGNORE,
            0.0,
        )
}

/// Sequence classification: the model's classification head ([`quern_models::head`]) reads
/// each `cls` row whole, and the loss is the cross-entropy of its logits against the row's
/// label, weighted by `class_weights[label]` when given. The count is the number of rows,
/// so the step's loss is `Σ w_label · CE / N` over its N rows however they fall into
/// micro-batches (note: PyTorch's weighted `mean` divides by `Σ w_label` instead).
#[derive(Debug, Clone, Default)]
pub struct Cls {
    /// One weight per class, or none (every class 1).
    pub class_weights: Option<Vec<f64>>,
}

impl Cls {
    fn logits(&self, model: &Transformer, batch: &Prepared, train: bool) -> Tensor {
        let mask = batch
            .mask
            .as_ref()
            .map(|m| m.shallow_clone())
            .unwrap_or_else(|| Tensor::ones_like(&batch.input));
        // Rows were checked against the model's context and vocabulary before training, and
        // the trainer builds the head before it builds the objective.
        model
            .classify(&batch.input, &mask, train)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn loss_of(&self, logits: &Tensor, targets: &Tensor) -> Tensor {
        let weights = self.class_weights.as_ref().map(|w| {
            Tensor::from_slice(w)
                .to_kind(Kind::Float)
                .to_device(logits.device())
        });
        let per_row =
            logits.cross_entropy_loss(targets, None::<Tensor>, Reduction::None, IGNORE, 0.0);
        match weights {
            Some(w) => (per_row * w.index_select(0, targets)).sum(Kind::Float),
            None => per_row.sum(Kind::Float),
        }
    }
}

impl Objective for Cls {
    fn name(&self) -> &'static str {
        "cls"
    }
    /// Not used: [`Transformer::classify`] runs decoders causally and encoders fully.
    fn causal(&self) -> bool {
        true
    }
    fn shifts(&self) -> bool {
        false
    }
    /// Packed rows have no labels: see [`prepare_rows`](Self::prepare_rows).
    fn prepare(&self, rows: &Tensor) -> Prepared {
        let b = rows.size().first().copied().unwrap_or(0);
        Prepared {
            input: rows.shallow_clone(),
            targets: Tensor::full([b], IGNORE, (Kind::Int64, rows.device())),
            count: 0,
            mask: None,
            segments: None,
            nsp: None,
        }
    }
    fn prepare_rows(&self, rows: &Rows) -> Result<Prepared> {
        let Some(labels) = &rows.labels else {
            return Err(Error::bad_config(
                "train.objective",
                "`cls` trains on cls rows (input_ids + label), but the data holds other rows: \
                 tokenize with --objective cls",
            ));
        };
        let (b, w) = rows
            .ids
            .size2()
            .map_err(|_| Error::bug("cls rows are [batch, width]"))?;
        if rows.lengths.len() as i64 != b || labels.size() != [b] {
            return Err(Error::bug("cls rows, lengths and labels disagree"));
        }
        let lengths: Vec<i64> = rows.lengths.iter().map(|&l| l as i64).collect();
        let dev = rows.ids.device();
        let mask = Tensor::arange(w, (Kind::Int64, dev))
            .view([1, w])
            .lt_tensor(&Tensor::from_slice(&lengths).to_device(dev).view([b, 1]))
            .to_kind(Kind::Int64);
        Ok(Prepared {
            input: rows.ids.shallow_clone(),
            targets: labels.to_device(dev),
            count: b,
            mask: Some(mask),
            segments: None,
            nsp: None,
        })
    }
    fn loss_sum(&self, model: &Transformer, batch: &Prepared, train: bool) -> Tensor {
        self.loss_of(&self.logits(model, batch, train), &batch.targets)
    }
    fn loss_and_predictions(
        &self,
        model: &Transformer,
        batch: &Prepared,
        train: bool,
    ) -> (Tensor, Option<Tensor>) {
        let logits = self.logits(model, batch, train);
        let pred = logits.argmax(1, false);
        (self.loss_of(&logits, &batch.targets), Some(pred))
    }
}

/// The `2n` sequences of a preference micro-batch ([`crate::data::PrefRows`]: prompt +
/// chosen in rows `0..n`, prompt + rejected in rows `n..2n`, right-padded, each with its
/// length and a loss mask of 1 on its completion), checked. Returns `n`.
fn pair_rows(rows: &Rows, name: &str) -> Result<i64> {
    let (Some(mask), false) = (&rows.loss_mask, rows.lengths.is_empty()) else {
        return Err(Error::bad_config(
            "train.objective",
            format!(
                "`{name}` trains on preference pairs (prompt_ids + chosen_ids + rejected_ids), \
                 but the data holds other rows: tokenize with --objective {name}"
            ),
        ));
    };
    let (b, w) = rows
        .ids
        .size2()
        .map_err(|_| Error::bug("preference rows are [2 x pairs, width]"))?;
    if b % 2 != 0 || rows.lengths.len() as i64 != b || mask.size() != [b, w] {
        return Err(Error::bug("preference rows, lengths and masks disagree"));
    }
    Ok(b / 2)
}

/// `[B, W]` (int64): 1 on each row's first `lengths[row]` positions.
fn length_mask(lengths: &[usize], w: i64, dev: tch::Device) -> Tensor {
    let b = lengths.len() as i64;
    let lengths: Vec<i64> = lengths.iter().map(|&l| l as i64).collect();
    Tensor::arange(w, (Kind::Int64, dev))
        .view([1, w])
        .lt_tensor(&Tensor::from_slice(&lengths).to_device(dev).view([b, 1]))
        .to_kind(Kind::Int64)
}

/// Reward modelling: a scalar head ([`quern_models::head::reward_head`]) reads prompt +
/// completion whole and gives its reward from the last real token (decoders; the padding
/// is told apart by each sequence's length, so pad == eos is no trouble, and positions and
/// attention ignore it). The loss of a pair is Bradley–Terry's `-log σ(r_chosen −
/// r_rejected)`, plus `c · (r_chosen + r_rejected)²` with reward centering (TRL's
/// `center_rewards_coefficient`); the count is the pairs, so the step's loss is the mean
/// over its pairs however they fall into micro-batches.
#[derive(Debug, Clone, Default)]
pub struct Rm {
    /// Reward centering's coefficient `c` (0: none).
    pub center: f64,
}

impl Rm {
    /// Each sequence's reward `[2n]` (fp32, with a graph).
    pub fn rewards(model: &Transformer, batch: &Prepared, train: bool) -> Result<Tensor> {
        let mask = batch
            .mask
            .as_ref()
            .ok_or_else(|| Error::bug("an rm micro-batch without its mask"))?;
        Ok(model.classify(&batch.input, mask, train)?.select(1, 0))
    }

    /// The summed loss of rewards `chosen` and `rejected` `[n]`.
    pub fn loss_of(&self, chosen: &Tensor, rejected: &Tensor) -> Tensor {
        let bt = -(chosen - rejected).log_sigmoid().sum(Kind::Float);
        if self.center > 0.0 {
            bt + (chosen + rejected).square().sum(Kind::Float) * self.center
        } else {
            bt
        }
    }
}

impl Objective for Rm {
    fn name(&self) -> &'static str {
        "rm"
    }
    /// Not used: [`Transformer::classify`] runs decoders causally and encoders fully.
    fn causal(&self) -> bool {
        true
    }
    fn shifts(&self) -> bool {
        false
    }
    fn pairwise(&self) -> bool {
        true
    }
    /// Packed rows have no pairs: see [`prepare_rows`](Self::prepare_rows).
    fn prepare(&self, rows: &Tensor) -> Prepared {
        Cls::default().prepare(rows)
    }
    fn prepare_rows(&self, rows: &Rows) -> Result<Prepared> {
        let n = pair_rows(rows, "rm")?;
        let dev = rows.ids.device();
        let w = rows.ids.size()[1];
        Ok(Prepared {
            input: rows.ids.shallow_clone(),
            targets: Tensor::full([2 * n], IGNORE, (Kind::Int64, dev)),
            count: n,
            mask: Some(length_mask(&rows.lengths, w, dev)),
            segments: None,
            nsp: None,
        })
    }
    fn pairs(&self, model: &Transformer, batch: &Prepared, train: bool) -> Option<Pairs> {
        // Rows were checked against the model's context and vocabulary before training, and
        // the trainer builds the reward head before it builds the objective.
        let r = Rm::rewards(model, batch, train).unwrap_or_else(|e| panic!("{e}"));
        let n = batch.count;
        let (chosen, rejected) = (r.narrow(0, 0, n), r.narrow(0, n, n));
        Some(Pairs {
            loss_sum: self.loss_of(&chosen, &rejected),
            chosen: chosen.detach(),
            rejected: rejected.detach(),
        })
    }
    fn loss_sum(&self, model: &Transformer, batch: &Prepared, train: bool) -> Tensor {
        match self.pairs(model, batch, train) {
            Some(p) => p.loss_sum,
            None => Tensor::from(0f32).to_device(model.device()),
        }
    }
}

/// Direct preference optimisation: the policy's and a frozen reference's log-probabilities
/// of each completion, summed over the completion's tokens after the label shift (the
/// target at position t is id t+1, counted where the completion's mask is 1), give
/// `h = (log π(c) − log π(r)) − (log π_ref(c) − log π_ref(r))` per pair; the loss is
/// `-log σ(β h)` (`sigmoid`, DPO), `(h − 1/(2β))²` (`ipo`) or `max(0, 1 − β h)` (`hinge`),
/// a mean over the step's pairs. The scores are the implicit rewards `β · (log π − log
/// π_ref)` of each completion. With policy = reference, `h = 0` and the first loss is
/// `ln 2`, `1/(4β²)` and `1`.
///
/// Unlike TRL, `ipo` uses the summed log-probabilities too (TRL averages them over the
/// completion's tokens for `ipo`).
pub struct Dpo {
    /// β, > 0.
    pub beta: f64,
    /// The loss variant.
    pub loss: crate::config::DpoLoss,
    /// The frozen reference, run without gradients. `None`: the policy itself, detached
    /// (policy = reference; the trainer always sets one).
    pub reference: Option<Transformer>,
}

impl std::fmt::Debug for Dpo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dpo")
            .field("beta", &self.beta)
            .field("loss", &self.loss)
            .field("reference", &self.reference.is_some())
            .finish()
    }
}

impl Dpo {
    /// Each sequence's log-probability `[2n]` (fp32) under `model`: the sum over its
    /// counted targets of `log softmax(logits_t)[target_t]`. The output projection and the
    /// log-softmax run at the counted targets only (the completions), not at the prompt's
    /// positions or the padding.
    pub fn sequence_logps(model: &Transformer, batch: &Prepared, train: bool) -> Tensor {
        let h = model
            .hidden(&batch.input, &Extras::default(), true, train, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let (b, t, dim) = (h.size()[0], h.size()[1], h.size()[2]);
        let targets = batch.targets.reshape([-1]);
        let sel = targets.ne(IGNORE).nonzero().squeeze_dim(1);
        let logits = model
            .logits(&h.reshape([-1, dim]).index_select(0, &sel))
            .to_kind(Kind::Float);
        let nll = logits.cross_entropy_loss(
            &targets.index_select(0, &sel),
            None::<Tensor>,
            Reduction::None,
            IGNORE,
            0.0,
        );
        let row = sel.divide_scalar_mode(t, "floor");
        -Tensor::zeros([b], (Kind::Float, nll.device())).index_add(0, &row, &nll)
    }

    /// The summed loss of the log-ratios `h` `[n]`.
    pub fn loss_of(&self, h: &Tensor) -> Tensor {
        use crate::config::DpoLoss;
        let beta = self.beta;
        let per_pair = match self.loss {
            DpoLoss::Sigmoid => -(h * beta).log_sigmoid(),
            DpoLoss::Ipo => (h - 1.0 / (2.0 * beta)).square(),
            DpoLoss::Hinge => (-(h * beta) + 1.0).relu(),
        };
        per_pair.sum(Kind::Float)
    }
}

impl Objective for Dpo {
    fn name(&self) -> &'static str {
        "dpo"
    }
    fn causal(&self) -> bool {
        true
    }
    fn pairwise(&self) -> bool {
        true
    }
    /// Packed rows have no pairs: see [`prepare_rows`](Self::prepare_rows).
    fn prepare(&self, rows: &Tensor) -> Prepared {
        Cls::default().prepare(rows)
    }
    fn prepare_rows(&self, rows: &Rows) -> Result<Prepared> {
        let n = pair_rows(rows, "dpo")?;
        let mask = rows
            .loss_mask
            .as_ref()
            .ok_or_else(|| Error::bug("checked by pair_rows"))?;
        let mut p = Sft::shift(&rows.ids, mask);
        p.count = n;
        Ok(p)
    }
    fn pairs(&self, model: &Transformer, batch: &Prepared, train: bool) -> Option<Pairs> {
        let policy = Dpo::sequence_logps(model, batch, train);
        let reference = {
            let _g = tch::no_grad_guard();
            Dpo::sequence_logps(self.reference.as_ref().unwrap_or(model), batch, false)
        };
        let n = batch.count;
        let ratio = policy - reference;
        let (c, r) = (ratio.narrow(0, 0, n), ratio.narrow(0, n, n));
        let h = &c - &r;
        Some(Pairs {
            loss_sum: self.loss_of(&h),
            chosen: c.detach() * self.beta,
            rejected: r.detach() * self.beta,
        })
    }
    fn loss_sum(&self, model: &Transformer, batch: &Prepared, train: bool) -> Tensor {
        match self.pairs(model, batch, train) {
            Some(p) => p.loss_sum,
            None => Tensor::from(0f32).to_device(model.device()),
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
        let maskable = self.pad_id.map(|pad| input.ne(pad));
        let (input, targets, count) = self.mask(&input, maskable.as_ref());
        Prepared {
            input,
            targets,
            count,
            mask: None,
            segments: None,
            nsp: None,
        }
    }
}

impl Mlm {
    /// BERT's masking of ids `[B, T]`: each position where `maskable` is true (every one
    /// without it) is selected with `mask_prob`; of those 80% become `mask_id`, 10% a random
    /// id and 10% stay. Returns the input, the targets (the original id where selected,
    /// [`IGNORE`] elsewhere) and the number selected.
    pub fn mask(&self, input: &Tensor, maskable: Option<&Tensor>) -> (Tensor, Tensor, i64) {
        let dev = input.device();
        let shape = input.size();
        let mut selected = Tensor::rand(shape.as_slice(), (Kind::Float, dev)).lt(self.mask_prob);
        if let Some(m) = maskable {
            selected = selected.logical_and(m);
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
        let input = masked.where_self(&to_mask, &random.where_self(&to_random, input));
        let count = selected.sum(Kind::Int64).int64_value(&[]);
        (input, targets, count)
    }
}

/// BERT pretraining: masked-LM on `nsp` sentence pairs (masked as [`Mlm`] masks, never on
/// `[CLS]`, `[SEP]` or padding) plus next-sentence prediction from the pooled `[CLS]` state
/// through the pooler and `cls.seq_relationship` ([`quern_models::head::nsp_head`]). One
/// encoder pass with the pairs' token types and the padding masked feeds both heads; the
/// MLM head reads only the masked positions. The step's loss is the MLM mean over the
/// step's masked positions plus the NSP mean over its rows ([`Terms`]).
#[derive(Debug, Clone)]
pub struct Nsp {
    /// The masking (probability, mask id, vocabulary, pad).
    pub mlm: Mlm,
    /// `[CLS]` and `[SEP]` (the split's bos and eos ids): never masked.
    pub cls_id: i64,
    pub sep_id: i64,
}

impl Objective for Nsp {
    fn name(&self) -> &'static str {
        "nsp"
    }
    fn causal(&self) -> bool {
        false
    }
    fn shifts(&self) -> bool {
        false
    }
    /// Packed rows have no pairs: see [`prepare_rows`](Self::prepare_rows).
    fn prepare(&self, rows: &Tensor) -> Prepared {
        let (input, targets, count) = self.mlm.mask(rows, None);
        Prepared {
            input,
            targets,
            count,
            mask: None,
            segments: None,
            nsp: None,
        }
    }
    fn prepare_rows(&self, rows: &Rows) -> Result<Prepared> {
        let (Some(types), Some(labels)) = (&rows.token_types, &rows.labels) else {
            return Err(Error::bad_config(
                "train.objective",
                "`nsp` trains on nsp rows (input_ids + token_type_ids + next_sentence_label), \
                 but the data holds other rows: tokenize with --objective nsp",
            ));
        };
        let (b, w) = rows
            .ids
            .size2()
            .map_err(|_| Error::bug("nsp rows are [batch, width]"))?;
        if rows.lengths.len() as i64 != b || labels.size() != [b] || types.size() != [b, w] {
            return Err(Error::bug("nsp rows, lengths, types and labels disagree"));
        }
        let dev = rows.ids.device();
        let lengths: Vec<i64> = rows.lengths.iter().map(|&l| l as i64).collect();
        let real = Tensor::arange(w, (Kind::Int64, dev))
            .view([1, w])
            .lt_tensor(&Tensor::from_slice(&lengths).to_device(dev).view([b, 1]));
        let ids = &rows.ids;
        let maskable = real
            .logical_and(&ids.ne(self.cls_id))
            .logical_and(&ids.ne(self.sep_id));
        let (input, targets, count) = self.mlm.mask(ids, Some(&maskable));
        Ok(Prepared {
            input,
            targets,
            count,
            mask: Some(real.to_kind(Kind::Int64)),
            segments: None,
            nsp: Some(NspParts {
                token_types: types.shallow_clone(),
                labels: labels.to_device(dev),
            }),
        })
    }
    fn terms(&self, model: &Transformer, batch: &Prepared, train: bool) -> Option<Terms> {
        let nsp = batch.nsp.as_ref()?;
        let mask = batch.mask.as_ref()?;
        let full = mask.ne(0).all().int64_value(&[]) != 0;
        let extras = Extras {
            token_types: Some(&nsp.token_types),
            key_mask: (!full).then_some(mask),
            ..Extras::default()
        };
        // Rows were checked against the model's context and vocabulary before training,
        // and the trainer builds the NSP head before it builds the objective.
        let hidden = model
            .hidden(&batch.input, &extras, false, train, None)
            .unwrap_or_else(|e| panic!("{e}"));
        // MLM logits only where a target counts: the same loss as over every position.
        let d = hidden.size().last().copied().unwrap_or(0);
        let at = batch
            .targets
            .reshape([-1])
            .ne(IGNORE)
            .nonzero()
            .squeeze_dim(1);
        let picked = hidden.reshape([-1, d]).index_select(0, &at);
        let targets = batch.targets.reshape([-1]).index_select(0, &at);
        let mlm_sum = model
            .logits(&picked)
            .to_kind(Kind::Float)
            .cross_entropy_loss(&targets, None::<Tensor>, Reduction::Sum, IGNORE, 0.0);
        let nsp_logits = model
            .classify_hidden(&hidden, mask)
            .unwrap_or_else(|e| panic!("{e}"));
        let nsp_sum =
            nsp_logits.cross_entropy_loss(&nsp.labels, None::<Tensor>, Reduction::Sum, IGNORE, 0.0);
        let nsp_correct = nsp_logits
            .argmax(1, false)
            .eq_tensor(&nsp.labels)
            .sum(Kind::Int64);
        Some(Terms {
            mlm_sum,
            nsp_sum,
            nsp_correct,
        })
    }
    /// The two terms added unnormalised; the trainer normalises each by its own count
    /// through [`terms`](Self::terms) instead.
    fn loss_sum(&self, model: &Transformer, batch: &Prepared, train: bool) -> Tensor {
        match self.terms(model, batch, train) {
            Some(t) => t.mlm_sum + t.nsp_sum,
            None => Tensor::from(0f32).to_device(model.device()),
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
    fn sft_targets_are_the_next_ids_where_the_next_mask_is_one() {
        let ids = Tensor::from_slice(&[5i64, 6, 7, 8, 9, 1, 2, 3, 4, 0]).view([2, 5]);
        let mask = Tensor::from_slice(&[1i64, 0, 1, 1, 0, 0, 0, 1, 0, 0]).view([2, 5]);
        let rows = Rows {
            ids,
            loss_mask: Some(mask),
            lengths: vec![5, 4],
            labels: None,
            segments: None,
            token_types: None,
        };
        let p = Sft.prepare_rows(&rows).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(p.input.reshape([-1])).unwrap(),
            vec![5, 6, 7, 8, 1, 2, 3, 4]
        );
        let i = IGNORE;
        // Row 1: mask[0] has no prediction; targets 7 and 8 count, 9 (mask 0) does not.
        // Row 2: only the target 3 counts; the padding after it never does.
        assert_eq!(
            Vec::<i64>::try_from(p.targets.reshape([-1])).unwrap(),
            vec![i, 7, 8, i, i, 3, i, i]
        );
        assert_eq!(p.count, 3);
        // Packed rows are refused by sft, and sft rows by clm.
        assert!(Sft
            .prepare_rows(&Rows::packed(rows.ids.shallow_clone()))
            .is_err());
        let e = Clm.prepare_rows(&rows).unwrap_err().to_string();
        assert!(e.contains("train.objective") && e.contains("sft"), "{e}");
    }

    /// The loss is shifted with the labels: changing the last id of a row changes only the
    /// target of the position before it, so it changes the loss exactly when that id is a
    /// response token (mask 1) and leaves it alone when it is a prompt token (mask 0), even
    /// right after a response token (where a mask read one position off would count it).
    #[test]
    fn sft_loss_ignores_prompt_targets_and_counts_response_targets() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(3);
        let cfg = quern_models::config::ModelConfig {
            layers: 1,
            heads: 2,
            dim: 16,
            seq_len: Some(8),
            vocab_size: Some(32),
            ..Default::default()
        };
        let model = Transformer::new(&cfg, tch::Device::Cpu);
        let loss = |ids: &[i64], mask: &[i64]| -> f64 {
            let rows = Rows {
                ids: Tensor::from_slice(ids).view([1, -1]),
                loss_mask: Some(Tensor::from_slice(mask).view([1, -1])),
                lengths: vec![ids.len()],
                labels: None,
                segments: None,
                token_types: None,
            };
            let p = Sft.prepare_rows(&rows).unwrap();
            let _g = tch::no_grad_guard();
            Sft.loss_sum(&model, &p, false).double_value(&[]) / p.count as f64
        };
        let ids = [3i64, 4, 5, 6, 7, 8, 9, 10];
        let mut changed = ids;
        changed[7] = 20;
        // A prompt token after a response: its target is masked.
        let prompt_last = [0i64, 0, 0, 1, 1, 1, 1, 0];
        assert_eq!(loss(&ids, &prompt_last), loss(&changed, &prompt_last));
        // A response token: its target counts.
        let response_last = [0i64, 0, 0, 0, 0, 1, 1, 1];
        let (a, b) = (loss(&ids, &response_last), loss(&changed, &response_last));
        assert!((a - b).abs() > 1e-4, "{a} vs {b}");
    }

    /// Conversations packed into one row (with their segments, as `SftRows` gives a packed
    /// split) give, for GPT-2-like (learned positions) and Llama-like (rotary, GQA) models,
    /// the per-token logits, response-token count and summed loss of each conversation run
    /// alone, within 1e-5; a trained first id of a conversation is never the target of the
    /// conversation before it; changing conversation 1 leaves conversation 2's logits as
    /// they were.
    #[test]
    fn packed_sft_rows_equal_each_conversation_alone() {
        use quern_models::config::ModelConfig;
        let _rng = crate::torch_rng_lock();
        let sized = |c: ModelConfig| ModelConfig {
            layers: 2,
            heads: 4,
            dim: 32,
            seq_len: Some(24),
            vocab_size: Some(40),
            ..c
        };
        let convs: [(&[i64], &[i64]); 3] = [
            (&[1, 5, 9, 3, 7, 2], &[0, 0, 0, 1, 1, 1]),
            // Its first id is marked trained: as a target of the row before, it must not count.
            (&[6, 11, 4, 8], &[1, 0, 1, 1]),
            (&[12, 13, 2, 14, 15, 16, 2], &[0, 0, 0, 1, 1, 0, 1]),
        ];
        for cfg in [
            sized(ModelConfig::gpt2()),
            sized(ModelConfig::llama().with_kv_heads(2)),
        ] {
            tch::manual_seed(11);
            let model = Transformer::new(&cfg, tch::Device::Cpu);
            let _g = tch::no_grad_guard();
            // One row of the three conversations, then two ids of padding.
            let row = |convs: &[(&[i64], &[i64])]| -> Rows {
                let (mut ids, mut mask, mut seg) = (vec![], vec![], vec![]);
                for (k, (i, m)) in convs.iter().enumerate() {
                    ids.extend_from_slice(i);
                    mask.extend_from_slice(m);
                    seg.extend(std::iter::repeat_n(k as i64, i.len()));
                }
                let n = ids.len();
                ids.extend([0, 0]);
                mask.extend([0, 0]);
                seg.extend([convs.len() as i64; 2]);
                Rows {
                    ids: Tensor::from_slice(&ids).view([1, -1]),
                    loss_mask: Some(Tensor::from_slice(&mask).view([1, -1])),
                    lengths: vec![n],
                    labels: None,
                    segments: Some(Tensor::from_slice(&seg).view([1, -1])),
                    token_types: None,
                }
            };
            let packed = Sft.prepare_rows(&row(&convs)).unwrap();
            let logits = |p: &Prepared| {
                let positions = quern_models::transformer::positions_from_segments(
                    p.segments.as_ref().unwrap(),
                );
                let extras = Extras {
                    positions: Some(&positions),
                    segments: p.segments.as_ref(),
                    ..Extras::default()
                };
                model.logits(&model.hidden(&p.input, &extras, true, false, None).unwrap())
            };
            let all = logits(&packed);
            let (mut sum, mut count, mut at) = (0.0, 0, 0);
            for (i, m) in convs {
                let alone = Rows {
                    ids: Tensor::from_slice(i).view([1, -1]),
                    loss_mask: Some(Tensor::from_slice(m).view([1, -1])),
                    lengths: vec![i.len()],
                    labels: None,
                    segments: None,
                    token_types: None,
                };
                let p = Sft.prepare_rows(&alone).unwrap();
                let want = model.forward(&p.input, true, false);
                let n = i.len() as i64 - 1;
                let d = (all.narrow(1, at, n) - &want).abs().max().double_value(&[]);
                assert!(d < 1e-5, "{}: logits differ by {d}", cfg.family());
                sum += Sft.loss_sum(&model, &p, false).double_value(&[]);
                count += p.count;
                at += i.len() as i64;
            }
            assert_eq!((packed.count, count), (8, 8), "{}", cfg.family());
            let got = Sft.loss_sum(&model, &packed, false).double_value(&[]);
            assert!(
                (got - sum).abs() < 1e-5 * sum.abs().max(1.0),
                "{}: packed loss {got} vs {sum}",
                cfg.family()
            );
            // A token of conversation 1 changed: conversation 2's logits stay the same.
            let changed: [(&[i64], &[i64]); 3] =
                [(&[1, 5, 30, 3, 7, 2], convs[0].1), convs[1], convs[2]];
            let other = logits(&Sft.prepare_rows(&row(&changed)).unwrap());
            assert!(
                (other.narrow(1, 0, 5) - all.narrow(1, 0, 5))
                    .abs()
                    .max()
                    .double_value(&[])
                    > 1e-4
            );
            let d = (other.narrow(1, 6, 3) - all.narrow(1, 6, 3))
                .abs()
                .max()
                .double_value(&[]);
            assert_eq!(
                d,
                0.0,
                "{}: conversation 2 saw conversation 1",
                cfg.family()
            );
        }
    }

    /// cls rows: the mask marks each row's real ids, the count is the rows, and the loss
    /// is `Σ w[label] · CE` over them, with CE computed here from the logits by hand.
    #[test]
    fn cls_masks_padding_and_weighs_each_row_by_its_class() {
        use quern_models::head::{HeadConfig, Pooling};
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(3);
        let cfg = quern_models::config::ModelConfig {
            layers: 1,
            heads: 2,
            dim: 16,
            seq_len: Some(8),
            vocab_size: Some(32),
            head: Some(HeadConfig {
                num_labels: 3,
                labels: vec![],
                pooling: Pooling::Last,
                pooler: false,
            }),
            ..Default::default()
        };
        let model = Transformer::new(&cfg, tch::Device::Cpu);
        let rows = Rows {
            ids: Tensor::from_slice(&[3i64, 4, 5, 0, 6, 7, 0, 0]).view([2, 4]),
            loss_mask: None,
            lengths: vec![3, 2],
            labels: Some(Tensor::from_slice(&[2i64, 0])),
            segments: None,
            token_types: None,
        };
        let weighted = Cls {
            class_weights: Some(vec![1.0, 1.0, 3.0]),
        };
        let p = weighted.prepare_rows(&rows).unwrap();
        assert_eq!(p.count, 2);
        let mask = p.mask.as_ref().unwrap();
        assert_eq!(
            Vec::<i64>::try_from(mask.reshape([-1])).unwrap(),
            vec![1, 1, 1, 0, 1, 1, 0, 0]
        );
        let _g = tch::no_grad_guard();
        let logits = model.classify(&p.input, mask, false).unwrap();
        let logp = logits.log_softmax(-1, Kind::Double);
        let ce0 = -logp.double_value(&[0, 2]);
        let ce1 = -logp.double_value(&[1, 0]);
        let w = weighted.loss_sum(&model, &p, false).double_value(&[]);
        assert!(
            (w - (3.0 * ce0 + ce1)).abs() < 1e-5,
            "{w} vs {}",
            3.0 * ce0 + ce1
        );
        let plain = Cls::default().loss_sum(&model, &p, false).double_value(&[]);
        assert!((plain - (ce0 + ce1)).abs() < 1e-5);
        let (_, pred) = weighted.loss_and_predictions(&model, &p, false);
        assert_eq!(
            Vec::<i64>::try_from(pred.unwrap()).unwrap(),
            Vec::<i64>::try_from(logits.argmax(1, false)).unwrap()
        );
        // Other objectives refuse cls rows, and cls refuses packed rows.
        let e = Clm.prepare_rows(&rows).unwrap_err().to_string();
        assert!(e.contains("train.objective") && e.contains("cls"), "{e}");
        assert!(Cls::default()
            .prepare_rows(&Rows::packed(rows.ids.shallow_clone()))
            .is_err());
    }

    /// Two preference pairs of different lengths whose completions end in eos (2), as
    /// [`crate::data::PrefRows`] gives them: right-padded with the pad id 2 (pad == eos).
    fn two_pairs() -> (Vec<(Vec<i32>, usize)>, Rows) {
        let pairs: [(&[i32], &[i32], &[i32]); 2] = [
            (&[5, 6, 7], &[8, 9, 2], &[10, 2]),
            (&[11, 12], &[13, 2], &[14, 15, 16, 17, 2]),
        ];
        let seq = |p: &[i32], c: &[i32]| ([p, c].concat(), p.len());
        let mut seqs: Vec<_> = pairs.iter().map(|(p, c, _)| seq(p, c)).collect();
        seqs.extend(pairs.iter().map(|(p, _, r)| seq(p, r)));
        let rows = crate::data::pair_batch(&seqs, 2);
        (seqs, rows)
    }

    fn tiny(base: quern_models::config::ModelConfig) -> quern_models::config::ModelConfig {
        quern_models::config::ModelConfig {
            layers: 2,
            heads: 2,
            dim: 16,
            seq_len: Some(12),
            vocab_size: Some(32),
            ..base
        }
    }

    /// rm: a sequence's reward is read from its last real token, told apart by length: the
    /// rewards of right-padded pairs with pad == eos equal those of each sequence alone and
    /// left-padded (GPT-2- and Llama-like), while a mask read from the pad id (which drops
    /// the final eos) gives other rewards; the loss is Bradley–Terry plus centering, by hand.
    #[test]
    fn rm_rewards_read_the_last_real_token_under_any_padding() {
        use quern_models::config::ModelConfig;
        use quern_models::head::reward_head;
        let _rng = crate::torch_rng_lock();
        let (seqs, rows) = two_pairs();
        for base in [ModelConfig::gpt2(), ModelConfig::llama().with_kv_heads(1)] {
            let mut cfg = tiny(base);
            cfg.head = Some(reward_head(&cfg));
            tch::manual_seed(5);
            let model = Transformer::new(&cfg, tch::Device::Cpu);
            let _g = tch::no_grad_guard();
            let p = Rm::default().prepare_rows(&rows).unwrap();
            assert_eq!(p.count, 2);
            let got = Vec::<f64>::try_from(Rm::rewards(&model, &p, false).unwrap()).unwrap();
            assert_eq!(got.len(), 4);
            let width = rows.ids.size()[1] as usize;
            for (k, (ids, _)) in seqs.iter().enumerate() {
                let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
                let n = ids.len();
                let alone = model
                    .classify(
                        &Tensor::from_slice(&ids).view([1, -1]),
                        &Tensor::ones([1, n as i64], (Kind::Int64, tch::Device::Cpu)),
                        false,
                    )
                    .unwrap()
                    .double_value(&[0, 0]);
                let mut left = vec![2i64; width - n];
                left.extend(&ids);
                let mut mask = vec![0i64; width - n];
                mask.extend(vec![1i64; n]);
                let left = model
                    .classify(
                        &Tensor::from_slice(&left).view([1, -1]),
                        &Tensor::from_slice(&mask).view([1, -1]),
                        false,
                    )
                    .unwrap()
                    .double_value(&[0, 0]);
                assert!(
                    (got[k] - alone).abs() < 1e-5,
                    "{}: {} vs {alone}",
                    cfg.family(),
                    got[k]
                );
                assert!(
                    (left - alone).abs() < 1e-5,
                    "{}: left {left} vs {alone}",
                    cfg.family()
                );
            }
            // A mask from the pad id drops each sequence's final eos: other rewards.
            let by_pad = model.classify(&p.input, &p.input.ne(2), false).unwrap();
            let d = (by_pad.select(1, 0) - Tensor::from_slice(&got).to_kind(Kind::Float))
                .abs()
                .max()
                .double_value(&[]);
            assert!(d > 1e-4, "{}: {d}", cfg.family());
            let rm = Rm { center: 0.25 };
            let ln_sigmoid = |x: f64| -(1.0 + (-x).exp()).ln();
            let want: f64 = (0..2)
                .map(|k| -ln_sigmoid(got[k] - got[k + 2]) + 0.25 * (got[k] + got[k + 2]).powi(2))
                .sum();
            let loss = rm.loss_sum(&model, &p, false).double_value(&[]);
            assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
            let plain = Rm::default().loss_sum(&model, &p, false).double_value(&[]);
            assert!((plain - loss).abs() > 1e-4);
        }
    }

    /// dpo: a sequence's log-probability is the sum, over its completion's ids only, of the
    /// log-softmax of the logits one position before (computed here from each sequence run
    /// alone); with policy = reference the first losses are ln 2 (sigmoid), 1/(4β²) (ipo) and
    /// 1 (hinge) with zero implicit rewards, and another reference moves them.
    #[test]
    fn dpo_sums_completion_logprobs_and_starts_at_its_formulas() {
        use crate::config::DpoLoss;
        use quern_models::config::ModelConfig;
        let _rng = crate::torch_rng_lock();
        let (seqs, rows) = two_pairs();
        let cfg = tiny(ModelConfig::llama().with_kv_heads(1));
        tch::manual_seed(9);
        let model = Transformer::new(&cfg, tch::Device::Cpu);
        tch::manual_seed(9);
        let same = Transformer::new(&cfg, tch::Device::Cpu);
        tch::manual_seed(10);
        let other = Transformer::new(&cfg, tch::Device::Cpu);
        let _g = tch::no_grad_guard();
        let dpo = |loss, reference| Dpo {
            beta: 0.1,
            loss,
            reference,
        };
        let p = dpo(DpoLoss::Sigmoid, None).prepare_rows(&rows).unwrap();
        assert_eq!(p.count, 2);
        let got = Vec::<f64>::try_from(Dpo::sequence_logps(&model, &p, false)).unwrap();
        for (k, (ids, prompt)) in seqs.iter().enumerate() {
            let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
            let logits = model.forward(&Tensor::from_slice(&ids).view([1, -1]), true, false);
            let lsm = logits.get(0).log_softmax(-1, Kind::Double);
            let want: f64 = (*prompt..ids.len())
                .map(|t| lsm.double_value(&[t as i64 - 1, ids[t]]))
                .sum();
            assert!(
                (got[k] - want).abs() < 1e-4,
                "sequence {k}: {} vs {want}",
                got[k]
            );
        }
        for (loss, want) in [
            (DpoLoss::Sigmoid, std::f64::consts::LN_2),
            (DpoLoss::Ipo, 1.0 / (4.0 * 0.1 * 0.1)),
            (DpoLoss::Hinge, 1.0),
        ] {
            for reference in [None, Some(&same)] {
                let d = Dpo {
                    beta: 0.1,
                    loss,
                    reference: reference.map(|m| {
                        let mut r = Transformer::new(&cfg, tch::Device::Cpu);
                        for q in &mut r.params_mut().params {
                            q.tensor.copy_(m.params().get(&q.name).unwrap());
                        }
                        r
                    }),
                };
                let pairs = d.pairs(&model, &p, false).unwrap();
                let l = pairs.loss_sum.double_value(&[]) / p.count as f64;
                assert!((l - want).abs() < 1e-6 * want, "{loss:?}: {l} vs {want}");
                assert_eq!(pairs.chosen.abs().max().double_value(&[]), 0.0);
                assert_eq!(pairs.rejected.abs().max().double_value(&[]), 0.0);
            }
            let mut r = Transformer::new(&cfg, tch::Device::Cpu);
            for q in &mut r.params_mut().params {
                q.tensor.copy_(other.params().get(&q.name).unwrap());
            }
            let moved = dpo(loss, Some(r)).pairs(&model, &p, false).unwrap();
            let l = moved.loss_sum.double_value(&[]) / p.count as f64;
            assert!((l - want).abs() > 1e-4, "{loss:?}: {l}");
        }
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
