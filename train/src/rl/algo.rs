//! The arithmetic of the RL objectives, apart from the loop: advantages per group of samples
//! (GRPO, Dr. GRPO, RLOO), the clipped ratio objective, the k3 KL estimator, token entropy.
//!
//! **Advantages** (one group = the G samples of one prompt, rewards `r_1..r_G`):
//! - `grpo`: `(r_i − mean) / (std + ε)`, `std` the unbiased standard deviation (as
//!   `torch.std` and TRL compute it);
//! - `dr_grpo` (Dr. GRPO, "Understanding R1-Zero-Like Training"): `r_i − mean`, no division;
//! - `rloo`: `r_i − mean_{j≠i} r_j`, the leave-one-out baseline excluding the sample itself
//!   (`= G/(G−1) · (r_i − mean)`).
//!
//! A group whose rewards are all equal has zero advantages under all three (no learning
//! signal); such groups are counted in the step's `zero_std_frac`.
//!
//! **Loss per completion token** t with log-probability `lp_t` under the policy, `old_t`
//! under the policy that sampled (the weights before this step's updates), `ref_t` under the
//! frozen reference, and the sequence's advantage `A`:
//!
//! ```text
//! ratio_t = exp(lp_t − old_t)
//! loss_t  = −min(ratio_t · A, clip(ratio_t, 1 − ε_low, 1 + ε_high) · A) + β · k3_t
//! k3_t    = exp(ref_t − lp_t) − (ref_t − lp_t) − 1          (Schulman's k3, ≥ 0)
//! ```
//!
//! A sequence's loss is the mean of its tokens' (`grpo`, `rloo`), or their sum divided by
//! the constant `max_new_tokens` (`dr_grpo`: no length bias); the step's loss is the mean
//! over the step's sequences. A token is *clipped* when the clipped term is the one taken
//! and differs from the plain one: `ratio < 1 − ε_low` with `A < 0`, or `ratio > 1 + ε_high`
//! with `A > 0` (TRL's `clip_ratio`).

use tch::{Kind, Tensor};

use super::config::Algorithm;

