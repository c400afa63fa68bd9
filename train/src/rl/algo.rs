//! The arithmetic of the RL objectives, apart from the loop: advantages per group of samples
//! (GRPO, Dr. GRPO, RLOO), the clipped ratio objective, the k3 KL estimator, token entropy,
//! and PPO's per-token rewards, generalized advantage estimation and clipped value loss.
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
//!
//! **PPO** (Schulman et al. 2017, as RLHF uses it: Ziegler et al. 2019, TRL's `PPOTrainer`)
//! works per token instead of per sequence. With `old_t`, `ref_t` and the stored values
//! `V_t` (the value head on the hidden state that predicts token t) taken before the
//! step's first update:
//!
//! ```text
//! r_t     = −β · (old_t − ref_t)   (+ the sample's score on its last completion token)
//! δ_t     = r_t + γ · V_{t+1} − V_t                     (V after the last token = 0)
//! A_t     = δ_t + γλ · A_{t+1}          R_t = A_t + V_t (the value targets)
//! Â_t     = (A_t − mean) / sqrt(var + 1e-8)   over every completion token of the step
//! pg_t    = −min(ratio_t · Â_t, clip(ratio_t, 1 − ε_low, 1 + ε_high) · Â_t)
//! vf_t    = ½ · max((v_t − R_t)², (clip(v_t, V_t − c, V_t + c) − R_t)²)
//! loss    = Σ_t (pg_t + vf_coef · vf_t) / (completion tokens of the step)
//! ```
//!
//! The value clip is around the *stored* values `V_t`, not the current ones; `var` is the
//! unbiased variance (TRL's `masked_whiten`).

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
                // PPO's advantages are per token ([`gae`]); its loop does not call this.
                Algorithm::Ppo => r - mean,
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
    let (surrogate, clipped) =
        clipped_surrogate(logp, old, &adv.view([-1, 1]), mask, eps_low, eps_high);
    let (per_token, kl_sum) = match (reference, beta > 0.0) {
        (Some(r), true) => {
            let d = r - logp;
            let k3 = d.exp() - &d - 1.0;
            let kl_sum = (&k3 * mask).sum(Kind::Double).double_value(&[]);
            (surrogate + k3 * beta, kl_sum)
        }
        _ => (surrogate, 0.0),
    };
    let per_seq_sum = (per_token * mask).sum_dim_intlist(1, false, k);
    let per_seq = match length_norm {
        Some(n) => per_seq_sum / n,
        None => per_seq_sum / mask.sum_dim_intlist(1, false, k).clamp_min(1.0),
    };
    LossParts {
        loss_sum: per_seq.sum(k),
        kl_sum,
        clipped,
        tokens: mask.sum(Kind::Double).double_value(&[]),
    }
}

/// The clipped ratio objective per token, `−min(ratio · A, clip(ratio, 1 − ε_low, 1 + ε_high)
/// · A)` with `ratio = exp(logp − old)` and `adv` broadcast to `[B, L]`, and the number of
/// masked tokens whose clipped term was taken (see the module docs).
fn clipped_surrogate(
    logp: &Tensor,
    old: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    eps_low: f64,
    eps_high: f64,
) -> (Tensor, f64) {
    let ratio = (logp - old).exp();
    let plain = &ratio * adv;
    let clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv;
    let low = ratio.lt(1.0 - eps_low).logical_and(&adv.lt(0.0));
    let high = ratio.gt(1.0 + eps_high).logical_and(&adv.gt(0.0));
    let taken = (low.logical_or(&high).to_kind(logp.kind()) * mask)
        .sum(Kind::Double)
        .double_value(&[]);
    (-plain.minimum(&clipped), taken)
}

/// PPO's per-token rewards of one micro-batch (`[B, L]` row-major, `width` = L): `−kl_coef ·
/// kl_t` on every completion token (`mask` 1; `kl` the k1 estimate `old − ref`, none
/// without a reference) and each row's `score` added on its last completion token.
pub fn ppo_rewards(
    kl: Option<&[f64]>,
    mask: &[f64],
    width: usize,
    scores: &[f64],
    kl_coef: f64,
) -> Vec<f64> {
    let mut r = vec![0.0; mask.len()];
    for (row, &score) in scores.iter().enumerate() {
        let base = row * width;
        let mut last = None;
        for t in 0..width {
            if mask[base + t] > 0.0 {
                if let Some(k) = kl {
                    r[base + t] = -kl_coef * k[base + t];
                }
                last = Some(base + t);
            }
        }
        if let Some(i) = last {
            r[i] += score;
        }
    }
    r
}

