//! Cache prefetch hints for hot loops that wait on scattered memory (hash-table probes,
//! embedding rows). A hint changes no result; on targets without one it does nothing.

/// Starts loading the cache line that holds `x`.
#[inline]
pub fn prefetch<T>(x: &T) {
    prefetch_ptr((x as *const T).cast());
}

/// Starts loading every cache line of `s`.
#[inline]
pub fn prefetch_slice<T>(s: &[T]) {
    let start = s.as_ptr().cast::<u8>();
    for off in (0..std::mem::size_of_val(s)).step_by(64) {
        prefetch_ptr(start.wrapping_add(off));
    }
}

#[inline]
fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees and does not fault on
    // any address (the callers' addresses lie inside live references anyway).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
