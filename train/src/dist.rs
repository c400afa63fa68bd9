//! Data-parallel training across processes, through c10d (libtorch's `torch.distributed`).
//!
//! `quern train` run by `torchrun --no-python quern train run.toml` (or by anything that
//! sets the same variables) finds `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and
//! `MASTER_PORT` in its environment ([`DistEnv`]) and joins a process group
//! ([`ProcessGroup`]): rank 0 serves a c10d `TCPStore` at `MASTER_ADDR:MASTER_PORT`, every
//! rank announces itself there and waits for the others (`dist.timeout_s`; a rank that never
//! comes is named in the error), then the ranks build `ProcessGroupGloo` (CPU) or
//! `ProcessGroupNCCL` (CUDA device `LOCAL_RANK`). The calls go through the C++ sidecar
//! (`csrc/dist.cpp`). Without those variables nothing here runs and training is the
//! single-process loop, unchanged. What the trainer synchronises: docs/distributed.md.

use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

use quern_core::{Error, Result};
use tch::{Device, Tensor};
use torch_sys::C_tensor;

use crate::model::ParamStore;

unsafe extern "C" {
    fn quern_dist_backends() -> c_int;
    fn quern_dist_init(
        addr: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        cuda: c_int,
        device: c_int,
        agent_store: c_int,
        prefix: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn quern_dist_free(h: *mut c_void);
    fn quern_dist_allreduce(h: *mut c_void, t: *const C_tensor) -> *mut c_char;
    fn quern_dist_broadcast(h: *mut c_void, ts: *const *const C_tensor, n: c_int) -> *mut c_char;
    fn quern_dist_allreduce_grads(
        h: *mut c_void,
        params: *const *const C_tensor,
        n: c_int,
        bucket_bytes: i64,
        buckets: *mut c_int,
    ) -> *mut c_char;
}

/// Turns the sidecar's message (NULL on success) into a `Result`.
fn check(err: *mut c_char) -> Result<()> {
    match crate::amp::take_error(err) {
        None => Ok(()),
        Some(msg) => Err(Error::usage(msg)),
    }
}

/// Whether this build can make a process group on the CPU (Gloo) and on CUDA (NCCL).
pub fn backends() -> (bool, bool) {
    // SAFETY: reads compile-time flags.
    let b = unsafe { quern_dist_backends() };
    (b & 1 != 0, b & 2 != 0)
}

/// Where this process stands in a data-parallel run, as torchrun describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    /// The rank on this node: the CUDA device a rank trains on.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent serves the store at `MASTER_ADDR:MASTER_PORT`
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`): rank 0 connects to it instead of serving one.
    pub agent_store: bool,
    /// torchrun's restart count (`TORCHELASTIC_RESTART_COUNT`, 0 without): the keys of each
    /// attempt live under their own prefix of the (possibly reused) store.
    pub attempt: u64,
}

impl DistEnv {
    /// From the process environment: `None` when neither `RANK` nor `WORLD_SIZE` is set (one
    /// process, as before).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From variables `var` looks up (tests pass their own).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        if var("RANK").is_none() && var("WORLD_SIZE").is_none() {
            return Ok(None);
        }
        let need = |k: &str| {
            var(k).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                Error::usage(format!(
                    "{k} is not set, but RANK or WORLD_SIZE is: a data-parallel run needs RANK, WORLD_SIZE, \
                     MASTER_ADDR and MASTER_PORT (torchrun sets them all)"
                ))
            })
        };
        let number = |k: &str| -> Result<usize> {
            let v = need(k)?;
            v.trim()
                .parse()
                .map_err(|_| Error::usage(format!("{k}={v} is not a non-negative whole number")))
        };
        let rank = number("RANK")?;
        let world_size = number("WORLD_SIZE")?;
        if world_size == 0 || rank >= world_size {
            return Err(Error::usage(format!(
                "RANK={rank} is not in 0..WORLD_SIZE ({world_size})"
            )));
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(_) => number("LOCAL_RANK")?,
            None => rank,
        };
        let master_addr = need("MASTER_ADDR")?.trim().to_string();
        let port = need("MASTER_PORT")?;
        let master_port = port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| Error::usage(format!("MASTER_PORT={port} is not a port (1..65535)")))?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
        let attempt = var("TORCHELASTIC_RESTART_COUNT")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(Some(DistEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            agent_store,
            attempt,
        }))
    }
}

/// A joined c10d process group (Gloo on CPU, NCCL on CUDA).
#[derive(Debug)]
pub struct ProcessGroup {
    handle: *mut c_void,
    pub rank: usize,
    pub world_size: usize,
    /// Where small tensors (counts, cursors) are reduced: the training device.
    device: Device,
}

// SAFETY: the handle is owned by this value alone; c10d's backends are safe to call from any
// one thread at a time, which `&self`/`&mut self` borrowing of the trainer guarantees.
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from quern_dist_init and is freed once.
        unsafe { quern_dist_free(self.handle) };
    }
}

impl ProcessGroup {
    /// Joins the group `env` describes, for training on `device`; waits at most `timeout`
    /// for the store and for every rank (and for each collective afterwards).
    pub fn join(env: &DistEnv, timeout: Duration, device: Device) -> Result<Self> {
        let addr = CString::new(env.master_addr.as_str())
            .map_err(|_| Error::usage("MASTER_ADDR holds a NUL byte"))?;
        let (cuda, index) = match device {
            Device::Cuda(i) => (1, i as c_int),
            _ => (0, 0),
        };
        let prefix = CString::new(format!("quern/{}/", env.attempt))
            .map_err(|_| Error::bug("a store prefix with a NUL byte"))?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer; errors come back as a message.
        check(unsafe {
            quern_dist_init(
                addr.as_ptr(),
                c_int::from(env.master_port),
                env.rank as c_int,
                env.world_size as c_int,
                timeout.as_millis().min(i64::MAX as u128) as i64,
                cuda,
                index,
                c_int::from(env.agent_store),
                prefix.as_ptr(),
                &mut handle,
            )
        })?;
        if handle.is_null() {
            return Err(Error::bug("the process group was not created"));
        }
        Ok(ProcessGroup {
            handle,
            rank: env.rank,
            world_size: env.world_size,
            device,
        })
    }

    /// Sums `t` (on the training device) over the ranks, in place.
    pub fn all_reduce(&self, t: &Tensor) -> Result<()> {
        // SAFETY: a live tensor borrowed for the call.
        check(unsafe { quern_dist_allreduce(self.handle, t.as_ptr()) })
    }

    /// The element-wise sum of `values` over the ranks (counts up to 2^53 stay exact).
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::from_slice(values).to_device(self.device);
        self.all_reduce(&t)?;
        Vec::<f64>::try_from(t.to_device(Device::Cpu))
            .map_err(|e| Error::bug(format!("reading a reduced tensor: {e}")))
    }

    /// Every rank's `values` (the same length on every rank), in rank order.
    pub fn gather_u64(&self, values: &[u64]) -> Result<Vec<Vec<u64>>> {
        let n = values.len();
        let mut all = vec![0i64; n * self.world_size];
        for (i, &v) in values.iter().enumerate() {
            all[self.rank * n + i] =
                i64::try_from(v).map_err(|_| Error::bug("a value too large to gather"))?;
        }
        let t = Tensor::from_slice(&all).to_device(self.device);
        self.all_reduce(&t)?;
        let all = Vec::<i64>::try_from(t.to_device(Device::Cpu))
            .map_err(|e| Error::bug(format!("reading gathered values: {e}")))?;
        Ok(all
            .chunks(n.max(1))
            .map(|c| c.iter().map(|&v| v as u64).collect())
            .collect())
    }

    /// Copies rank 0's values of every parameter into every rank's.
    pub fn broadcast_params(&self, store: &ParamStore) -> Result<()> {
        let _g = tch::no_grad_guard();
        let ptrs: Vec<*const C_tensor> = store.params.iter().map(|p| p.tensor.as_ptr()).collect();
        // SAFETY: live tensors borrowed for the call.
        check(unsafe { quern_dist_broadcast(self.handle, ptrs.as_ptr(), ptrs.len() as c_int) })
    }

    /// Sums the gradients of `store`'s parameters over the ranks in flat buckets of at most
    /// `bucket_bytes` (see `quern_dist_allreduce_grads` in csrc/dist.cpp). Returns the
    /// number of buckets.
    pub fn all_reduce_grads(&self, store: &ParamStore, bucket_bytes: u64) -> Result<usize> {
        let _g = tch::no_grad_guard();
        let ptrs: Vec<*const C_tensor> = store.params.iter().map(|p| p.tensor.as_ptr()).collect();
        let mut buckets: c_int = 0;
        // SAFETY: live tensors borrowed for the call; `buckets` is a valid out-pointer.
        check(unsafe {
            quern_dist_allreduce_grads(
                self.handle,
                ptrs.as_ptr(),
                ptrs.len() as c_int,
                bucket_bytes.min(i64::MAX as u64) as i64,
                &mut buckets,
            )
        })?;
        Ok(buckets.max(0) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| v.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_environment_torchrun_sets_is_read_and_checked() {
        assert_eq!(DistEnv::from_vars(vars(&[])).unwrap(), None);
        let full = [
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ];
        let e = DistEnv::from_vars(vars(&full)).unwrap().unwrap();
        assert_eq!(
            (e.rank, e.world_size, e.local_rank, e.master_port),
            (1, 2, 1, 29500)
        );
        let err = |pairs: &[(&str, &str)]| DistEnv::from_vars(vars(pairs)).unwrap_err().to_string();
        assert!(err(&full[..2]).contains("MASTER_ADDR is not set"));
        let mut bad = full;
        bad[0] = ("RANK", "2");
        assert!(err(&bad).contains("RANK=2 is not in 0..WORLD_SIZE (2)"));
        bad = full;
        bad[4] = ("MASTER_PORT", "http");
        assert!(err(&bad).contains("MASTER_PORT=http"));
        bad = full;
        bad[1] = ("WORLD_SIZE", "-1");
        assert!(err(&bad).contains("WORLD_SIZE=-1"));
    }

    /// A group of one rank goes through the whole sidecar path: the store, Gloo, and each
    /// collective leaves a single rank's values as they are.
    #[test]
    fn a_group_of_one_rank_reduces_to_itself() {
        use crate::model::{Param, Role};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = DistEnv {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
            attempt: 0,
        };
        let pg = ProcessGroup::join(&env, Duration::from_secs(10), Device::Cpu).unwrap();
        assert_eq!(pg.sum(&[1.5, 2.0]).unwrap(), vec![1.5, 2.0]);
        assert_eq!(pg.gather_u64(&[3, 4]).unwrap(), vec![vec![3, 4]]);
        let with = Tensor::ones([3], (tch::Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&with * 2.0).sum(tch::Kind::Float).backward();
        let without = Tensor::ones([2], (tch::Kind::Float, Device::Cpu)).set_requires_grad(true);
        let store = ParamStore {
            params: vec![
                Param {
                    name: "with".into(),
                    tensor: with.shallow_clone(),
                    role: Role::Matrix,
                },
                Param {
                    name: "without".into(),
                    tensor: without.shallow_clone(),
                    role: Role::Matrix,
                },
            ],
        };
        assert_eq!(pg.all_reduce_grads(&store, 1 << 20).unwrap(), 1);
        assert_eq!(Vec::<f32>::try_from(with.grad()).unwrap(), vec![2.0; 3]);
        assert!(!without.grad().defined());
        pg.broadcast_params(&store).unwrap();
        assert_eq!(Vec::<f32>::try_from(&with).unwrap(), vec![1.0; 3]);
    }

    #[test]
    fn this_build_has_gloo() {
        // scripts/setup.sh installs libgloo-dev; without it CPU data parallelism is missing.
        assert!(backends().0, "built without gloo's headers (libgloo-dev)");
    }
}