/// Generalized advantage estimation over each row's completion tokens (`mask` 1), from the
/// end back: `δ_t = r_t + γ·V_{t+1} − V_t`, `A_t = δ_t + γλ·A_{t+1}`, with `V` and `A` zero
/// after the last completion token. Returns the advantages and the returns `A + V` (0 off
/// the mask).
pub fn gae(
    rewards: &[f64],
    values: &[f64],
    mask: &[f64],
    width: usize,
    gamma: f64,
    lam: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut adv = vec![0.0; mask.len()];
    let mut ret = vec![0.0; mask.len()];
    for row in 0..mask.len() / width.max(1) {
        let base = row * width;
        let (mut next_v, mut last) = (0.0, 0.0);
        for t in (0..width).rev() {
            let i = base + t;
            if mask[i] <= 0.0 {
                continue;
            }
            let delta = rewards[i] + gamma * next_v - values[i];
            last = delta + gamma * lam * last;
            adv[i] = last;
            ret[i] = last + values[i];
            next_v = values[i];
        }
    }
    (adv, ret)
}

/// Whitens the masked entries of all `xs` together: `(x − mean) / sqrt(var + 1e-8)` with the
/// unbiased variance over every masked entry; entries off the mask become 0.
pub fn whiten(xs: &mut [Vec<f64>], masks: &[Vec<f64>]) {
    let on = || {
        xs.iter()
            .zip(masks)
            .flat_map(|(x, m)| x.iter().zip(m).filter(|(_, &m)| m > 0.0).map(|(&v, _)| v))
    };
    let n = on().count() as f64;
    if n == 0.0 {
        return;
    }
    let mean = on().sum::<f64>() / n;
    let var = if n > 1.0 {
        on().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let inv = 1.0 / (var + 1e-8).sqrt();
    for (x, m) in xs.iter_mut().zip(masks) {
        for (v, &m) in x.iter_mut().zip(m) {
            *v = if m > 0.0 { (*v - mean) * inv } else { 0.0 };
        }
    }
}

/// What one micro-batch's PPO loss gives: the masked sum of `pg + vf_coef · vf` (with a
/// graph; divide by the step's completion tokens) and detached sums for the metrics.
#[derive(Debug)]
pub struct PpoParts {
    pub loss_sum: Tensor,
    /// Σ pg_t and Σ vf_t over completion tokens.
    pub pg_sum: f64,
    pub vf_sum: f64,
    /// Completion tokens whose clipped ratio term was taken.
    pub clipped: f64,
    /// Completion tokens whose clipped value term was the larger.
    pub vf_clipped: f64,
    pub tokens: f64,
}

/// PPO's clipped policy and value losses (see the module docs) on `[B, L]` tensors:
/// `logp` and `values` under the current weights (with graphs), `old` and `old_values`
/// stored before the step's first update, the whitened advantages `adv`, the value
/// targets `returns`, `mask` 1 on completion tokens.
#[allow(clippy::too_many_arguments)]
pub fn ppo_loss(
    logp: &Tensor,
    old: &Tensor,
    adv: &Tensor,
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    eps_low: f64,
    eps_high: f64,
    clip_value: f64,
    vf_coef: f64,
) -> PpoParts {
    let k = logp.kind();
    let (pg, clipped) = clipped_surrogate(logp, old, adv, mask, eps_low, eps_high);
    let v_clip = values.clamp_tensor(Some(old_values - clip_value), Some(old_values + clip_value));
    let l1 = (values - returns).square();
    let l2 = (&v_clip - returns).square();
    let vf = l1.maximum(&l2) * 0.5;
    let vf_clipped = (l2.gt_tensor(&l1).to_kind(k) * mask)
        .sum(Kind::Double)
        .double_value(&[]);
    let pg = pg * mask;
    let vf = vf * mask;
    let sum = |t: &Tensor| t.detach().sum(Kind::Double).double_value(&[]);
    PpoParts {
        pg_sum: sum(&pg),
        vf_sum: sum(&vf),
        loss_sum: (pg + vf * vf_coef).sum(k),
        clipped,
        vf_clipped,
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

    /// GAE worked out by hand on one row whose first position is a prompt token: rewards
    /// [·, 0, 0, 1], values [·, 0.5, 0.2, 0.4]. With γ = 1, λ = 0.5: δ = [−0.3, 0.2, 0.6],
    /// A_3 = 0.6, A_2 = 0.2 + 0.5·0.6 = 0.5, A_1 = −0.3 + 0.5·0.5 = −0.05. With λ = 1 the
    /// advantages are the return minus the value: [0.5, 0.8, 0.6].
    #[test]
    fn gae_by_hand() {
        let mask = [0.0, 1.0, 1.0, 1.0];
        let r = ppo_rewards(None, &mask, 4, &[1.0], 0.5);
        assert_eq!(r, vec![0.0, 0.0, 0.0, 1.0]);
        let v = [9.0, 0.5, 0.2, 0.4];
        let (a, ret) = gae(&r, &v, &mask, 4, 1.0, 0.5);
        close(&a, &[0.0, -0.05, 0.5, 0.6]);
        close(&ret, &[0.0, 0.45, 0.7, 1.0]);
        let (a, ret) = gae(&r, &v, &mask, 4, 1.0, 1.0);
        close(&a, &[0.0, 0.5, 0.8, 0.6]);
        close(&ret, &[0.0, 1.0, 1.0, 1.0]);
        // γ = 0.5 discounts the next value: δ_2 = 0 + 0.5·0.4 − 0.2 = 0.
        let (a, _) = gae(&r, &v, &mask, 4, 0.5, 0.0);
        close(&a, &[0.0, 0.5 * 0.2 - 0.5, 0.0, 0.6]);
        // The KL term: −β·kl on each completion token, the score on the last one.
        let kl = [5.0, 0.2, -0.4, 1.0, 0.0, 0.3, 0.0, 0.0];
        let mask2 = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0];
        let r = ppo_rewards(Some(&kl), &mask2, 4, &[2.0, -1.0], 0.5);
        close(&r, &[0.0, -0.1, 0.2, 1.5, 0.0, -1.15, 0.0, 0.0]);
    }

    /// Whitening uses the unbiased variance of the masked entries of every batch together.
    #[test]
    fn whitening_spans_the_batches() {
        let mut xs = vec![vec![1.0, 99.0], vec![3.0]];
        whiten(&mut xs, &[vec![1.0, 0.0], vec![1.0]]);
        // mean 2, unbiased variance 2.
        let s = (2.0f64 + 1e-8).sqrt();
        close(&xs[0], &[-1.0 / s, 0.0]);
        close(&xs[1], &[1.0 / s]);
    }

    /// The value clip is around the stored values: v = 1 with stored 0 and c = 0.2 clips to
    /// 0.2, whose loss ½(0.2 − 2)² = 1.62 beats the plain ½(1 − 2)² = 0.5 and has no
    /// gradient (the clamp is flat there); with target 0.5 the plain term is the larger.
    #[test]
    fn value_clipping_uses_the_stored_values() {
        let one = |x: f32| Tensor::from_slice(&[x]).view([1, 1]);
        let mask = one(1.0);
        let lp = one(-1.0);
        for (ret, want, clipped, grad) in [(2.0, 1.62, 1.0, 0.0), (0.5, 0.125, 0.0, 0.05)] {
            let v = one(1.0).set_requires_grad(true);
            let p = ppo_loss(
                &lp,
                &lp,
                &one(0.0),
                &v,
                &one(0.0),
                &one(ret),
                &mask,
                0.2,
                0.2,
                0.2,
                0.1,
            );
            assert!((p.vf_sum - want).abs() < 1e-6, "{} vs {want}", p.vf_sum);
            assert_eq!((p.vf_clipped, p.pg_sum, p.tokens), (clipped, 0.0, 1.0));
            p.loss_sum.backward();
            // d(0.1 · ½(v − R)²)/dv = 0.1 · (1 − 0.5).
            assert!((v.grad().double_value(&[0, 0]) - grad).abs() < 1e-6);
        }
        // Clipping around the current values instead would never clip: same call, stored
        // values equal to the current ones.
        let v = one(1.0);
        let p = ppo_loss(
            &lp,
            &lp,
            &one(0.0),
            &v,
            &v,
            &one(2.0),
            &mask,
            0.2,
            0.2,
            0.2,
            0.1,
        );
        assert_eq!(p.vf_clipped, 0.0);
        assert!((p.vf_sum - 0.5).abs() < 1e-6);
    }
}
