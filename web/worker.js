// The page's computing, in a module Web Worker so the page's own thread stays
// free (scrolling, the threshold slider, the stop button) while a map or a
// training step runs. One worker holds one wasm instance: a Detector (one model
// on WebGPU or the CPU) and/or a Trainer. The page (app.js, pool.js) talks to
// it with messages:
//
//   page → worker                                worker → page
//   {id, type: 'init', module}                   {id, type: 'done', value: {minImages}}
//   {id, type: 'load', bytes, name, preferGpu}   {id, type: 'done', value: {meta, backend, kind, slow}}
//   {id, type: 'detect', blob, name}             {id, type: 'done', value: result}  (map transferred)
//   {id, type: 'prepare', files, options}        {id, type: 'progress', value: {done, total}} …,
//                                                {id, type: 'done', value: {taken, skipped, width, height, names}}
//   {id, type: 'train', preferGpu}               {id, type: 'progress', value: {phase, …}} …,
//                                                {id, type: 'done', value: {info, summary, bytes, stopped}}
//   {type: 'stop'}                               (the running training ends after its current step,
//                                                 then calibrates what it has)
//   any failure                                  {id, type: 'error', message}
//
// Cancelling is the page's: it terminates the worker (instantly, whatever runs)
// and starts a fresh one when it needs one.

import init, { Detector, Trainer } from './pkg/scoredd.js';

// Same limit as src/web/mod.rs (checked there too): refuse before decoding into a canvas.
const MAX_PIXELS = 4096 * 4096;

let detector = null;
let trainer = null;
let stopAsked = false;

const message = (e) => (e instanceof Error ? e.message : String(e));

// Yields to the worker's event loop so a 'stop' message is seen between steps
// (a MessageChannel round trip: no 4 ms timer clamp).
function yieldToEvents() {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => resolve();
    ch.port2.postMessage(null);
  });
}

// An image file's RGBA pixels, decoded here rather than on the page's thread;
// raw values as the CLI reads them (no colour management, no premultiplication).
async function pixels(blob, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    throw new Error(`${name} is not an image this browser can read (${blob.type || 'unknown type'})`);
  }
  const { width, height } = bitmap;
  if (width * height > MAX_PIXELS) {
    bitmap.close();
    throw new Error(`${name} is ${width}×${height} px (${(width * height / 1e6).toFixed(0)} megapixels), far larger ` +
      `than any model input; the page takes at most ${MAX_PIXELS / 1e6 | 0} megapixels — scale it down first`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const g = canvas.getContext('2d', { willReadFrequently: true });
  g.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { rgba: new Uint8Array(g.getImageData(0, 0, width, height).data.buffer), width, height };
}

async function load(m) {
  if (detector) detector.free();
  detector = null;
  detector = await Detector.create(new Uint8Array(m.bytes), m.name, m.preferGpu);
  const kernels = await chooseKernels(m.kernels || {});
  return { meta: JSON.parse(detector.metaJson()), backend: detector.backend(), kind: detector.backendKind(), slow: detector.isSlow(), kernels };
}

// On WebGPU, the kernel family this adapter runs fastest: the page's stored
// choice for this adapter key (`stored`: key → family, from localStorage),
// else measured now. Null on the CPU.
async function chooseKernels(stored) {
  const key = detector.kernelKey();
  if (key === undefined) return null;
  if (stored[key] && detector.useKernels(stored[key])) return { key, chosen: stored[key], stored: true };
  const t = await detector.tuneKernels();
  return { key, chosen: t.chosen, ms: t.ms, stored: false };
}

async function detect(m) {
  if (!detector) throw new Error('No model is loaded: load one first');
  const px = await pixels(m.blob, m.name);
  const res = await detector.detect(px.rgba, px.width, px.height);
  return { value: { ...res, width: px.width, height: px.height }, transfer: [res.map.buffer] };
}

// Decodes the training images (in the order given: the page sorts them by file
// name, as the CLI does), skipping files that are not images, and hands them
// to a new Trainer. Images of several sizes are refused as a whole, naming them.
async function prepare(m, progress) {
  if (trainer) trainer.free();
  trainer = null;
  const t = new Trainer(JSON.stringify(m.options));
  const taken = [], skipped = [], sizes = new Map();
  const decoded = [];
  for (const [i, f] of m.files.entries()) {
    try {
      const px = await pixels(f, f.name);
      decoded.push({ name: f.name, px });
      const key = `${px.width}×${px.height}`;
      if (!sizes.has(key)) sizes.set(key, []);
      sizes.get(key).push(f.name);
    } catch (e) {
      skipped.push({ name: f.name, reason: message(e) });
    }
    progress({ phase: 'decoding', done: i + 1, total: m.files.length });
  }
  if (sizes.size > 1) {
    const list = [...sizes.entries()].sort((a, b) => b[1].length - a[1].length)
      .map(([size, names]) => `${size} (${names.length}: ${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''})`);
    t.free();
    throw new Error(`These images have ${sizes.size} different sizes: ${list.join('; ')}. A detector learns one kind ` +
      'of picture: give images of one size (same camera, same framing).');
  }
  for (const d of decoded) {
    t.addImage(d.name, d.px.rgba, d.px.width, d.px.height);
    taken.push(d.name);
  }
  trainer = t;
  const first = decoded[0];
  return { value: { taken, skipped, width: first ? first.px.width : 0, height: first ? first.px.height : 0, imageSize: t.imageSize() } };
}

async function train(m, progress) {
  if (!trainer) throw new Error('No training images: pick them first');
  stopAsked = false;
  const info = JSON.parse(await trainer.start(m.preferGpu));
  progress({ phase: 'started', info });
  let last = null;
  while (!stopAsked) {
    last = await trainer.step();
    progress({ phase: 'step', step: last.step, loss: last.loss, gradNorm: last.gradNorm, lr: last.lr, skipped: last.skipped, ms: last.ms });
    if (last.done) break;
    await yieldToEvents();
  }
  const stopped = !last || !last.done;
  progress({ phase: 'calibrating', what: 'reading the weights back', done: 0, total: 1, step: last ? last.step : 0 });
  const summary = JSON.parse(await trainer.finish((what, done, total) => progress({ phase: 'calibrating', what, done, total })));
  const bytes = trainer.modelBytes();
  trainer.free();
  trainer = null;
  return { value: { info, summary, bytes, stopped }, transfer: [bytes.buffer] };
}

let started = null;
async function handle(m, progress) {
  switch (m.type) {
    case 'init':
      started = init({ module_or_path: m.module });
      await started;
      return { value: { minImages: Trainer.minImages() } };
    case 'load': return { value: await load(m) };
    case 'detect': return detect(m);
    case 'prepare': return prepare(m, progress);
    case 'train': return train(m, progress);
    default: throw new Error(`unknown message ${m.type}`);
  }
}

self.onmessage = async (e) => {
  const m = e.data;
  if (m.type === 'stop') {
    stopAsked = true;
    return;
  }
  const progress = (value) => self.postMessage({ id: m.id, type: 'progress', value });
  try {
    if (m.type !== 'init') {
      if (!started) throw new Error('the worker was not initialised');
      await started;
    }
    const { value, transfer = [] } = await handle(m, progress);
    self.postMessage({ id: m.id, type: 'done', value }, transfer);
  } catch (err) {
    self.postMessage({ id: m.id, type: 'error', message: message(err) });
  }
};
