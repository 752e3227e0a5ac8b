//! The storage-buffer pool: a GPU tensor's buffer goes back to a free list of
//! its size class when its last handle drops, and the next request of that
//! class takes it instead of allocating. Allocation on a GPU is slow (and on a
//! software adapter a fresh zeroed mapping each time), and a network
//! evaluation asks for the same sizes every forward, so after the first one
//! nothing new is allocated.
//!
//! Reuse is safe because commands run in the order they were recorded: a
//! recycled buffer's next writer is recorded after every reader of its old
//! contents. The one exception is `queue.write_buffer`, which runs before the
//! commands still waiting in the open encoder; so each free buffer remembers
//! the submission epoch it was released in, and the context submits before
//! uploading into a buffer released since the last submit.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// Device-memory figures of the pool, in bytes of buffer capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Held by live tensors and temporaries.
    pub live_bytes: u64,
    /// Free in the pool, ready for reuse.
    pub pooled_bytes: u64,
    /// The most ever allocated at once (live + pooled): the pool's footprint.
    pub peak_bytes: u64,
    /// Buffers created, and requests served from the pool instead.
    pub allocations: u64,
    pub reuses: u64,
}

#[derive(Default)]
pub(crate) struct PoolState {
    free: HashMap<u64, Vec<(wgpu::Buffer, u64)>>,
    /// Incremented by every submit: what "released since the last submit" means.
    pub epoch: u64,
    stats: MemoryStats,
}

pub(crate) type Pool = Arc<Mutex<PoolState>>;

pub(crate) fn lock(pool: &Pool) -> std::sync::MutexGuard<'_, PoolState> {
    pool.lock().unwrap_or_else(|p| p.into_inner())
}

/// The size class of a request: the next of four steps per power of two
/// (1, 1.25, 1.5, 1.75 × 2^k), so at most a quarter is wasted, and at least 256
/// bytes so that tiny buffers share one class.
pub fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let top = 63 - b.leading_zeros() as u64; // floor(log2 b)
    let step = 1u64 << (top - 2);
    b.div_ceil(step) * step
}

impl PoolState {
    /// A free buffer of `class`, with the epoch it was released in.
    pub fn take(&mut self, class: u64) -> Option<(wgpu::Buffer, u64)> {
        let got = self.free.get_mut(&class)?.pop()?;
        self.stats.pooled_bytes -= class;
        self.stats.live_bytes += class;
        self.stats.reuses += 1;
        Some(got)
    }

    /// Counts a freshly created buffer of `class`.
    pub fn created(&mut self, class: u64) {
        self.stats.live_bytes += class;
        self.stats.allocations += 1;
        let total = self.stats.live_bytes + self.stats.pooled_bytes;
        self.stats.peak_bytes = self.stats.peak_bytes.max(total);
    }

    fn give_back(&mut self, buf: wgpu::Buffer, class: u64) {
        self.stats.live_bytes -= class;
        self.stats.pooled_bytes += class;
        let epoch = self.epoch;
        self.free.entry(class).or_default().push((buf, epoch));
    }

    pub fn stats(&self) -> MemoryStats {
        self.stats
    }

    /// Frees every pooled buffer (the memory goes back to the driver).
    pub fn trim(&mut self) {
        self.free.clear();
        self.stats.pooled_bytes = 0;
    }
}

/// A pooled storage buffer: derefs to the wgpu buffer, returns to the pool on
/// drop. `len` is the size asked for (rounded to 16); kernels are bound to
/// that many bytes, so a bigger recycled buffer reads exactly like a fresh one.
pub struct GpuBuf {
    buf: Option<wgpu::Buffer>,
    len: u64,
    class: u64,
    pool: Option<Pool>,
}

impl std::fmt::Debug for GpuBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuf({} of {} bytes)", self.len, self.class)
    }
}

impl GpuBuf {
    pub(crate) fn new(buf: wgpu::Buffer, len: u64, class: u64, pool: Option<Pool>) -> Self {
        GpuBuf {
            buf: Some(buf),
            len,
            class,
            pool,
        }
    }

    /// The bytes a kernel sees bound.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The binding of exactly `len` bytes.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self,
            offset: 0,
            size: std::num::NonZeroU64::new(self.len),
        })
    }
}

impl Deref for GpuBuf {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        // Only `drop` takes the buffer out.
        self.buf
            .as_ref()
            .expect("a GpuBuf holds its buffer until dropped")
    }
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        if let (Some(buf), Some(pool)) = (self.buf.take(), self.pool.as_ref()) {
            lock(pool).give_back(buf, self.class);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_waste_at_most_a_quarter() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(16), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(1025), 1280);
        for b in [300u64, 4097, 123_457, 10_000_000] {
            let c = size_class(b);
            assert!(c >= b && c * 4 <= b * 5 + 4 * 256, "{b} → {c}");
            assert_eq!(size_class(c), c, "a class is its own class");
        }
    }
}
