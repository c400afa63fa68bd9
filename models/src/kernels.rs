//! Decoding kernels: matrix products for one to eight rows of activations on the CPU
//! (`csrc/decode.cpp`).
//!
//! At batch 1 to 8, decoding reads every weight once per step and does little arithmetic
//! with it, so its speed is the speed at which the weights stream from memory. libtorch's
//! fp32 matrix-vector product streams them at roughly half the machine's read bandwidth and
//! its int8 weight-only product (bf16 arithmetic, no VNNI) slower still (BENCHMARKS.md,
//! "generate" and "compress"). These kernels read each weight row once for all activation
//! rows, multiply int8 codes with the activations rounded to int16 (exact integer sums; the
//! rounding is 2^-16 of a row's largest value, where libtorch's int8 product rounds to bf16),
//! prefetch the short rows of int8 matrices ahead, and split the rows over libtorch's own
//! intra-op thread pool. SwiGLU's gate and up products run as one pass that applies
//! `silu(gate) * up` as it goes. int4 group-wise weights (`quern compress --quant int4`,
//! groups of 32, 64 or 128) take the same integer path from a block layout of their own
//! ([`pack_int4`]): two codes to a byte, half the bytes of int8, where libtorch's int4 CPU
//! product (bf16 arithmetic) decodes no faster than int8.
//!
//! They are used only where they apply: CPU tensors, f32 activations, at most
//! [`MAX_ROWS`] rows, autograd off (generation and evaluation run under `no_grad`), a CPU
//! with AVX2 and FMA. Everything else goes to libtorch, and so does everything when the
//! environment sets `QUERN_MATVEC=libtorch` (for comparisons) or the calling thread turned
//! them off with [`set_enabled_here`].
use std::cell::Cell;
use std::os::raw::c_int;
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

unsafe extern "C" {
    fn quern_matvec_supported() -> c_int;
    fn quern_grad_enabled() -> c_int;
    fn quern_linear_f32(
        x: *const f32,
        m: i64,
        k: i64,
        w: *const f32,
        n: i64,
        bias: *const f32,
        y: *mut f32,
    );
    fn quern_linear_i8(
        x: *const f32,
        m: i64,
        k: i64,
        codes: *const i8,
        scale: *const f32,
        n: i64,
        bias: *const f32,
        y: *mut f32,
    );
    fn quern_swiglu_f32(
        x: *const f32,
        m: i64,
        k: i64,
        g: *const f32,
        u: *const f32,
        n: i64,
        y: *mut f32,
    );
    fn quern_swiglu_i8(
        x: *const f32,
        m: i64,
        k: i64,
        g: *const i8,
        sg: *const f32,
        u: *const i8,
        su: *const f32,
        n: i64,
        y: *mut f32,
    );
    fn quern_linear_i4(
        x: *const f32,
        m: i64,
        k: i64,
        group: i64,
        codes: *const u8,
        scale: *const f32,
        min: *const f32,
        n: i64,
        bias: *const f32,
        y: *mut f32,
    );
    fn quern_swiglu_i4(
        x: *const f32,
        m: i64,
        k: i64,
        group: i64,
        g: *const u8,
        gs: *const f32,
        gm: *const f32,
        u: *const u8,
        us: *const f32,
        um: *const f32,
        n: i64,
        y: *mut f32,
    );
    fn quern_decode_attention(
        qkv: *mut f32,
        b: i64,
        heads: i64,
        kvh: i64,
        hd: i64,
        cos: *const f32,
        sin: *const f32,
        pos: *const i64,
        past: i64,
        kc: *mut f32,
        vc: *mut f32,
        cap: i64,
        mask: *const u8,
        y: *mut f32,
    );
}

/// The most activation rows (batch × new tokens) the kernels take; larger products
/// (prefill, training) are libtorch's.
pub const MAX_ROWS: i64 = 8;

thread_local! {
    static OFF_HERE: Cell<bool> = const { Cell::new(false) };
    static CALLS_HERE: Cell<u64> = const { Cell::new(0) };
}

/// How many kernel calls the calling thread has made: tests check that the path they mean
/// to test was taken.
pub fn calls_here() -> u64 {
    CALLS_HERE.with(Cell::get)
}

fn grad_enabled() -> bool {
    // SAFETY: reads libtorch's thread-local grad mode.
    unsafe { quern_grad_enabled() != 0 }
}

