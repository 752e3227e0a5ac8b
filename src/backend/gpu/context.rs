//! The wgpu device: adapter selection, buffers, batched command recording,
//! readback, and wgpu's errors turned into [`Error`]s.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};

use super::kernels::{Kernel, PipelineCache};
use super::params::{uniform_size, KernelParams};
use super::pool::{self, GpuBuf, MemoryStats, Pool};
use super::profile::{self, DispatchProfile};
use crate::error::{Error, Result};

/// How many dispatches we record before submitting: enough to amortise
/// submission, few enough that the GPU starts early.
const MAX_PENDING_DISPATCHES: u32 = 256;

/// The uniform ring's size: every dispatch of one submission gets its own
/// slot (256 bytes apart on most devices), so 256 dispatches fit.
const UNIFORM_RING_BYTES: u64 = 64 * 1024;

/// The uniform parameters of the dispatches recorded since the last submit,
/// staged on the host and written into one ring buffer just before the
/// submit, instead of a new buffer per dispatch. Reusing the ring for the
/// next submission is safe: queue writes run after earlier submissions.
#[derive(Default)]
struct UniformRing {
    buf: Option<wgpu::Buffer>,
    staged: Vec<u8>,
}

pub struct GpuContext {
    pub device: wgpu::Device,
    /// Whether the device runs subgroup operations with subgroups of at
    /// least 8 invocations (the subgroup kernels' assumption): requested
    /// natively where the adapter offers `Features::SUBGROUP`.
    pub subgroups8: bool,
    /// The adapter's largest subgroup size (0 without subgroups).
    pub subgroup_max: u32,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    encoder: RefCell<Option<wgpu::CommandEncoder>>,
    pending: Cell<u32>,
    pipelines: RefCell<PipelineCache>,
    /// First error wgpu reported outside an error scope, and a lost device's reason.
    errors: Arc<Mutex<Option<Reported>>>,
    lost: Arc<Mutex<Option<String>>>,
    /// A 16-byte buffer bound where a kernel's optional input is absent.
    placeholder: RefCell<Option<Arc<GpuBuf>>>,
    /// Storage buffers recycled by size class (see `pool`).
    pool: Pool,
    uniforms: RefCell<UniformRing>,
    /// `SCOREDD_GPU_PROFILE=1`: each dispatch waited for and timed.
    profile: Option<DispatchProfile>,
}

/// An error wgpu reported outside an error scope, kept as text: wgpu's own
/// error is not `Send` in the browser, and the handler must be.
enum Reported {
    OutOfMemory,
    Other(String),
}

/// One buffer bound to a kernel, in binding order after the uniform at binding 0.
pub enum Bind<'a> {
    Storage(&'a GpuBuf),
}

