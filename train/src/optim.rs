//! AdamW with decoupled weight decay, global-norm clipping and the learning-rate schedule.
//!
//! The optimizer state (first and second moments, and the step count) lives in tensors we
//! own, so a checkpoint saves it and a resumed run continues bit for bit; tch's own
//! optimizers hide their state. Weight decay is decoupled (Loshchilov & Hutter) and applies to
//! weight matrices only by default: norm scales, biases and embeddings are not decayed
//! (embeddings can be with `optim.decay_embeddings`).
//!
//! The per-tensor update follows `torch.optim.AdamW`'s single-tensor algorithm line by line,
//! so the two agree to rounding; with `optim.fused` it calls libtorch's fused kernel
//! (`_fused_adamw_`) through the sidecar instead, on CPU as on CUDA.

use quern_core::Result;
use tch::{Device, Kind, Tensor};

use crate::amp;
use crate::config::{Decay, Fused, OptimConfig};
use crate::model::{ParamStore, Role};

/// The learning rate at optimizer step `step` (0-based): linear warmup from `lr /
/// warmup_steps` to `lr`, then decay to `min_lr` at `max_steps`.
pub fn lr_at(cfg: &OptimConfig, step: u64, max_steps: u64) -> f64 {
    let min_lr = cfg.min_lr.unwrap_or(cfg.lr / 10.0);
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let span = max_steps.saturating_sub(cfg.warmup_steps).max(1) as f64;
    let progress = ((step - cfg.warmup_steps) as f64 / span).clamp(0.0, 1.0);
    match cfg.decay {
        Decay::Constant => cfg.lr,
        Decay::Linear => cfg.lr - (cfg.lr - min_lr) * progress,
        Decay::Cosine => {
            min_lr + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (cfg.lr - min_lr)
        }
    }
}

/// AdamW's state for one model.
#[derive(Debug)]
pub struct AdamW {
    cfg: OptimConfig,
    /// Weight decay of each parameter (0 for norms, biases, embeddings).
    decay: Vec<f64>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Steps taken (skipped steps do not count).
    pub step: u64,
    fused: bool,
}

impl AdamW {
    /// Zeroed state for the parameters of `store`.
    pub fn new(cfg: &OptimConfig, store: &ParamStore, device: Device) -> Self {
        let decay = store
            .params
            .iter()
            .map(|p| match p.role {
                Role::Matrix => cfg.weight_decay,
                Role::Embedding if cfg.decay_embeddings => cfg.weight_decay,
                _ => 0.0,
            })
            .collect();
        let zeros = || {
            store
                .params
                .iter()
                .map(|p| p.tensor.zeros_like().detach())
                .collect::<Vec<_>>()
        };
        let fused = match cfg.fused {
            Fused::On => true,
            Fused::Off => false,
            Fused::Auto => device.is_cuda(),
        };
        AdamW {
            cfg: cfg.clone(),
            decay,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            step: 0,
            fused,
        }
    }

    /// Whether the fused kernel is used.
    pub fn fused(&self) -> bool {
        self.fused
    }

