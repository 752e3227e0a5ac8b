//! Data parallelism for the CPU backend: rayon natively; in the browser
//! (wasm32, no threads without extra set-up) the same calls run serially
//! through std's iterators, so the op code is written once.
//!
//! Only the subset the ops use is mapped: `par_iter`, `par_chunks` and
//! `par_chunks_mut` on slices, and `for_each_init`; everything chained after them (`zip`,
//! `enumerate`, `map`, `for_each`, `collect`, `sum`) has the same meaning
//! on std iterators.

#[cfg(not(target_arch = "wasm32"))]
pub use rayon::prelude::*;

#[cfg(target_arch = "wasm32")]
pub use serial::*;

/// Worker threads the ops may split work over.
#[cfg(not(target_arch = "wasm32"))]
pub fn current_num_threads() -> usize {
    rayon::current_num_threads()
}

/// Worker threads the ops may split work over: one in the browser.
#[cfg(target_arch = "wasm32")]
pub fn current_num_threads() -> usize {
    1
}

#[cfg(target_arch = "wasm32")]
mod serial {
    /// `par_iter` / `par_chunks` as their serial std counterparts.
    pub trait SerialSlice<T> {
        fn par_iter(&self) -> std::slice::Iter<'_, T>;
        fn par_chunks(&self, size: usize) -> std::slice::Chunks<'_, T>;
    }

    impl<T> SerialSlice<T> for [T] {
        fn par_iter(&self) -> std::slice::Iter<'_, T> {
            self.iter()
        }
        fn par_chunks(&self, size: usize) -> std::slice::Chunks<'_, T> {
            self.chunks(size)
        }
    }

    /// rayon's `for_each_init`: one state for the whole (serial) run.
    pub trait SerialIter: Iterator + Sized {
        fn for_each_init<S>(self, init: impl Fn() -> S, mut f: impl FnMut(&mut S, Self::Item)) {
            let mut state = init();
            self.for_each(|item| f(&mut state, item));
        }
    }

    impl<I: Iterator> SerialIter for I {}

    /// `par_chunks_mut` as its serial std counterpart.
    pub trait SerialSliceMut<T> {
        fn par_chunks_mut(&mut self, size: usize) -> std::slice::ChunksMut<'_, T>;
    }

    impl<T> SerialSliceMut<T> for [T] {
        fn par_chunks_mut(&mut self, size: usize) -> std::slice::ChunksMut<'_, T> {
            self.chunks_mut(size)
        }
    }
}
