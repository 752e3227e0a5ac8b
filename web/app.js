// The scoredd page: loads a model and images, runs the wasm Detector (WebGPU or
// CPU-wasm) and draws the anomaly map. Everything stays in this page.
//
// Query options: ?backend=cpu forces the CPU (WebAssembly) backend;
// ?sample=<file> runs that bundled sample as soon as the model is loaded.
// window.scoredd exposes the state for the browser test (web/test/browser.mjs).

import init, { Detector } from './pkg/scoredd.js';

// --- constants shared with src/viz.rs -----------------------------------------
// matplotlib's inferno at v = k/32 (src/viz.rs INFERNO), linear in between.
const INFERNO = [[0,0,4],[4,3,18],[11,7,36],[21,11,55],[33,12,74],[46,10,90],[60,9,101],[74,12,107],[87,16,109],[99,20,110],[112,25,110],[125,30,109],[137,34,106],[150,39,102],[163,43,97],[175,49,92],[187,55,85],[198,62,77],[209,70,68],[219,79,59],[227,89,50],[235,101,40],[241,113,30],[246,127,20],[249,141,10],[251,156,6],[252,171,15],[251,186,31],[249,202,50],[245,217,73],[242,232,101],[243,245,134],[252,255,164]];
const DIM = 0.7;        // viz::DIM: brightness of the grey image under the map
const ALPHA_MAX = 0.9;  // viz::ALPHA_MAX: opacity of the colour at v = 1
const NAN_GREY = [128, 128, 128];
const MASK_COLOR = '#00e5ff';
// Same limits as src/web.rs (checked there too): refuse before decoding into a canvas.
const MAX_PIXELS = 4096 * 4096;
const MAX_MODEL_BYTES = 512 * 1024 * 1024;

function inferno(v) {
  if (Number.isNaN(v)) return NAN_GREY;
  const n = INFERNO.length - 1;
  const p = Math.min(Math.max(v, 0), 1) * n;
  const i = Math.min(Math.floor(p), n - 1);
  const f = p - i;
  const a = INFERNO[i], b = INFERNO[i + 1];
  return [0, 1, 2].map((c) => Math.round(a[c] + (b[c] - a[c]) * f));
}

// --- page state -------------------------------------------------------------------
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = {
  detector: null,
  modelBytes: null,
  modelName: '',
  meta: null,
  results: [],      // { name, bitmap, result | error }
  current: -1,
  queue: Promise.resolve(),
  last: null,       // the latest result (for the test)
  lastError: null,
  detections: 0,    // maps computed so far (the threshold slider must not add any)
  timings: { start: performance.now() },
};
window.scoredd = state;

function setBusy(what) {
  document.body.dataset.state = what ? 'busy' : 'idle';
  $('status').textContent = what || $('status').textContent;
}

function showError(msg) {
  state.lastError = msg;
  $('error-text').textContent = msg;
  $('error').hidden = false;
  document.body.dataset.state = 'error';
  console.warn('scoredd:', msg);
}

function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
}

function message(e) {
  if (e instanceof Error) return e.message;
  return String(e);
}

// Runs jobs one after another: the detector handles one call at a time.
function enqueue(job) {
  const run = state.queue.then(job).catch((e) => showError(message(e)));
  state.queue = run;
  return run;
}

// Lets the browser paint the status line before a long synchronous wasm call.
const nextPaint = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));

// --- model --------------------------------------------------------------------------
function wantGpu() {
  return !$('force-cpu').checked;
}