fn count() {
    CALLS_HERE.with(|c| c.set(c.get() + 1));
}

/// Whether this process may use the kernels: the CPU has AVX2 and FMA, and the
/// environment does not say `QUERN_MATVEC=libtorch`.
pub fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let env_off = std::env::var("QUERN_MATVEC").is_ok_and(|v| v == "libtorch");
        // SAFETY: a CPU feature query with no arguments.
        !env_off && unsafe { quern_matvec_supported() } == 1
    })
}

/// Turns the kernels off (or back on) for the calling thread only: tests compare them with
/// libtorch's products in one process.
pub fn set_enabled_here(on: bool) {
    OFF_HERE.with(|c| c.set(!on));
}

fn enabled_for(x: &Tensor) -> Option<(i64, i64)> {
    if !available() || OFF_HERE.with(Cell::get) {
        return None;
    }
    if x.device() != Device::Cpu || x.kind() != Kind::Float {
        return None;
    }
    let shape = x.size();
    let k = *shape.last()?;
    let m = shape[..shape.len() - 1].iter().product::<i64>();
    if !(1..=MAX_ROWS).contains(&m) || k < 1 {
        return None;
    }
    if grad_enabled() {
        return None;
    }
    Some((m, k))
}

/// Whether `t` is a contiguous CPU tensor of `kind` and shape `dims`.
fn fits(t: &Tensor, kind: Kind, dims: &[i64]) -> bool {
    t.device() == Device::Cpu && t.kind() == kind && t.size() == dims && t.is_contiguous()
}

fn out_shape(x: &Tensor, n: i64) -> Vec<i64> {
    let mut s = x.size();
    if let Some(last) = s.last_mut() {
        *last = n;
    }
    s
}

/// A weight matrix `[n, k]` as the kernels read it: f32, int8 codes with f32 row scales
/// `[n]`, or int4 codes in the kernels' block layout ([`pack_int4`]) with f32 scales and
/// minimums per group of `group` inputs (`w = q · scale + min`).
#[derive(Clone, Copy)]
pub enum Weight<'a> {
    F32(&'a Tensor),
    Int8 {
        codes: &'a Tensor,
        scale: &'a Tensor,
    },
    Int4 {
        /// `[n, k / 2]` uint8 from [`pack_int4`].
        packed: &'a Tensor,
        /// `[n, ceil(k / group)]` f32.
        scale: &'a Tensor,
        /// `[n, ceil(k / group)]` f32: each group's value of code 0.
        min: &'a Tensor,
        group: i64,
    },
}

/// Whether the int4 kernel takes groups of `group` inputs in rows of `k`: groups of whole
/// 32-input blocks, and rows of whole blocks (the last group may be shorter).
pub fn int4_fits(k: i64, group: i64) -> bool {
    group >= 32 && group % 32 == 0 && group <= 8192 && k % 32 == 0 && k > 0
}

/// int4 codes `[n, k]` (0..=15, any integer kind) in the kernels' layout: `[n, k / 2]` bytes,
/// in blocks of 32 inputs whose byte `t` holds input `t` in its low nibble and input `16 + t`
/// in its high one. `None` unless `k` is a multiple of 32.
pub fn pack_int4(codes: &Tensor) -> Option<Tensor> {
    let (n, k) = codes.size2().ok()?;
    if k % 32 != 0 || k == 0 {
        return None;
    }
    let c = codes.to_kind(Kind::Uint8).view([n, k / 32, 2, 16]);
    let lo = c.select(2, 0);
    let hi = c.select(2, 1);
    Some(
        (lo + hi * 16)
            .to_kind(Kind::Uint8)
            .reshape([n, k / 2])
            .contiguous(),
    )
}

