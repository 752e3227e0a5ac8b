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