async function loadModel(bytes, name) {
  clearError();
  if (bytes.byteLength > MAX_MODEL_BYTES) {
    throw new Error(`${name} is ${(bytes.byteLength / 1e6).toFixed(0)} MB; models this page takes are at most ${MAX_MODEL_BYTES / 1e6} MB`);
  }
  setBusy(`Loading model ${name}…`);
  await nextPaint();
  let det;
  try {
    det = await Detector.create(new Uint8Array(bytes), name, wantGpu());
  } catch (e) {
    throw new Error(`Could not load the model: ${message(e)}`);
  }
  if (state.detector) state.detector.free();
  state.detector = det;
  state.modelBytes = bytes;
  state.modelName = name;
  state.meta = JSON.parse(det.metaJson());
  const m = state.meta;
  const cal = m.calibration
    ? `calibrated on ${m.calibration.normals} normal images (threshold ${fmt(m.calibration.threshold)})`
    : 'not calibrated: scores are raw, no verdict';
  $('model-info').textContent =
    `${name}: ${m.model.image_size} px, ${m.model.channels === 1 ? 'grey' : 'RGB'}, ` +
    `nf ${m.model.nf}, ${m.step} training steps, t {${m.detection.ts.join(', ')}}, ` +
    `taps ${m.detection.taps.join(' + ')}; ${cal}.`;
  $('backend').textContent = `Backend: ${det.backend()}`;
  document.body.dataset.backend = det.backendKind();
  state.timings.modelLoaded = performance.now();
  setBusy('');
  $('status').textContent = 'Model ready. Pick an image.';
  document.body.dataset.state = 'ready';
  // Maps of the old model no longer match: recompute what is on screen.
  if (state.results.length) {
    const items = state.results.map((r) => ({ name: r.name, bitmap: r.bitmap }));
    state.results = [];
    await detectAll(items);
  }
}

async function loadModelFile(file) {
  await loadModel(await file.arrayBuffer(), file.name);
}

async function loadDefaultModel() {
  const url = 'models/default.safetensors';
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`Could not fetch the bundled model (${url}: HTTP ${resp.status})`);
  await loadModel(await resp.arrayBuffer(), 'default.safetensors');
}

// --- images ---------------------------------------------------------------------------
async function decode(blob, name) {
  let bitmap;
  try {
    // Raw pixel values, as the CLI reads them: no colour management, no premultiplication.
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    throw new Error(`${name} is not an image this browser can read (${blob.type || 'unknown type'})`);
  }
  const px = bitmap.width * bitmap.height;
  if (px > MAX_PIXELS) {
    const w = bitmap.width, h = bitmap.height;
    bitmap.close();
    throw new Error(`${name} is ${w}×${h} px (${(px / 1e6).toFixed(0)} megapixels), far larger than the model's ` +
      `${state.meta ? state.meta.model.image_size : '?'} px input; the page takes at most ${MAX_PIXELS / 1e6 | 0} megapixels — scale it down first`);
  }
  return bitmap;
}

function rgbaOf(bitmap) {
  const c = document.createElement('canvas');
  c.width = bitmap.width;
  c.height = bitmap.height;
  const g = c.getContext('2d', { willReadFrequently: true });
  g.drawImage(bitmap, 0, 0);
  return g.getImageData(0, 0, c.width, c.height).data;
}

async function detectOne(item) {
  const det = state.detector;
  if (!det) throw new Error('No model is loaded: load one first');
  setBusy(`Detecting ${item.name} on ${det.backendKind() === 'webgpu' ? 'WebGPU' : 'the CPU'}…`);
  await nextPaint();
  const rgba = rgbaOf(item.bitmap);
  const res = await det.detect(new Uint8Array(rgba.buffer), item.bitmap.width, item.bitmap.height);
  state.detections += 1;
  return res;
}

async function detectAll(items) {
  clearError();
  const first = state.results.length;
  for (const item of items) {
    const entry = { name: item.name, bitmap: item.bitmap, result: null, error: null };
    try {
      entry.result = await detectOne(item);
      state.last = entry.result;
      if (state.timings.firstMap === undefined) state.timings.firstMap = performance.now();
    } catch (e) {
      entry.error = message(e);
      const hint = state.detector && state.detector.backendKind() === 'webgpu' && /GPU/.test(entry.error)
        ? ' — tick “use the CPU” to run without WebGPU' : '';
      showError(`${item.name}: ${entry.error}${hint}`);
    }
    state.results.push(entry);
    if (entry.result || state.current < 0) state.current = state.results.length - 1;
    render();
  }
  const done = state.results.slice(first);
  const ok = done.filter((r) => r.result);
  const ms = ok.reduce((s, r) => s + r.result.ms, 0);
  $('status').textContent = ok.length
    ? `Done: ${ok.length} image${ok.length > 1 ? 's' : ''} in ${fmtMs(ms)}` +
      (done.length > ok.length ? `; ${done.length - ok.length} failed` : '') + '.'
    : 'Nothing detected: see the message above.';
  if (document.body.dataset.state !== 'error') document.body.dataset.state = 'done';
}

