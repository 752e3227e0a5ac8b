//! Keeping freed memory for reuse. The CPU backend allocates a tensor per op;
//! mimalloc (the binary's and benches' allocator) by default hands freed pages
//! back to the OS after 10 ms, so the next op's buffer is faulted in afresh and
//! zeroed by the kernel: a third of a detection's time went to `clear_page`.
//! With purging off, freed pages are reused as they are (as glibc's
//! MALLOC_MMAP_MAX_=0 does for PyTorch's "nommap" figures); the resident size
//! stays at the run's high-water mark, which is what the peak already was.

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::os::raw::{c_int, c_long};

    extern "C" {
        // mimalloc's C API (libmimalloc-sys links it with the `mimalloc` crate).
        fn mi_option_set(option: c_int, value: c_long);
    }

    /// `mi_option_purge_delay` in mimalloc v2 and v3's `mi_option_t`.
    const MI_OPTION_PURGE_DELAY: c_int = 15;

    pub fn keep_freed_memory() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Names the crate so its static library is linked even where the
            // process allocator is another one (then this setting is inert).
            let _ = mimalloc::MiMalloc;
            // SAFETY: a plain setter of a global option; -1 means "never purge".
            unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
        });
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    /// The wasm allocator never returns memory: nothing to do.
    pub fn keep_freed_memory() {}
}

pub use imp::keep_freed_memory;

/// A host tensor's storage: a `Vec<f32>` that, when dropped, goes back to a
/// process-wide pool instead of the allocator. The next op of a similar size
/// takes it as it is — an op that overwrites its whole output then writes
/// it once, where a fresh zeroed buffer is written twice (a U-net forward
/// spent ~6 % of its time in that memset).
#[derive(Debug, PartialEq, Default)]
pub struct HostBuf(Vec<f32>);

impl HostBuf {
    /// `n` floats of unspecified (stale but initialised) content: for ops
    /// that write every element. With `SCOREDD_POISON_POOL=1` they are NaN,
    /// so that an op that misses an element fails its tests.
    pub fn overwritten(n: usize) -> Self {
        let mut v = pool::take(n);
        if pool::poison() {
            v.fill(f32::NAN);
        }
        HostBuf(v)
    }
    /// `n` zeros.
    pub fn zeroed(n: usize) -> Self {
        let mut v = pool::take(n);
        v.fill(0.0);
        HostBuf(v)
    }
}

impl From<Vec<f32>> for HostBuf {
    fn from(v: Vec<f32>) -> Self {
        HostBuf(v)
    }
}

impl std::ops::Deref for HostBuf {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl std::ops::DerefMut for HostBuf {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

impl Clone for HostBuf {
    fn clone(&self) -> Self {
        let mut v = pool::take(self.0.len());
        v.copy_from_slice(&self.0);
        HostBuf(v)
    }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.0));
    }
}