    /// The state tensors with stable names, for checkpoints.
    pub fn state(&self, store: &ParamStore) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.exp_avg.len());
        for (i, p) in store.params.iter().enumerate() {
            out.push((
                format!("exp_avg.{}", p.name),
                self.exp_avg[i].shallow_clone(),
            ));
            out.push((
                format!("exp_avg_sq.{}", p.name),
                self.exp_avg_sq[i].shallow_clone(),
            ));
        }
        out
    }

    /// Restores state saved by [`AdamW::state`].
    pub fn load_state(
        &mut self,
        store: &ParamStore,
        step: u64,
        get: &dyn Fn(&str) -> Result<Tensor>,
    ) -> Result<()> {
        let _g = tch::no_grad_guard();
        for (i, p) in store.params.iter().enumerate() {
            self.exp_avg[i].copy_(&get(&format!("exp_avg.{}", p.name))?);
            self.exp_avg_sq[i].copy_(&get(&format!("exp_avg_sq.{}", p.name))?);
        }
        self.step = step;
        Ok(())
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, store: &mut ParamStore, lr: f64) -> Result<()> {
        let _g = tch::no_grad_guard();
        self.step += 1;
        let (b1, b2, eps) = (self.cfg.beta1, self.cfg.beta2, self.cfg.eps);
        if self.fused {
            return self.fused_step(store, lr);
        }
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.step as i32)).sqrt();
        for (i, p) in store.params.iter_mut().enumerate() {
            let g = p.tensor.grad();
            if !g.defined() {
                continue;
            }
            let wd = self.decay[i];
            if wd != 0.0 {
                let _ = p.tensor.g_mul_scalar_(1.0 - lr * wd);
            }
            let _ = self.exp_avg[i].lerp_(&g, 1.0 - b1);
            let _ = self.exp_avg_sq[i].g_mul_scalar_(b2);
            let _ = self.exp_avg_sq[i].addcmul_(&g, &(&g * (1.0 - b2)));
            // In place after the square root: one temporary instead of three (each the size
            // of the parameter; on CPU every large one is a fresh mapping, so they cost
            // page faults), the same arithmetic as torch's `(v.sqrt() / bc2).add_(eps)`.
            let mut denom = self.exp_avg_sq[i].sqrt();
            let _ = denom.g_div_scalar_(bc2_sqrt);
            let _ = denom.g_add_scalar_(eps);
            let _ = p.tensor.addcdiv_(&(&self.exp_avg[i] * (-lr / bc1)), &denom);
        }
        Ok(())
    }

    fn fused_step(&mut self, store: &ParamStore, lr: f64) -> Result<()> {
        // Like `torch.optim.AdamW(fused=True)`, which increments the step tensors before the
        // kernel reads them for the bias correction: hand it the count including this step.
        let dev = store
            .params
            .first()
            .map_or(Device::Cpu, |p| p.tensor.device());
        let mut groups: Vec<(f64, Vec<usize>)> = Vec::new();
        for (i, p) in store.params.iter().enumerate() {
            if !p.tensor.grad().defined() {
                continue;
            }
            match groups.iter_mut().find(|(wd, _)| *wd == self.decay[i]) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((self.decay[i], vec![i])),
            }
        }
        for (wd, idx) in groups {
            let grads: Vec<Tensor> = idx.iter().map(|&i| store.params[i].tensor.grad()).collect();
            let steps: Vec<Tensor> = idx
                .iter()
                .map(|_| Tensor::from(self.step as f32).to_device(dev))
                .collect();
            let params: Vec<&Tensor> = idx.iter().map(|&i| &store.params[i].tensor).collect();
            let m: Vec<&Tensor> = idx.iter().map(|&i| &self.exp_avg[i]).collect();
            let v: Vec<&Tensor> = idx.iter().map(|&i| &self.exp_avg_sq[i]).collect();
            amp::fused_adamw(
                &params,
                &grads.iter().collect::<Vec<_>>(),
                &m,
                &v,
                &steps.iter().collect::<Vec<_>>(),
                lr,
                (self.cfg.beta1, self.cfg.beta2),
                wd,
                self.cfg.eps,
            )?;
        }
        Ok(())
    }
}