async function openFiles(files, sourceName) {
  const items = [];
  for (const f of files) {
    try {
      items.push({ name: f.name, bitmap: await decode(f, f.name) });
    } catch (e) {
      showError(message(e));
    }
  }
  if (!items.length) return;
  if (items.length > 1 || state.results.length) {
    // A new pick starts a new list; several images make a batch.
    state.results = [];
    state.current = -1;
  }
  await detectAll(items);
}

async function openSample(s) {
  const resp = await fetch(`samples/${s.file}`);
  if (!resp.ok) throw new Error(`Could not fetch sample ${s.file} (HTTP ${resp.status})`);
  const bitmap = await decode(await resp.blob(), s.file);
  state.results = [];
  state.current = -1;
  await detectAll([{ name: s.name || s.file, bitmap }]);
}

// --- drawing -------------------------------------------------------------------------------
function fmt(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? x.toExponential(3) : x.toPrecision(4);
}
const fmtMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);

// The piecewise-linear calibration of src/model_file.rs (Calibration::normalise).
function normalise(raw, cal) {
  let v = raw < cal.threshold
    ? 0.5 * (raw - cal.low) / Math.max(cal.threshold - cal.low, Number.MIN_VALUE)
    : 0.5 + 0.5 * (raw - cal.threshold) / Math.max(cal.high - cal.threshold, Number.MIN_VALUE);
  return Number.isNaN(v) ? 1 : Math.min(Math.max(v, 0), 1);
}
// ...and its inverse, to show the slider's threshold in raw units.
function denormalise(v, cal) {
  return v < 0.5 ? cal.low + 2 * v * (cal.threshold - cal.low) : cal.threshold + (2 * v - 1) * (cal.high - cal.threshold);
}

function mapRange(map) {
  let lo = Infinity, hi = -Infinity;
  for (const x of map) if (Number.isFinite(x)) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
  return lo > hi ? [0, 0] : [lo, hi];
}

// Per-pixel map value in [0, 1]: the model's calibration when it has one (so
// colours mean the same on every image, 0.5 = threshold), else the map's range.
function valuesOf(res) {
  const cal = state.meta && state.meta.calibration;
  const [lo, hi] = mapRange(res.map);
  return Array.from(res.map, (x) => {
    if (!Number.isFinite(x)) return NaN;
    if (cal) return normalise(x, cal);
    return hi > lo ? (x - lo) / (hi - lo) : 0;
  });
}

function threshold() {
  return parseFloat($('threshold').value);
}

// Draws image + overlay (+ outline) into a canvas of side `side`.
function drawResult(canvas, entry, side, withMap, withMask) {
  canvas.width = side;
  canvas.height = side;
  const g = canvas.getContext('2d', { willReadFrequently: true });
  g.imageSmoothingEnabled = true;
  g.imageSmoothingQuality = 'high';
  // The model sees the image squashed to a square; so do we.
  g.drawImage(entry.bitmap, 0, 0, side, side);
  if (!entry.result || !withMap) return;
  // Grey and dimmed underneath (viz::dimmed_gray: Rec. 601 luma × DIM).
  const base = g.getImageData(0, 0, side, side);
  const d = base.data;
  for (let i = 0; i < d.length; i += 4) {
    const l = Math.round(Math.floor((299 * d[i] + 587 * d[i + 1] + 114 * d[i + 2] + 500) / 1000) * DIM);
    d[i] = d[i + 1] = d[i + 2] = l;
  }
  g.putImageData(base, 0, 0);
  // The map at model size, colour with opacity ALPHA_MAX·v^0.75 (viz::overlay), smoothed up.
  const n = entry.result.size;
  const vals = valuesOf(entry.result);
  const small = document.createElement('canvas');
  small.width = small.height = n;
  const sg = small.getContext('2d');
  const img = sg.createImageData(n, n);
  vals.forEach((v, i) => {
    const c = inferno(v);
    img.data[4 * i] = c[0];
    img.data[4 * i + 1] = c[1];
    img.data[4 * i + 2] = c[2];
    img.data[4 * i + 3] = Number.isNaN(v) ? 255 : v <= 0 ? 0 : Math.round(255 * ALPHA_MAX * Math.pow(v, 0.75));
  });
  sg.putImageData(img, 0, 0);
  g.drawImage(small, 0, 0, side, side);
  if (withMask) {
    const t = threshold();
    const inside = (x, y) => x >= 0 && y >= 0 && x < n && y < n && vals[y * n + x] >= t;
    const s = side / n;
    g.strokeStyle = MASK_COLOR;
    g.lineWidth = Math.max(1, side / 192);
    g.beginPath();
    for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
      if (!inside(x, y)) continue;
      if (!inside(x - 1, y)) { g.moveTo(x * s, y * s); g.lineTo(x * s, (y + 1) * s); }
      if (!inside(x + 1, y)) { g.moveTo((x + 1) * s, y * s); g.lineTo((x + 1) * s, (y + 1) * s); }
      if (!inside(x, y - 1)) { g.moveTo(x * s, y * s); g.lineTo((x + 1) * s, y * s); }
      if (!inside(x, y + 1)) { g.moveTo(x * s, (y + 1) * s); g.lineTo((x + 1) * s, (y + 1) * s); }
    }
    g.stroke();
  }
}

