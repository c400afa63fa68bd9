//! Mixed precision: bf16/fp16 autocast, TF32, fused AdamW, and dynamic loss scaling.
//!
//! tch exposes only fp16 autocast, so the autocast switches (and TF32 and the fused AdamW
//! kernel) come from a small C++ sidecar (`csrc/sidecar.cpp`) compiled by `build.rs`
//! against the same torch headers as tch. Parameters stay float32 (the master weights):
//! autocast runs matmuls and attention in the low-precision type and keeps reductions,
//! norms and the loss in float32, as `torch.autocast` does.
//!
//! fp16's narrow range needs loss scaling: [`LossScaler`] multiplies the loss before
//! backward, divides the gradients after, halves the scale on an overflowing step (which is
//! skipped) and doubles it after a run of good steps.

use std::ffi::{c_char, c_int, CStr};

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};
use torch_sys::C_tensor;

use crate::config::Precision;

unsafe extern "C" {
    fn quern_free_error(err: *mut c_char);
    fn quern_autocast(cuda: c_int, enabled: c_int, dtype: c_int) -> *mut c_char;
    fn quern_autocast_enabled(cuda: c_int) -> c_int;
    fn quern_set_tf32(enabled: c_int) -> *mut c_char;
    fn quern_fused_adamw(
        params: *const *const C_tensor,
        grads: *const *const C_tensor,
        exp_avgs: *const *const C_tensor,
        exp_avg_sqs: *const *const C_tensor,
        steps: *const *const C_tensor,
        n: c_int,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
}

/// The sidecar's error message (NULL on success, for every function of `csrc/`), freed.
pub(crate) fn take_error(err: *mut c_char) -> Option<String> {
    if err.is_null() {
        return None;
    }
    // SAFETY: the sidecar returns either NULL or a NUL-terminated string from malloc, which we
    // copy and then free exactly once.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { quern_free_error(err) };
    Some(msg)
}

/// Turns the sidecar's error message (NULL on success) into a `Result`.
fn check(err: *mut c_char, what: &str) -> Result<()> {
    match take_error(err) {
        None => Ok(()),
        Some(msg) => Err(Error::usage(format!("libtorch refused {what}: {msg}"))),
    }
}

fn is_cuda(device: Device) -> c_int {
    matches!(device, Device::Cuda(_)) as c_int
}

/// An autocast region: on while the guard lives (like `with torch.autocast(...)`).
#[derive(Debug)]
pub struct AutocastGuard {
    cuda: c_int,
    active: bool,
}

impl AutocastGuard {
    /// Enters autocast for `device` in `precision`; does nothing for fp32.
    pub fn new(device: Device, precision: Precision) -> Result<Self> {
        let cuda = is_cuda(device);
        let dtype = match precision {
            Precision::Fp32 => {
                return Ok(AutocastGuard {
                    cuda,
                    active: false,
                })
            }
            Precision::Bf16 => 0,
            Precision::Fp16 => 1,
        };
        // SAFETY: plain C call with integer arguments; errors come back as a message.
        check(unsafe { quern_autocast(cuda, 1, dtype) }, "autocast")?;
        Ok(AutocastGuard { cuda, active: true })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        if self.active {
            // SAFETY: as in `new`. Leaving autocast cannot meaningfully fail; a message would
            // only come from a broken libtorch, and a destructor has no one to tell.
            let err = unsafe { quern_autocast(self.cuda, 0, 0) };
            let _ = check(err, "leaving autocast");
        }
    }
}

/// Whether autocast is on for the device's type now.
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { quern_autocast_enabled(is_cuda(device)) != 0 }
}

/// Allows or forbids TF32 in CUDA matmuls and convolutions.
pub fn set_tf32(enabled: bool) -> Result<()> {
    // SAFETY: plain C call.
    check(
        unsafe { quern_set_tf32(enabled as c_int) },
        "the TF32 switch",
    )
}

/// One step of libtorch's fused AdamW (`torch.optim.AdamW(fused=True)`) over parameters
/// that share a learning rate and weight decay. `steps` are float32 scalars holding the step
/// count including this step (the bias correction reads them). Every gradient must be defined.
pub fn fused_adamw(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    steps: &[&Tensor],
    lr: f64,
    betas: (f64, f64),
    weight_decay: f64,
    eps: f64,
) -> Result<()> {
    let n = params.len();
    if [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()]
        .iter()
        .any(|&l| l != n)
    {
        return Err(Error::bug("fused_adamw: tensor lists of different lengths"));
    }
    if n == 0 {
        return Ok(());
    }
    let ptrs = |ts: &[&Tensor]| ts.iter().map(|t| t.as_ptr()).collect::<Vec<_>>();
    let (p, g, m, v, s) = (
        ptrs(params),
        ptrs(grads),
        ptrs(exp_avgs),
        ptrs(exp_avg_sqs),
        ptrs(steps),
    );
    // SAFETY: every pointer is a live `at::Tensor*` owned by a `tch::Tensor` borrowed for the
    // duration of the call; the lists have `n` entries each.
    let err = unsafe {
        quern_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n as c_int,
            lr,
            betas.0,
            betas.1,
            weight_decay,
            eps,
        )
    };
    check(err, "the fused AdamW step")
}

/// Dynamic loss scaling for fp16 (a scale of 1 that never changes for other precisions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    pub dynamic: bool,
    pub growth_interval: u64,
    /// Good steps since the last change of scale.
    pub good_steps: u64,
}

impl LossScaler {
    pub fn new(precision: Precision, initial: f64, growth_interval: u64) -> Self {
        match precision {
            Precision::Fp16 => LossScaler {
                scale: initial,
                dynamic: true,
                growth_interval,
                good_steps: 0,
            },
            _ => LossScaler {
                scale: 1.0,
                dynamic: false,
                growth_interval,
                good_steps: 0,
            },
        }
    }

    /// Records whether the step's gradients were finite and adapts the scale.
    pub fn update(&mut self, finite: bool) {
        if !self.dynamic {
            return;
        }
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale = (self.scale * 2.0).min(2f64.powi(24));
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn bf16_autocast_runs_matmuls_in_bf16_on_cpu() {
        let _rng = crate::torch_rng_lock();
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
        assert!(!autocast_enabled(Device::Cpu));
        {
            let _g = AutocastGuard::new(Device::Cpu, Precision::Bf16).unwrap();
            assert!(autocast_enabled(Device::Cpu));
            assert_eq!(a.linear(&w, None::<Tensor>).kind(), Kind::BFloat16);
        }
        assert!(!autocast_enabled(Device::Cpu));
        assert_eq!(a.linear(&w, None::<Tensor>).kind(), Kind::Float);
    }

    #[test]
    fn scaler_halves_on_overflow_and_grows_after_good_steps() {
        let _rng = crate::torch_rng_lock();
        let mut s = LossScaler::new(Precision::Fp16, 1024.0, 2);
        s.update(false);
        assert_eq!(s.scale, 512.0);
        s.update(true);
        s.update(true);
        assert_eq!(s.scale, 1024.0);
        let mut f = LossScaler::new(Precision::Bf16, 1024.0, 2);
        f.update(false);
        assert_eq!(f.scale, 1.0);
    }

    #[test]
    fn tf32_switch_is_accepted() {
        let _rng = crate::torch_rng_lock();
        set_tf32(true).unwrap();
        set_tf32(false).unwrap();
    }
}