impl Weight<'_> {
    /// Its output size `n`, when it is a contiguous CPU matrix `[n, k]` of its kind.
    fn rows(&self, k: i64) -> Option<i64> {
        match *self {
            Weight::F32(w) => {
                let n = *w.size().first()?;
                fits(w, Kind::Float, &[n, k]).then_some(n)
            }
            Weight::Int8 { codes, scale } => {
                let n = *codes.size().first()?;
                (fits(codes, Kind::Int8, &[n, k]) && fits(scale, Kind::Float, &[n])).then_some(n)
            }
            Weight::Int4 {
                packed,
                scale,
                min,
                group,
            } => {
                let n = *packed.size().first()?;
                let groups = (k + group - 1) / group.max(1);
                let ok = int4_fits(k, group)
                    && fits(packed, Kind::Uint8, &[n, k / 2])
                    && fits(scale, Kind::Float, &[n, groups])
                    && fits(min, Kind::Float, &[n, groups]);
                ok.then_some(n)
            }
        }
    }

    /// The weights', the scales' and the minimums' pointers (null where the kind has none).
    fn ptrs(&self) -> (*const std::ffi::c_void, *const f32, *const f32) {
        match *self {
            Weight::F32(w) => (w.data_ptr() as *const _, std::ptr::null(), std::ptr::null()),
            Weight::Int8 { codes, scale } => (
                codes.data_ptr() as *const _,
                scale.data_ptr() as *const f32,
                std::ptr::null(),
            ),
            Weight::Int4 {
                packed, scale, min, ..
            } => (
                packed.data_ptr() as *const _,
                scale.data_ptr() as *const f32,
                min.data_ptr() as *const f32,
            ),
        }
    }
}

/// `x · wᵀ (+ b)`, the int8 codes' product times their row scales, or `None` where the
/// kernel does not apply.
pub fn linear(x: &Tensor, w: Weight<'_>, b: Option<&Tensor>) -> Option<Tensor> {
    let (m, k) = enabled_for(x)?;
    let n = w.rows(k)?;
    if b.is_some_and(|b| !fits(b, Kind::Float, &[n])) {
        return None;
    }
    let xc = x.contiguous();
    let y = Tensor::empty([m, n], (Kind::Float, Device::Cpu));
    let (xp, yp) = (xc.data_ptr() as *const f32, y.data_ptr() as *mut f32);
    let bp = b.map_or(std::ptr::null(), |b| b.data_ptr() as *const f32);
    let (wp, sp, mp) = w.ptrs();
    count();
    // SAFETY: every pointer is a live contiguous CPU buffer of the checked shape and kind:
    // x [m, k] f32, w [n, k] (f32, int8 with f32 scales [n], or int4 blocks [n, k / 2] with
    // f32 scales and minimums [n, k / group]), b [n] f32, y [m, n] f32; xc and y outlive the
    // call.
    unsafe {
        match w {
            Weight::F32(_) => quern_linear_f32(xp, m, k, wp as *const f32, n, bp, yp),
            Weight::Int8 { .. } => quern_linear_i8(xp, m, k, wp as *const i8, sp, n, bp, yp),
            Weight::Int4 { group, .. } => {
                quern_linear_i4(xp, m, k, group, wp as *const u8, sp, mp, n, bp, yp)
            }
        }
    }
    Some(y.view(out_shape(x, n).as_slice()))
}

/// `silu(x · gᵀ) * (x · uᵀ)` in one pass over both matrices `[n, k]` (both of one kind).
pub fn swiglu(x: &Tensor, g: Weight<'_>, u: Weight<'_>) -> Option<Tensor> {
    let (m, k) = enabled_for(x)?;
    let n = g.rows(k)?;
    if u.rows(k)? != n {
        return None;
    }
    let xc = x.contiguous();
    let y = Tensor::empty([m, n], (Kind::Float, Device::Cpu));
    let (xp, yp) = (xc.data_ptr() as *const f32, y.data_ptr() as *mut f32);
    let ((gp, gs, gm), (up, us, um)) = (g.ptrs(), u.ptrs());
    match (g, u) {
        (Weight::F32(_), Weight::F32(_)) => {
            count();
            // SAFETY: x [m, k], g and u [n, k], y [m, n], all contiguous f32, live.
            unsafe { quern_swiglu_f32(xp, m, k, gp as *const f32, up as *const f32, n, yp) }
        }
        (Weight::Int8 { .. }, Weight::Int8 { .. }) => {
            count();
            // SAFETY: as above, with int8 codes [n, k] and f32 scales [n].
            unsafe { quern_swiglu_i8(xp, m, k, gp as *const i8, gs, up as *const i8, us, n, yp) }
        }
        (Weight::Int4 { group, .. }, Weight::Int4 { group: ug, .. }) if group == ug => {
            count();
            // SAFETY: as above, with int4 blocks [n, k / 2] and f32 scales and minimums
            // [n, k / group] (checked by `rows`).
            unsafe {
                quern_swiglu_i4(
                    xp,
                    m,
                    k,
                    group,
                    gp as *const u8,
                    gs,
                    gm,
                    up as *const u8,
                    us,
                    um,
                    n,
                    yp,
                )
            }
        }
        _ => return None,
    }
    Some(y.view(out_shape(x, n).as_slice()))
}