function drawColorbar(entry) {
  const c = $('colorbar');
  const g = c.getContext('2d');
  const h = c.height, w = c.width;
  g.clearRect(0, 0, w, h);
  const top = 10, bottom = h - 10, x0 = 4, bw = 16;
  for (let y = top; y <= bottom; y++) {
    const col = inferno(1 - (y - top) / (bottom - top));
    g.fillStyle = `rgb(${col[0]},${col[1]},${col[2]})`;
    g.fillRect(x0, y, bw, 1);
  }
  g.strokeStyle = '#191919';
  g.strokeRect(x0 - 0.5, top - 0.5, bw + 1, bottom - top + 1);
  g.fillStyle = '#191919';
  g.font = '11px system-ui, sans-serif';
  g.textBaseline = 'middle';
  const cal = state.meta && state.meta.calibration;
  let labels;
  if (cal) {
    labels = [[0, fmt(cal.low)], [0.5, fmt(cal.threshold)], [1, fmt(cal.high)]];
  } else if (entry && entry.result) {
    const [lo, hi] = mapRange(entry.result.map);
    labels = [[0, fmt(lo)], [0.5, fmt((lo + hi) / 2)], [1, fmt(hi)]];
  } else {
    labels = [];
  }
  const yOf = (v) => bottom - v * (bottom - top);
  for (const [v, text] of labels) {
    g.fillRect(x0 + bw, yOf(v), 4, 1);
    g.fillText(text, x0 + bw + 6, yOf(v));
  }
  // The slider's threshold.
  const t = threshold();
  g.strokeStyle = MASK_COLOR;
  g.lineWidth = 2;
  g.beginPath();
  g.moveTo(x0 - 3, yOf(t));
  g.lineTo(x0 + bw + 3, yOf(t));
  g.stroke();
}

function verdictOf(res) {
  if (!res || res.normalised === null) return null;
  return res.normalised >= threshold();
}

function render() {
  const t = threshold();
  const cal = state.meta && state.meta.calibration;
  $('threshold-value').textContent = t.toFixed(2);
  $('threshold-raw').textContent = cal ? `(raw ${fmt(denormalise(t, cal))})` : '(of the map range)';
  const entry = state.results[state.current];
  const withMap = $('show-map').checked, withMask = $('show-mask').checked;
  if (entry) {
    drawResult($('view'), entry, 384, withMap, withMask);
  }
  drawColorbar(entry);
  const res = entry && entry.result;
  const v = verdictOf(res);
  const verdict = $('verdict');
  verdict.className = 'verdict' + (v === null ? '' : v ? ' defect' : ' ok');
  verdict.textContent = !res ? (entry ? 'failed' : '—') : v === null ? 'uncalibrated' : v ? 'DEFECT' : 'OK';
  $('score-norm').textContent = res && res.normalised !== null ? res.normalised.toFixed(3) : '—';
  $('score-raw').textContent = res ? fmt(res.score) : '—';
  $('time').textContent = res ? fmtMs(res.ms) : '—';
  $('ran-on').textContent = res ? (res.backend === 'webgpu' ? 'WebGPU' : 'CPU (WebAssembly)') : '—';
  renderBatch();
}