impl GpuContext {
    /// Finds an adapter and opens a device. Honours `WGPU_BACKEND` (e.g. `vulkan`,
    /// `metal`, `dx12`, `webgpu`) and `WGPU_ADAPTER_NAME`.
    pub async fn new() -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(desc);
        let adapter = match std::env::var("WGPU_ADAPTER_NAME") {
            Ok(name) if !name.is_empty() => {
                let want = name.to_lowercase();
                instance
                    .enumerate_adapters(wgpu::Backends::all())
                    .await
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want))
                    .ok_or_else(|| {
                        Error::NoAdapter(format!(" named like {name:?} (WGPU_ADAPTER_NAME)"))
                    })?
            }
            _ => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::NoAdapter(format!(": {e}")))?,
        };
        let info = adapter.get_info();
        // Take what the adapter offers: big models need big storage buffers.
        let limits = adapter.limits();
        // Subgroups where offered (native only: the browser's WebGPU feature
        // differs, see wgpu#5555) and at least 8 wide; `SCOREDD_SUBGROUPS=off`
        // leaves them out (the kernels without them, e.g. to compare).
        let off = std::env::var("SCOREDD_SUBGROUPS").is_ok_and(|v| v == "off");
        let subgroup = if cfg!(target_arch = "wasm32") || off {
            wgpu::Features::empty()
        } else {
            adapter.features() & wgpu::Features::SUBGROUP
        };
        let subgroups8 = !subgroup.is_empty() && info.subgroup_min_size >= 8;
        let subgroup_max = if subgroups8 {
            info.subgroup_max_size
        } else {
            0
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("scoredd"),
                required_features: subgroup,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;

        let errors: Arc<Mutex<Option<Reported>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(match e {
                    wgpu::Error::OutOfMemory { .. } => Reported::OutOfMemory,
                    e => Reported::Other(e.to_string()),
                });
            }
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                *lost_sink.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("{reason:?}: {msg}"));
            }
        });
        Ok(GpuContext {
            device,
            subgroups8,
            subgroup_max,
            queue,
            info,
            limits,
            encoder: RefCell::new(None),
            pending: Cell::new(0),
            pipelines: RefCell::default(),
            errors,
            lost,
            placeholder: RefCell::new(None),
            pool: Pool::default(),
            uniforms: RefCell::default(),
            profile: DispatchProfile::from_env(),
        })
    }

    /// Turns an error wgpu reported asynchronously into ours, naming the op.
    pub fn check(&self, op: &str) -> Result<()> {
        if let Some(msg) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(Error::DeviceLost(msg));
        }
        match self.errors.lock().unwrap_or_else(|p| p.into_inner()).take() {
            None => Ok(()),
            Some(Reported::OutOfMemory) => Err(Error::OutOfMemory(op.to_string())),
            Some(Reported::Other(detail)) => Err(Error::Gpu {
                op: op.to_string(),
                detail,
            }),
        }
    }

    /// Largest storage buffer a kernel may bind.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// A zero-filled storage buffer of `bytes` (rounded up to 16 so every
    /// buffer can also be read as vec4), refused with a typed error if the
    /// device cannot bind it. A recycled buffer is cleared by a command
    /// recorded after every earlier use of it. For what is read before it is
    /// written in full: accumulators, partial writes, `zeros`.
    pub fn storage_zeroed(&self, op: &'static str, bytes: u64) -> Result<GpuBuf> {
        let (buf, released) = self.alloc(op, bytes)?;
        if released.is_some() {
            self.with_encoder(|enc| enc.clear_buffer(&buf, 0, Some(buf.len())));
        }
        Ok(buf)
    }

    /// A storage buffer of `bytes` (rounded up to 16) whose contents are
    /// unspecified when it is recycled: only for the output of a kernel that
    /// writes every one of its elements before anything reads them (a clear
    /// would be a full extra pass over memory). The bytes past the last
    /// element (the rounding to 16) are never read: readback stops at the
    /// element count and the vec4 kernels read only padded-to-8 packings.
    pub fn storage_output(&self, op: &'static str, bytes: u64) -> Result<GpuBuf> {
        Ok(self.alloc(op, bytes)?.0)
    }

    /// A buffer of `bytes` (rounded to 16) from the pool or the device, and
    /// the epoch it was released in if it is recycled (its contents are then
    /// stale, not zero).
    fn alloc(&self, op: &'static str, bytes: u64) -> Result<(GpuBuf, Option<u64>)> {
        let len = bytes.max(16).div_ceil(16) * 16;
        if len > self.max_binding() {
            return Err(Error::TooLarge {
                op,
                bytes,
                what: "GPU storage buffer binding",
                limit: self.max_binding(),
            });
        }
        // Past the binding limit's last class, allocate exactly (no pooling).
        let class = pool::size_class(len);
        let class = if class > self.max_binding() {
            len
        } else {
            class
        };
        if let Some((buf, epoch)) = pool::lock(&self.pool).take(class) {
            return Ok((
                GpuBuf::new(buf, len, class, Some(self.pool.clone())),
                Some(epoch),
            ));
        }
        // Free buffers of other classes may be what the device lacks: give
        // them back and try once more before reporting out of memory.
        let buf = match self.create_storage(op, class) {
            Err(Error::OutOfMemory(_)) if self.memory_stats().pooled_bytes > 0 => {
                self.trim_pool();
                self.create_storage(op, class)?
            }
            r => r?,
        };
        pool::lock(&self.pool).created(class);
        Ok((GpuBuf::new(buf, len, class, Some(self.pool.clone())), None))
    }

    fn create_storage(&self, op: &'static str, size: u64) -> Result<wgpu::Buffer> {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(op),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.check(op)?;
        Ok(buf)
    }

    /// The pool's device-memory figures.
    pub fn memory_stats(&self) -> MemoryStats {
        pool::lock(&self.pool).stats()
    }

    /// Returns the pool's free buffers to the driver.
    pub fn trim_pool(&self) {
        pool::lock(&self.pool).trim();
    }

    /// The shared stand-in for an absent optional input (e.g. no bias): a bound
    /// buffer may not be both read and written, so the output cannot stand in.
    pub fn placeholder(&self) -> Result<Arc<GpuBuf>> {
        if let Some(b) = self.placeholder.borrow().as_ref() {
            return Ok(b.clone());
        }
        let b = Arc::new(self.storage_zeroed("placeholder", 16)?);
        *self.placeholder.borrow_mut() = Some(b.clone());
        Ok(b)
    }

    /// A storage buffer holding `data` (zero-padded to 16 bytes).
    pub fn storage_init(&self, op: &'static str, data: &[u8]) -> Result<GpuBuf> {
        let (buf, released) = self.alloc(op, data.len() as u64)?;
        // `write_buffer` runs before the commands still in the open encoder,
        // which may read this buffer's old contents: submit them first.
        if released.is_some_and(|e| e == pool::lock(&self.pool).epoch) {
            self.submit();
        }
        if released.is_some() || !data.is_empty() {
            let mut v = data.to_vec();
            v.resize(buf.len() as usize, 0);
            self.queue.write_buffer(&buf, 0, &v);
        }
        Ok(buf)
    }

    fn with_encoder<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut slot = self.encoder.borrow_mut();
        let enc = slot.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("scoredd"),
                })
        });
        f(enc)
    }

    /// Records one dispatch of `kernel` with its uniform `params` at binding 0
    /// and `binds` at bindings 1…; submits only every few hundred dispatches.
    pub fn dispatch<P: KernelParams>(
        &self,
        kernel: Kernel<P>,
        constants: &[(&'static str, u32)],
        params: &P,
        binds: &[Bind],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let kernel = kernel.info;
        if binds.len() != kernel.bindings {
            return Err(Error::Gpu {
                op: kernel.entry.to_string(),
                detail: format!(
                    "{} storage buffers bound; the kernel declares {}",
                    binds.len(),
                    kernel.bindings
                ),
            });
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.0 > max || groups.1 > max || groups.2 > max {
            return Err(Error::TooLarge {
                op: kernel.entry,
                bytes: groups.0 as u64 * groups.1 as u64 * groups.2 as u64,
                what: "workgroup count (in workgroups, not bytes)",
                limit: max as u64,
            });
        }
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 {
            return Ok(());
        }
        let pipeline = self
            .pipelines
            .borrow_mut()
            .get(&self.device, kernel, constants);
        let (uniform, offset, size) = self.stage_uniform(bytemuck::bytes_of(params));
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &uniform,
                offset,
                size: std::num::NonZeroU64::new(size),
            }),
        }];
        for (i, b) in binds.iter().enumerate() {
            let Bind::Storage(buf) = b;
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: buf.binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        // Profiling: what was queued before is not this dispatch's.
        let started = match &self.profile {
            Some(_) => {
                self.finish(kernel.entry)?;
                Some(profile::now_s())
            }
            None => None,
        };
        self.with_encoder(|enc| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        });
        self.pending.set(self.pending.get() + 1);
        if let (Some(p), Some(t)) = (&self.profile, started) {
            self.finish(kernel.entry)?;
            p.record(kernel.entry, groups, profile::now_s() - t);
        }
        if self.pending.get() >= MAX_PENDING_DISPATCHES {
            self.submit();
        }
        self.check(kernel.entry)
    }

    /// A slot of the uniform ring holding `bytes`: (ring, offset, size).
    /// Submits first if the ring is full.
    fn stage_uniform(&self, bytes: &[u8]) -> (wgpu::Buffer, u64, u64) {
        let size = uniform_size(bytes.len()) as u64;
        let align = (self.limits.min_uniform_buffer_offset_alignment as u64).max(16);
        let ring_bytes = UNIFORM_RING_BYTES.max(size);
        let fits =
            |r: &UniformRing| (r.staged.len() as u64).div_ceil(align) * align + size <= ring_bytes;
        if !fits(&self.uniforms.borrow()) {
            self.submit();
        }
        let mut ring = self.uniforms.borrow_mut();
        if ring.buf.as_ref().is_none_or(|b| b.size() < ring_bytes) {
            ring.buf = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params ring"),
                size: ring_bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let offset = (ring.staged.len() as u64).div_ceil(align) * align;
        ring.staged.resize(offset as usize, 0);
        ring.staged.extend_from_slice(bytes);
        ring.staged.resize((offset + size) as usize, 0);
        let buf = ring
            .buf
            .clone()
            .unwrap_or_else(|| unreachable!("created above"));
        (buf, offset, size)
    }

    /// Records a buffer-to-buffer copy.
    pub fn copy(&self, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) {
        self.with_encoder(|enc| enc.copy_buffer_to_buffer(src, 0, dst, 0, bytes));
    }

    /// Submits what has been recorded.
    pub fn submit(&self) {
        {
            let mut ring = self.uniforms.borrow_mut();
            if let (Some(buf), false) = (&ring.buf, ring.staged.is_empty()) {
                self.queue.write_buffer(buf, 0, &ring.staged);
            }
            ring.staged.clear();
        }
        if let Some(enc) = self.encoder.borrow_mut().take() {
            self.queue.submit(Some(enc.finish()));
        }
        self.pending.set(0);
        pool::lock(&self.pool).epoch += 1;
    }

    /// Submits pending work and waits for the device to finish it.
    pub fn finish(&self, op: &str) -> Result<()> {
        self.submit();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                op: op.to_string(),
                detail: e.to_string(),
            })?;
        self.check(op)
    }

    /// Copies the first `bytes` of `src` back to the host (waits for pending work).
    /// Blocks, so not in the browser: use [`GpuContext::read_bytes_async`] there.
    pub fn read_bytes(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.start_readback(src, bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.finish("readback")?;
        rx.recv()
            .map_err(|_| Error::Readback("the map callback never ran".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        Self::take_mapped(&staging, bytes)
    }

    /// [`GpuContext::read_bytes`] without blocking: awaits the buffer mapping,
    /// which in the browser resolves on the event loop. Natively it waits for
    /// the device, so it also works there (and is tested there).
    pub async fn read_bytes_async(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.start_readback(src, bytes);
        let (tx, rx) = oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r));
        // Natively nothing runs the callback unless we poll; in the browser
        // polling is a no-op and the event loop does it.
        self.finish("readback")?;
        rx.await
            .ok_or_else(|| Error::Readback("the map callback never ran".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        self.check("readback")?;
        Self::take_mapped(&staging, bytes)
    }

    /// Records a copy of `src`'s first `bytes` (rounded up to 4) into a fresh
    /// mappable buffer and submits everything pending.
    fn start_readback(&self, src: &wgpu::Buffer, bytes: u64) -> wgpu::Buffer {
        let size = bytes.div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.copy(src, &staging, size);
        self.submit();
        staging
    }

    fn take_mapped(staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Readback(e.to_string()))?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// A one-value channel whose receiver is a future: the bridge from wgpu's
/// map callback to `async` code, with no executor-specific dependency.
mod oneshot {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    struct Slot<T> {
        value: Option<T>,
        waker: Option<Waker>,
        /// The sender was dropped (sent or not).
        closed: bool,
    }

    pub struct Sender<T>(Arc<Mutex<Slot<T>>>);
    pub struct Receiver<T>(Arc<Mutex<Slot<T>>>);

    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let slot = Arc::new(Mutex::new(Slot {
            value: None,
            waker: None,
            closed: false,
        }));
        (Sender(slot.clone()), Receiver(slot))
    }

    impl<T> Sender<T> {
        pub fn send(self, v: T) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).value = Some(v);
            // Drop wakes the receiver.
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            let waker = {
                let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
                s.closed = true;
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Resolves to the value, or `None` if the sender was dropped without one.
    impl<T> Future for Receiver<T> {
        type Output = Option<T>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = s.value.take() {
                return Poll::Ready(Some(v));
            }
            if s.closed {
                return Poll::Ready(None);
            }
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Drop for GpuContext {
    fn drop(&mut self) {
        if let Some(p) = &self.profile {
            eprint!("{}", p.render());
        }
    }
}