/// What one decoding step of attention needs besides the layer's own tensors, prepared once
/// per step for every layer ([`DecodeStep::new`]).
pub struct DecodeStep {
    rope: Option<(Tensor, Tensor)>,
    pos: Option<Tensor>,
    mask: Option<Tensor>,
    past: i64,
}

impl DecodeStep {
    /// `rope`: the `(cos, sin)` tables `[positions, hd]`; `pos`: each row's position `[b, 1]`
    /// (default `past`); `mask`: which keys each row attends to, `[b, .., past + 1]` booleans
    /// (default all). `None` where the kernel does not apply.
    pub fn new(
        b: i64,
        past: i64,
        rope: Option<(&Tensor, &Tensor)>,
        pos: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Option<DecodeStep> {
        if !available() || OFF_HERE.with(Cell::get) || grad_enabled() {
            return None;
        }
        let rope = match rope {
            Some((c, s)) => {
                let dims = c.size();
                if !fits(c, Kind::Float, &dims) || !fits(s, Kind::Float, &dims) || dims.len() != 2 {
                    return None;
                }
                Some((c.shallow_clone(), s.shallow_clone()))
            }
            None => None,
        };
        let pos = match pos {
            Some(p) => {
                let p = p.reshape([-1]).contiguous();
                if p.size() != [b] || p.kind() != Kind::Int64 || p.device() != Device::Cpu {
                    return None;
                }
                // Every position must have a row in the tables.
                if let Some((c, _)) = &rope {
                    let (lo, hi) = (p.min().int64_value(&[]), p.max().int64_value(&[]));
                    if lo < 0 || hi >= c.size()[0] {
                        return None;
                    }
                }
                Some(p)
            }
            None => {
                if rope.as_ref().is_some_and(|(c, _)| past >= c.size()[0]) {
                    return None;
                }
                None
            }
        };
        let mask = match mask {
            Some(m) => {
                if m.device() != Device::Cpu || m.numel() != (b * (past + 1)) as usize {
                    return None;
                }
                Some(m.reshape([b, past + 1]).to_kind(Kind::Uint8).contiguous())
            }
            None => None,
        };
        Some(DecodeStep {
            rope,
            pos,
            mask,
            past,
        })
    }
}

/// One decoding step of a layer's attention (one new token per row): rotary positions on
/// the new query and key heads, the new key and value written into the layer's caches
/// `[b, kvh, capacity, hd]` at `step.past`, and attention over the cached positions.
/// `qkv [b, 1, (heads + 2 kvh) hd]` is rotated in place. Returns `[b, 1, heads hd]`, or
/// `None` (nothing written) where the kernel does not apply.
pub fn decode_attention(
    qkv: &Tensor,
    heads: i64,
    kvh: i64,
    hd: i64,
    step: &DecodeStep,
    kc: &Tensor,
    vc: &Tensor,
) -> Option<Tensor> {
    let b = *qkv.size().first()?;
    let width = (heads + 2 * kvh) * hd;
    if heads < 1 || kvh < 1 || heads % kvh != 0 || hd < 1 {
        return None;
    }
    if qkv.device() != Device::Cpu || qkv.kind() != Kind::Float || !qkv.is_contiguous() {
        return None;
    }
    if qkv.size() != [b, 1, width] {
        return None;
    }
    let cap = *kc.size().get(2)?;
    if step.past >= cap
        || !fits(kc, Kind::Float, &[b, kvh, cap, hd])
        || !fits(vc, Kind::Float, &[b, kvh, cap, hd])
    {
        return None;
    }
    if step.rope.as_ref().is_some_and(|(c, _)| c.size()[1] != hd) {
        return None;
    }
    let y = Tensor::empty([b, 1, heads * hd], (Kind::Float, Device::Cpu));
    let (cos, sin) = match &step.rope {
        Some((c, s)) => (c.data_ptr() as *const f32, s.data_ptr() as *const f32),
        None => (std::ptr::null(), std::ptr::null()),
    };
    count();
    // SAFETY: shapes, kinds, devices and contiguity are checked above and in
    // `DecodeStep::new`: qkv [b, width], the tables [positions, hd] with every position
    // (`pos`, or `past`) inside, caches [b, kvh, cap, hd] with past < cap, mask [b, past + 1]
    // u8, y [b, heads hd]; every tensor outlives the call.
    unsafe {
        quern_decode_attention(
            qkv.data_ptr() as *mut f32,
            b,
            heads,
            kvh,
            hd,
            cos,
            sin,
            step.pos
                .as_ref()
                .map_or(std::ptr::null(), |p| p.data_ptr() as *const i64),
            step.past,
            kc.data_ptr() as *mut f32,
            vc.data_ptr() as *mut f32,
            cap,
            step.mask
                .as_ref()
                .map_or(std::ptr::null(), |m| m.data_ptr() as *const u8),
            y.data_ptr() as *mut f32,
        );
    }
    Some(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i8w<'a>(codes: &'a Tensor, scale: &'a Tensor) -> Weight<'a> {
        Weight::Int8 { codes, scale }
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let d = (a - b).abs().max().double_value(&[]);
        d / b.abs().max().double_value(&[]).max(1e-12)
    }

    #[test]
    fn products_equal_libtorch_for_every_row_count_and_tail() {
        if !available() {
            eprintln!("skipped: this CPU lacks AVX2/FMA, the kernels are never used");
            return;
        }
        let _g = tch::no_grad_guard();
        let _l = crate::torch_rng_lock();
        tch::manual_seed(7);
        for &(k, n) in &[(8, 1), (13, 5), (576, 37), (64, 130), (4200, 3)] {
            let w = Tensor::randn([n, k], (Kind::Float, Device::Cpu));
            let b = Tensor::randn([n], (Kind::Float, Device::Cpu));
            let codes = Tensor::randint_low(-127, 128, [n, k], (Kind::Int8, Device::Cpu));
            let scale = Tensor::rand([n], (Kind::Float, Device::Cpu)) * 0.01 + 0.001;
            let deq = codes.to_kind(Kind::Float) * scale.unsqueeze(1);
            let u = Tensor::randn([n, k], (Kind::Float, Device::Cpu));
            let ucodes = Tensor::randint_low(-127, 128, [n, k], (Kind::Int8, Device::Cpu));
            let uscale = Tensor::rand([n], (Kind::Float, Device::Cpu)) * 0.01 + 0.001;
            let udeq = ucodes.to_kind(Kind::Float) * uscale.unsqueeze(1);
            for m in 1..=MAX_ROWS {
                // [m, k] and [m, 1, k]: a batch of single tokens as decoding has them.
                let x = Tensor::randn([m, 1, k], (Kind::Float, Device::Cpu));
                let want = x.linear(&w, Some(&b));
                let got = linear(&x, Weight::F32(&w), Some(&b)).expect("the kernel applies");
                assert_eq!(got.size(), want.size());
                assert!(max_rel(&got, &want) < 1e-5, "f32 k={k} n={n} m={m}");
                let got = linear(&x, Weight::F32(&w), None).expect("the kernel applies");
                assert!(max_rel(&got, &x.linear(&w, None::<Tensor>)) < 1e-5);

                let want = x.linear(&deq, Some(&b));
                let got = linear(&x, i8w(&codes, &scale), Some(&b)).expect("the kernel applies");
                // int16 activations: each input off by up to 2^-16 of the row's largest, so a
                // short dot product (k = 8, 13) can be off by ~1e-4 of the largest output;
                // libtorch's bf16 activations are 2^-9 per input.
                let e = max_rel(&got, &want);
                assert!(e < 1e-3, "int8 k={k} n={n} m={m}: {e}");

                let want = x.linear(&w, None::<Tensor>).silu() * x.linear(&u, None::<Tensor>);
                let got = swiglu(&x, Weight::F32(&w), Weight::F32(&u)).expect("applies");
                assert!(max_rel(&got, &want) < 1e-5, "swiglu k={k} n={n} m={m}");
                let want = x.linear(&deq, None::<Tensor>).silu() * x.linear(&udeq, None::<Tensor>);
                let got = swiglu(&x, i8w(&codes, &scale), i8w(&ucodes, &uscale)).expect("applies");
                let e = max_rel(&got, &want);
                assert!(e < 1e-3, "swiglu int8 k={k} n={n} m={m}: {e}");
            }
        }
    }

    #[test]
    fn int4_products_equal_the_dequantized_weights() {
        if !available() {
            eprintln!("skipped: this CPU lacks AVX2/FMA, the kernels are never used");
            return;
        }
        let _g = tch::no_grad_guard();
        let _l = crate::torch_rng_lock();
        tch::manual_seed(11);
        let opts = (Kind::Float, Device::Cpu);
        // Weights drawn as int4 codes with their groups' scales and minimums, so that the
        // dequantized matrix is exactly what the kernel multiplies.
        let draw = |n: i64, k: i64, group: i64| {
            let groups = (k + group - 1) / group;
            let codes = Tensor::randint_low(0, 16, [n, k], (Kind::Uint8, Device::Cpu));
            let scale = Tensor::rand([n, groups], opts) * 0.02 + 0.001;
            let min = Tensor::randn([n, groups], opts) * 0.1;
            let per_input = |t: &Tensor| {
                t.repeat_interleave_self_int(group, Some(1), None)
                    .narrow(1, 0, k)
            };
            let deq = codes.to_kind(Kind::Float) * per_input(&scale) + per_input(&min);
            (
                pack_int4(&codes).expect("k is a multiple of 32"),
                scale,
                min,
                deq,
            )
        };
        // (576, 128): SmolLM2's width in groups of 128, the last group 64 wide.
        for &(k, n, group) in &[
            (32, 1, 32),
            (64, 5, 32),
            (576, 37, 64),
            (576, 20, 128),
            (1536, 130, 128),
            (4096, 3, 4096),
            (96, 4, 64),
        ] {
            let (p, s, mn, deq) = draw(n, k, group);
            let (up, us, um, udeq) = draw(n, k, group);
            let w = Weight::Int4 {
                packed: &p,
                scale: &s,
                min: &mn,
                group,
            };
            let u = Weight::Int4 {
                packed: &up,
                scale: &us,
                min: &um,
                group,
            };
            let b = Tensor::randn([n], opts);
            for m in 1..=MAX_ROWS {
                let x = Tensor::randn([m, 1, k], opts);
                let want = x.linear(&deq, Some(&b));
                let got = linear(&x, w, Some(&b)).expect("the kernel applies");
                assert_eq!(got.size(), want.size());
                // int16 activations, as for int8: ~2^-16 of the row's largest per input.
                let e = max_rel(&got, &want);
                assert!(e < 1e-3, "int4 k={k} n={n} g={group} m={m}: {e}");
                let want = x.linear(&deq, None::<Tensor>).silu() * x.linear(&udeq, None::<Tensor>);
                let got = swiglu(&x, w, u).expect("applies");
                let e = max_rel(&got, &want);
                assert!(e < 1e-3, "swiglu int4 k={k} n={n} g={group} m={m}: {e}");
            }
        }
        // Groups or rows that are not whole 32-input blocks stay libtorch's.
        assert!(!int4_fits(48, 16) && !int4_fits(80, 32) && int4_fits(96, 64));
        let (p, s, mn, _) = draw(4, 64, 32);
        let x = Tensor::randn([1, 64], opts);
        let w = Weight::Int4 {
            packed: &p,
            scale: &s,
            min: &mn,
            group: 64,
        };
        assert!(
            linear(&x, w, None).is_none(),
            "scales of 2 groups read as 1"
        );
    }

    #[test]
    fn the_kernels_stay_out_where_they_do_not_apply() {
        let w = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let x = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
        // Autograd on: libtorch's product, which records the graph.
        assert!(linear(&x, Weight::F32(&w), None).is_none());
        let _g = tch::no_grad_guard();
        // Too many rows, another dtype, a transposed weight, a wrong bias, turned off.
        let big = Tensor::randn([MAX_ROWS + 1, 8], (Kind::Float, Device::Cpu));
        assert!(linear(&big, Weight::F32(&w), None).is_none());
        assert!(linear(&x.to_kind(Kind::Double), Weight::F32(&w), None).is_none());
        let wt = Tensor::randn([8, 4], (Kind::Float, Device::Cpu)).tr();
        assert!(linear(&x, Weight::F32(&wt), None).is_none());
        let b = Tensor::randn([5], (Kind::Float, Device::Cpu));
        assert!(linear(&x, Weight::F32(&w), Some(&b)).is_none());
        set_enabled_here(false);
        assert!(linear(&x, Weight::F32(&w), None).is_none());
        set_enabled_here(true);
        assert_eq!(linear(&x, Weight::F32(&w), None).is_some(), available());
    }
}