/// Advantages of `rewards` (groups of `group` consecutive samples) and the number of groups
/// whose rewards are all equal.
pub fn advantages(rewards: &[f64], group: usize, algo: Algorithm, eps: f64) -> (Vec<f64>, usize) {
    let mut out = Vec::with_capacity(rewards.len());
    let mut zero_std = 0;
    for g in rewards.chunks(group) {
        let n = g.len() as f64;
        let mean = g.iter().sum::<f64>() / n;
        let var = if g.len() > 1 {
            g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        let std = var.sqrt();
        if std <= 1e-12 {
            zero_std += 1;
        }
        for &r in g {
            out.push(match algo {
                Algorithm::Grpo => (r - mean) / (std + eps),
                Algorithm::DrGrpo => r - mean,
                Algorithm::Rloo => {
                    if g.len() > 1 {
                        r - (g.iter().sum::<f64>() - r) / (n - 1.0)
                    } else {
                        0.0
                    }
                }
            });
        }
    }
    (out, zero_std)
}

/// What one micro-batch's loss gives: the summed sequence losses (with a graph) and the
/// detached sums the metrics need.
#[derive(Debug)]
pub struct LossParts {
    /// Σ over sequences of the sequence loss (divide by the step's sequences).
    pub loss_sum: Tensor,
    /// Σ over completion tokens of k3 (detached, f64).
    pub kl_sum: f64,
    /// Completion tokens whose clipped term was taken.
    pub clipped: f64,
    /// Completion tokens.
    pub tokens: f64,
}

/// The clipped objective with the k3 KL (see the module docs) on `[B, L]` log-probabilities
/// of the completion tokens (`mask` 1 on them, 0 on padding and prompt positions) and `adv`
/// `[B]`. `reference` is needed when `beta > 0`. `length_norm`: `None` divides each
/// sequence's sum by its own token count, `Some(n)` by the constant `n` (Dr. GRPO).
pub fn policy_loss(
    logp: &Tensor,
    old: &Tensor,
    reference: Option<&Tensor>,
    adv: &Tensor,
    mask: &Tensor,
    eps_low: f64,
    eps_high: f64,
    beta: f64,
    length_norm: Option<f64>,
) -> LossParts {
    let k = logp.kind();
    let a = adv.view([-1, 1]);
    let ratio = (logp - old).exp();
    let plain = &ratio * &a;
    let clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * &a;
    let surrogate = -plain.minimum(&clipped);
    let (per_token, kl_sum) = match (reference, beta > 0.0) {
        (Some(r), true) => {
            let d = r - logp;
            let k3 = d.exp() - &d - 1.0;
            let kl_sum = (&k3 * mask).sum(Kind::Double).double_value(&[]);
            (surrogate + k3 * beta, kl_sum)
        }
        _ => (surrogate, 0.0),
    };
    let is_clipped = {
        let low = ratio.lt(1.0 - eps_low).logical_and(&a.lt(0.0));
        let high = ratio.gt(1.0 + eps_high).logical_and(&a.gt(0.0));
        low.logical_or(&high).to_kind(k) * mask
    };
    let per_seq_sum = (per_token * mask).sum_dim_intlist(1, false, k);
    let per_seq = match length_norm {
        Some(n) => per_seq_sum / n,
        None => per_seq_sum / mask.sum_dim_intlist(1, false, k).clamp_min(1.0),
    };
    LossParts {
        loss_sum: per_seq.sum(k),
        kl_sum,
        clipped: is_clipped.sum(Kind::Double).double_value(&[]),
        tokens: mask.sum(Kind::Double).double_value(&[]),
    }
}

/// Σ over masked positions of the entropy of `logits` `[B, L, V]` (detached, f64).
pub fn entropy_sum(logits: &Tensor, mask: &Tensor) -> f64 {
    let _g = tch::no_grad_guard();
    let lp = logits.log_softmax(-1, Kind::Float);
    let h = -(lp.exp() * &lp).sum_dim_intlist(-1, false, Kind::Float);
    (h * mask).sum(Kind::Double).double_value(&[])
}

/// Log-probabilities `[B, L]` of `targets` `[B, L]` under `logits` `[B, L, V]` divided by
/// `temperature` (the sampling distribution, as TRL scores it).
pub fn token_logps(logits: &Tensor, targets: &Tensor, temperature: f64) -> Tensor {
    let l = if temperature > 0.0 && temperature != 1.0 {
        logits / temperature
    } else {
        logits.shallow_clone()
    };
    l.log_softmax(-1, Kind::Float)
        .gather(-1, &targets.unsqueeze(-1), false)
        .squeeze_dim(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} != {b:?}");
        }
    }

    /// Numbers worked out by hand: group [1, 0, 0, 1] has mean 0.5 and unbiased std
    /// sqrt(1/3) = 0.57735; the all-equal group gives 0 and counts as zero-std.
    #[test]
    fn grpo_advantages_and_the_zero_std_group() {
        let r = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0];
        let (a, z) = advantages(&r, 4, Algorithm::Grpo, 1e-4);
        let s = (1.0f64 / 3.0).sqrt() + 1e-4;
        close(
            &a,
            &[0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0.0, 0.0, 0.0, 0.0],
        );
        assert_eq!(z, 1);
        let (a, z) = advantages(&r, 4, Algorithm::DrGrpo, 1e-4);
        close(&a, &[0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(z, 1);
    }

    /// RLOO's baseline is the mean of the others: for [3, 1, 2], sample 0's baseline is
    /// (1 + 2) / 2 = 1.5, sample 1's (3 + 2) / 2 = 2.5, sample 2's (3 + 1) / 2 = 2.
    #[test]
    fn rloo_baseline_excludes_the_sample() {
        let (a, z) = advantages(&[3.0, 1.0, 2.0], 3, Algorithm::Rloo, 1e-4);
        close(&a, &[1.5, -1.5, 0.0]);
        assert_eq!(z, 0);
        // Including the sample in its own baseline would give [1, -1, 0].
        let (a, _) = advantages(&[5.0, 5.0], 2, Algorithm::Rloo, 1e-4);
        close(&a, &[0.0, 0.0]);
    }

    /// With old = current, the ratio is 1: nothing is clipped, and the loss is −A per token
    /// (its mean per sequence); the KL to an equal reference is 0.
    #[test]
    fn ratio_one_gives_minus_the_advantage() {
        let lp = Tensor::from_slice(&[-1.0f32, -2.0, -0.5, -3.0]).view([2, 2]);
        let mask = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 0.0]).view([2, 2]);
        let adv = Tensor::from_slice(&[2.0f32, -1.0]);
        let p = policy_loss(&lp, &lp, Some(&lp), &adv, &mask, 0.2, 0.2, 0.5, None);
        assert!((p.loss_sum.double_value(&[]) - (-2.0 + 1.0)).abs() < 1e-6);
        assert_eq!((p.kl_sum, p.clipped, p.tokens), (0.0, 0.0, 3.0));
        // Dr. GRPO's constant normaliser: (−2·2 + 1·1) / 4.
        let p = policy_loss(&lp, &lp, None, &adv, &mask, 0.2, 0.2, 0.0, Some(4.0));
        assert!((p.loss_sum.double_value(&[]) - (-3.0 / 4.0)).abs() < 1e-6);
    }
}
