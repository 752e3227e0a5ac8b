// The page's side of worker.js: a promise per request, progress callbacks, and
// cancelling by terminating the worker. DetectPool keeps one worker per
// detector instance: one on WebGPU (the GPU is one device), several on the
// CPU-wasm path (each a single-threaded wasm instance), so a batch runs on
// up to navigator.hardwareConcurrency cores.

export class Cancelled extends Error {
  constructor(what = 'cancelled') {
    super(what);
    this.name = 'Cancelled';
  }
}

let compiled = null;
// The wasm module, compiled once on the page and handed to every worker
// (a WebAssembly.Module is cloneable): workers then only instantiate it.
export function wasmModule() {
  if (!compiled) {
    const url = new URL('pkg/scoredd_bg.wasm', import.meta.url);
    compiled = WebAssembly.compileStreaming(fetch(url)).catch(async () => {
      // A server that does not say application/wasm: compile from bytes.
      const resp = await fetch(url);
      if (!resp.ok) throw new Error(`could not fetch ${url.pathname} (HTTP ${resp.status})`);
      return WebAssembly.compile(await resp.arrayBuffer());
    });
  }
  return compiled;
}

export class WorkerClient {
  constructor() {
    this.worker = new Worker(new URL('worker.js', import.meta.url), { type: 'module' });
    this.pending = new Map();
    this.nextId = 1;
    this.dead = null;
    this.worker.onmessage = (e) => this.receive(e.data);
    this.worker.onerror = (e) => {
      e.preventDefault();
      this.fail(new Error(`the worker failed: ${e.message || 'it could not start (module workers need a current browser)'}`));
    };
    this.ready = wasmModule().then((module) => this.send('init', { module }));
  }

  receive(m) {
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === 'progress') {
      if (p.onProgress) p.onProgress(m.value);
      return;
    }
    this.pending.delete(m.id);
    if (m.type === 'done') p.resolve(m.value);
    else p.reject(new Error(m.message));
  }

  // Sends a request once the worker has its wasm instance; resolves with its
  // result, calls onProgress on the way.
  async call(type, payload = {}, options = {}) {
    await this.ready;
    return this.send(type, payload, options);
  }

  send(type, payload = {}, { transfer = [], onProgress = null } = {}) {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress });
      this.worker.postMessage({ id, type, ...payload }, transfer);
    });
  }

  // A message without an answer (the training's stop).
  tell(type) {
    if (!this.dead) this.worker.postMessage({ type });
  }

  fail(err) {
    this.dead = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  // Stops whatever runs, at once; every pending request rejects with `Cancelled`.
  terminate(why) {
    this.worker.terminate();
    this.fail(new Cancelled(why));
  }
}

export class DetectPool {
  constructor() {
    this.workers = [];   // { client, loaded: Promise }
    this.model = null;   // { bytes, name, preferGpu }
    this.info = null;    // what the first worker reported: meta, backend, kind, slow
  }

  // Loads a model into the first worker (a fresh one: the old model stays in
  // use until this one has loaded), which says which backend it got.
  // `kernels`: stored kernel choices by adapter key (see worker.js).
  async load(bytes, name, preferGpu, kernels = {}) {
    const client = new WorkerClient();
    let info;
    try {
      const init = await client.ready;
      info = await client.call('load', { bytes: bytes.slice(0), name, preferGpu, kernels });
      info.minImages = init.minImages;
    } catch (e) {
      client.terminate('replaced');
      throw e;
    }
    for (const w of this.workers) w.client.terminate('replaced');
    this.workers = [{ client, loaded: Promise.resolve(info) }];
    this.model = { bytes, name, preferGpu };
    this.info = info;
    return info;
  }

  // How many workers a batch of n images uses.
  size(n) {
    if (!this.info || this.info.kind !== 'cpu') return 1;
    return Math.max(1, Math.min(n, navigator.hardwareConcurrency || 1, 8));
  }

  async worker(i) {
    while (this.workers.length <= i) {
      const client = new WorkerClient();
      const { bytes, name } = this.model;
      // The first worker found out whether WebGPU works: the others follow it.
      const preferGpu = this.info.kind === 'webgpu';
      const kernels = this.info.kernels ? { [this.info.kernels.key]: this.info.kernels.chosen } : {};
      const loaded = client.ready.then(() => client.call('load', { bytes: bytes.slice(0), name, preferGpu, kernels }));
      this.workers.push({ client, loaded });
    }
    await this.workers[i].loaded;
    return this.workers[i].client;
  }

  // Detects every item ({name, blob}); onResult(i, result | null, error | null)
  // as each finishes. Items are handed out in order to free workers.
  async detectAll(items, onResult) {
    if (!this.model) throw new Error('No model is loaded: load one first');
    let next = 0;
    const run = async (w) => {
      const client = await this.worker(w);
      while (next < items.length) {
        const i = next++;
        try {
          onResult(i, await client.call('detect', { blob: items[i].blob, name: items[i].name }), null);
        } catch (e) {
          if (e instanceof Cancelled) throw e;
          onResult(i, null, e);
        }
      }
    };
    const n = this.size(items.length);
    await Promise.all(Array.from({ length: n }, (_, w) => run(w)));
  }

  // Cancels running detections: the workers are terminated; the model is
  // reloaded into a fresh worker on the next use.
  cancel() {
    for (const w of this.workers) w.client.terminate('cancelled');
    this.workers = [];
  }
}