/// Multiplies every gradient by `inv_scale` (undoing loss scaling), returns the global L2
/// norm of the result, and, when it is finite and above `max_norm > 0`, scales the
/// gradients down to `max_norm`. A non-finite norm means the step must be skipped.
pub fn unscale_and_clip(store: &mut ParamStore, inv_scale: f64, max_norm: f64) -> f64 {
    let _g = tch::no_grad_guard();
    let mut grads: Vec<Tensor> = store
        .params
        .iter()
        .map(|p| p.tensor.grad())
        .filter(|g| g.defined())
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    if inv_scale != 1.0 {
        for g in grads.iter_mut() {
            let _ = g.g_mul_scalar_(inv_scale);
        }
    }
    let norms: Vec<Tensor> = grads
        .iter()
        .map(|g| g.to_kind(Kind::Float).norm())
        .collect();
    let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
    if total.is_finite() && max_norm > 0.0 && total > max_norm {
        let coef = max_norm / (total + 1e-6);
        for g in grads.iter_mut() {
            let _ = g.g_mul_scalar_(coef);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::model::Transformer;

    #[test]
    fn schedule_warms_up_then_decays() {
        let _rng = crate::torch_rng_lock();
        let cfg = OptimConfig {
            lr: 1.0,
            min_lr: Some(0.1),
            warmup_steps: 10,
            ..OptimConfig::default()
        };
        let cases = [
            (0, 0.1),
            (9, 1.0),
            (10, 1.0),
            (55, 0.55),
            (100, 0.1),
            (200, 0.1),
        ];
        for (step, want) in cases {
            let got = lr_at(&cfg, step, 100);
            assert!(
                (got - want).abs() < 1e-9,
                "cosine step {step}: {got} != {want}"
            );
        }
        let lin = OptimConfig {
            decay: Decay::Linear,
            ..cfg.clone()
        };
        // Step 32 is 22 of the 90 decay steps after a 10-step warmup.
        assert!((lr_at(&lin, 32, 100) - (1.0 - 0.9 * 22.0 / 90.0)).abs() < 1e-9);
        assert!((lr_at(&lin, 55, 100) - 0.55).abs() < 1e-9);
        let constant = OptimConfig {
            decay: Decay::Constant,
            ..cfg
        };
        assert_eq!(lr_at(&constant, 80, 100), 1.0);
    }

    fn model(bias: bool) -> Transformer {
        tch::manual_seed(3);
        let cfg = ModelConfig {
            layers: 1,
            heads: 2,
            dim: 8,
            seq_len: Some(4),
            vocab_size: Some(16),
            bias,
            ..ModelConfig::default()
        };
        Transformer::new(&cfg, Device::Cpu)
    }

    fn backward(m: &Transformer) {
        let idx = Tensor::from_slice(&[1i64, 5, 7, 2]).view([1, 4]);
        m.forward(&idx, true, true)
            .pow_tensor_scalar(2)
            .sum(Kind::Float)
            .backward();
    }

    #[test]
    fn fused_kernel_matches_the_per_tensor_update() {
        let _rng = crate::torch_rng_lock();
        let cfg = OptimConfig {
            weight_decay: 0.1,
            ..OptimConfig::default()
        };
        // Without biases: the key bias gets a gradient of pure rounding noise (softmax ignores a
        // shift of every key), which Adam scales up to a full-size step, so the two kernels'
        // different rounding would show there and nowhere else.
        let (mut a, mut b) = (model(false), model(false));
        let mut oa = AdamW::new(
            &OptimConfig {
                fused: Fused::Off,
                ..cfg.clone()
            },
            a.params(),
            Device::Cpu,
        );
        let mut ob = AdamW::new(
            &OptimConfig {
                fused: Fused::On,
                ..cfg
            },
            b.params(),
            Device::Cpu,
        );
        for _ in 0..3 {
            for (m, o) in [(&mut a, &mut oa), (&mut b, &mut ob)] {
                m.params_mut().zero_grad();
                backward(m);
                o.step(m.params_mut(), 1e-2).unwrap();
            }
        }
        for (pa, pb) in a.params().params.iter().zip(&b.params().params) {
            let d = (&pa.tensor - &pb.tensor).abs().max().double_value(&[]);
            assert!(d < 1e-6, "{}: fused and per-tensor differ by {d}", pa.name);
        }
    }

    #[test]
    fn norms_and_biases_are_not_decayed() {
        let _rng = crate::torch_rng_lock();
        let cfg = OptimConfig {
            weight_decay: 0.5,
            ..OptimConfig::default()
        };
        let m = model(true);
        let o = AdamW::new(&cfg, m.params(), Device::Cpu);
        for (p, wd) in m.params().params.iter().zip(&o.decay) {
            let want =
                if p.name.ends_with(".bias") || p.name.contains("ln") || p.name.contains("emb") {
                    0.0
                } else {
                    0.5
                };
            assert_eq!(*wd, want, "{}", p.name);
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let _rng = crate::torch_rng_lock();
        let mut m = model(true);
        backward(&m);
        let before = unscale_and_clip(m.params_mut(), 1.0, 0.0);
        assert!(before > 0.01);
        let reported = unscale_and_clip(m.params_mut(), 1.0, before / 4.0);
        assert!((reported - before).abs() / before < 1e-5);
        let after = unscale_and_clip(m.params_mut(), 1.0, 0.0);
        assert!(
            (after - before / 4.0).abs() / before < 1e-4,
            "{after} vs {}",
            before / 4.0
        );
    }
}