/// The free buffers, by size class.
mod pool {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};

    /// Smaller buffers go back to the allocator, which is fast for them.
    const MIN_FLOATS: usize = 1 << 14;
    /// Pooled bytes a miss leaves alone (see `release`): a little slack so that
    /// a repeated workload (training steps) settles without a miss per step.
    const KEPT_ON_MISS_BYTES: usize = 128 << 20;
    /// Free buffers kept at most; beyond, a dropped buffer is freed.
    const MAX_POOLED_BYTES: usize = 1 << 30;

    #[derive(Default)]
    struct Free {
        by_class: BTreeMap<usize, Vec<Vec<f32>>>,
        bytes: usize,
    }

    fn free() -> &'static Mutex<Free> {
        static FREE: OnceLock<Mutex<Free>> = OnceLock::new();
        FREE.get_or_init(Default::default)
    }

    pub fn poison() -> bool {
        static POISON: OnceLock<bool> = OnceLock::new();
        *POISON.get_or_init(|| std::env::var_os("SCOREDD_POISON_POOL").is_some_and(|v| v == "1"))
    }

    /// Class spacing around `n` (> 4): a quarter of its power of two, so
    /// there are 4 classes per power of two (≤ 25 % waste).
    fn step(n: usize) -> usize {
        1usize << (usize::BITS - 3 - n.leading_zeros())
    }

    /// The size class of `n` floats: the smallest class ≥ `n`.
    fn class(n: usize) -> usize {
        if n <= 4 {
            return n;
        }
        n.div_ceil(step(n)) * step(n)
    }

    /// The largest class a buffer of `cap` floats can serve (≤ `cap`).
    fn class_floor(cap: usize) -> usize {
        if cap <= 4 {
            return cap;
        }
        cap / step(cap) * step(cap)
    }

    /// A buffer of length `n`; its content is whatever it last held (zeros
    /// where it grew).
    pub fn take(n: usize) -> Vec<f32> {
        if n >= MIN_FLOATS {
            let c = class(n);
            let reused = {
                let mut f = free().lock().unwrap_or_else(|e| e.into_inner());
                let list = f.by_class.get_mut(&c);
                let v = list.and_then(|l| l.pop());
                if f.by_class.get(&c).is_some_and(|l| l.is_empty()) {
                    f.by_class.remove(&c); // lists in the map are never empty
                }
                if let Some(v) = &v {
                    f.bytes -= v.capacity() * 4;
                }
                v
            };
            if let Some(mut v) = reused {
                // Truncating keeps the stale values; growing writes zeros
                // only for the new tail.
                v.truncate(n);
                v.resize(n, 0.0);
                return v;
            }
            release(c);
            let mut v = Vec::with_capacity(c);
            v.resize(n, 0.0);
            return v;
        }
        vec![0.0; n]
    }

    /// On a miss, hands pooled memory back to the allocator, which can reuse
    /// it for the new buffer: one buffer of the smallest class above the
    /// request if there is one, else the largest ones below until as much
    /// is freed. So the pool does not keep memory for sizes no longer asked
    /// for while the process grows (peak memory stays what the allocator
    /// alone would need).
    fn release(floats: usize) {
        let dropped = {
            let mut f = free().lock().unwrap_or_else(|e| e.into_inner());
            let above = f.by_class.range(floats..).next().map(|(&c, _)| c);
            let mut dropped = Vec::new();
            let mut freed = 0;
            while freed < floats && f.bytes > KEPT_ON_MISS_BYTES {
                let class = match above {
                    Some(c) if dropped.is_empty() => c,
                    Some(_) => break,
                    None => match f.by_class.last_key_value() {
                        Some((&c, _)) => c,
                        None => break,
                    },
                };
                let list = f.by_class.get_mut(&class).expect("the class exists");
                let v = list.pop().expect("classes are never empty");
                if list.is_empty() {
                    f.by_class.remove(&class);
                }
                freed += v.capacity();
                f.bytes -= v.capacity() * 4;
                dropped.push(v);
            }
            dropped
        };
        drop(dropped); // outside the lock
    }

    pub fn give(v: Vec<f32>) {
        let cap = v.capacity();
        if cap < MIN_FLOATS {
            return;
        }
        if cap * 4 > MAX_POOLED_BYTES {
            return;
        }
        let mut evicted = Vec::new();
        let mut f = free().lock().unwrap_or_else(|e| e.into_inner());
        // A full pool makes room by freeing its largest buffers: what was
        // just dropped is what the current work allocates, while a full
        // pool may hold the sizes of earlier work (a bigger model, training
        // before detection) that would otherwise never leave.
        while f.bytes + cap * 4 > MAX_POOLED_BYTES {
            let Some(mut last) = f.by_class.last_entry() else {
                break;
            };
            let old = last.get_mut().pop().expect("classes are never empty");
            if last.get().is_empty() {
                last.remove();
            }
            f.bytes -= old.capacity() * 4;
            evicted.push(old);
        }
        f.bytes += cap * 4;
        f.by_class.entry(class_floor(cap)).or_default().push(v);
        drop(f);
        drop(evicted); // freed outside the lock
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn classes_cover_their_sizes_with_little_waste() {
            for n in (5..5000).chain([1 << 14, (1 << 14) + 1, 123_457, 1 << 20]) {
                let c = class(n);
                assert!(c >= n && c * 4 <= n * 5 + 16, "{n} -> {c}");
                assert_eq!(class(c), c, "{n}: a class is its own class");
                assert_eq!(class_floor(c), c);
                assert!(class_floor(c + 1) == c || class(c + 1) == c + 1);
            }
        }

        #[test]
        fn a_dropped_buffer_is_taken_again() {
            let n = MIN_FLOATS * 3 + 7;
            let mut v = take(n);
            v.fill(2.5);
            let ptr = v.as_ptr();
            give(v);
            let w = take(n - 5);
            // Reused (another test thread could take it first: only then may it differ).
            if w.as_ptr() == ptr {
                assert!(w.iter().all(|&x| x == 2.5));
            }
            assert_eq!(w.len(), n - 5);
        }
    }
}