function renderBatch() {
  const list = $('batch-list');
  $('batch').hidden = state.results.length < 2;
  if (state.results.length < 2) return;
  list.textContent = '';
  let defects = 0;
  state.results.forEach((entry, i) => {
    const li = document.createElement('li');
    li.tabIndex = 0;
    li.className = (i === state.current ? 'selected ' : '') + (entry.error ? 'failed' : '');
    const c = document.createElement('canvas');
    drawResult(c, entry, 128, $('show-map').checked, $('show-mask').checked);
    li.appendChild(c);
    const cap = document.createElement('div');
    if (entry.error) {
      cap.textContent = `${entry.name}: ${entry.error}`;
    } else {
      const v = verdictOf(entry.result);
      if (v) defects++;
      const tag = document.createElement('span');
      tag.className = 'tag ' + (v === null ? '' : v ? 'defect' : 'ok');
      tag.textContent = v === null ? '' : v ? 'DEFECT ' : 'OK ';
      cap.append(tag, `${entry.name} · ${entry.result.normalised !== null ? entry.result.normalised.toFixed(2) : fmt(entry.result.score)} · ${fmtMs(entry.result.ms)}`);
    }
    li.appendChild(cap);
    const pick = () => { state.current = i; render(); };
    li.addEventListener('click', pick);
    li.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') pick(); });
    list.appendChild(li);
  });
  const ok = state.results.filter((r) => r.result).length;
  $('batch-summary').textContent = `${state.results.length} images, ${ok} done, ${defects} called defective at threshold ${threshold().toFixed(2)}.`;
}

// --- wiring ----------------------------------------------------------------------------------
function dropZone(el, onFiles) {
  el.addEventListener('dragover', (e) => { e.preventDefault(); el.classList.add('over'); });
  el.addEventListener('dragleave', () => el.classList.remove('over'));
  el.addEventListener('drop', (e) => {
    e.preventDefault();
    el.classList.remove('over');
    const files = [...(e.dataTransfer ? e.dataTransfer.files : [])];
    if (files.length) onFiles(files);
  });
}

function wire() {
  $('error-close').addEventListener('click', clearError);
  $('model-file').addEventListener('change', (e) => {
    const f = e.target.files[0];
    e.target.value = '';
    if (f) enqueue(() => loadModelFile(f));
  });
  dropZone($('model-drop'), (files) => enqueue(() => loadModelFile(files[0])));
  $('model-default').addEventListener('click', () => enqueue(loadDefaultModel));
  $('force-cpu').addEventListener('change', () => {
    if (state.modelBytes) enqueue(() => loadModel(state.modelBytes, state.modelName));
  });
  $('image-file').addEventListener('change', (e) => {
    const files = [...e.target.files];
    e.target.value = '';
    if (files.length) enqueue(() => openFiles(files));
  });
  dropZone($('image-drop'), (files) => enqueue(() => openFiles(files)));
  // Moving the threshold only redraws: the maps are kept.
  $('threshold').addEventListener('input', render);
  $('show-map').addEventListener('change', render);
  $('show-mask').addEventListener('change', render);
  // Swallow drops outside the zones instead of navigating away from the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
}

async function loadSamples() {
  const resp = await fetch('samples/samples.json');
  if (!resp.ok) return [];
  const manifest = await resp.json();
  const box = $('samples');
  for (const s of manifest.samples) {
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.sample = s.file;
    b.title = s.name;
    const img = document.createElement('img');
    img.src = `samples/${s.file}`;
    img.alt = s.name;
    b.append(img, s.label || s.name);
    b.addEventListener('click', () => enqueue(() => openSample(s)));
    box.appendChild(b);
  }
  $('samples-credit').textContent = manifest.credit || '';
  return manifest.samples;
}

async function main() {
  wire();
  if (params.get('backend') === 'cpu') $('force-cpu').checked = true;
  render();
  setBusy('Starting…');
  try {
    await init();
  } catch (e) {
    showError(`This browser could not start the WebAssembly module: ${message(e)}`);
    state.failed = true;
    return;
  }
  state.timings.wasmReady = performance.now();
  fetch('build.json').then((r) => (r.ok ? r.json() : null)).then((b) => {
    if (b) $('build-info').textContent = `wasm ${(b.wasm_bytes / 1024).toFixed(0)} KiB.`;
  }).catch(() => {});
  let samples = [];
  try {
    samples = await loadSamples();
  } catch (e) {
    showError(`Could not load the sample list: ${message(e)}`);
  }
  await enqueue(loadDefaultModel);
  state.ready = true;
  const auto = params.get('sample');
  if (auto) {
    const s = samples.find((x) => x.file === auto);
    if (s) await enqueue(() => openSample(s));
    else showError(`No bundled sample named ${auto}`);
  }
}

state.started = main();
