// The scoredd page: loads a model and images, detects defects and trains new
// detectors. All computing runs in Web Workers (worker.js, through pool.js):
// this thread only draws, so the page stays responsive. Everything stays in
// this page.
//
// Query options: ?backend=cpu forces the CPU (WebAssembly) backend;
// ?sample=<file> runs that bundled sample as soon as the model is loaded.
// window.scoredd exposes the state for the browser test (web/test/browser.mjs).

import { Cancelled, DetectPool, WorkerClient, wasmModule } from './pool.js';

// --- constants shared with src/viz.rs -----------------------------------------
// matplotlib's inferno at v = k/32 (src/viz.rs INFERNO), linear in between:
// perceptually uniform, readable with colour-vision deficiencies and in grey.
const INFERNO = [[0,0,4],[4,3,18],[11,7,36],[21,11,55],[33,12,74],[46,10,90],[60,9,101],[74,12,107],[87,16,109],[99,20,110],[112,25,110],[125,30,109],[137,34,106],[150,39,102],[163,43,97],[175,49,92],[187,55,85],[198,62,77],[209,70,68],[219,79,59],[227,89,50],[235,101,40],[241,113,30],[246,127,20],[249,141,10],[251,156,6],[252,171,15],[251,186,31],[249,202,50],[245,217,73],[242,232,101],[243,245,134],[252,255,164]];
const DIM = 0.7;        // viz::DIM: brightness of the grey image under the map
const ALPHA_MAX = 0.9;  // viz::ALPHA_MAX: opacity of the colour at v = 1
const NAN_GREY = [128, 128, 128];
const MASK_COLOR = '#00e5ff';
// Same limits as src/web/mod.rs (checked there too): refuse before decoding.
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
const pool = new DetectPool();
const state = {
  pool,
  modelBytes: null,
  modelName: '',
  meta: null,
  backendKind: null,
  results: [],      // { name, blob, bitmap, result | error }
  current: -1,
  queue: Promise.resolve(),
  busy: false,      // a detection is running (the cancel button is live)
  last: null,       // the latest result (for the test)
  lastError: null,
  detections: 0,    // maps computed so far (the threshold slider must not add any)
  timings: { start: performance.now() },
  train: {
    minImages: 16,  // replaced by the wasm's own figure (Trainer.minImages) at start
    files: [],
    prepared: null,
    client: null,
    running: false,
    stopping: false,
    info: null,
    curve: [],      // { step, loss }
    progress: null, // the latest progress message
    result: null,   // { info, summary, stopped, seconds, stepsPerSecond }
    message: null,  // { text, kind }
    downloadUrl: null,
  },
};
window.scoredd = state;
// For the browser test: the outlined pixels of a result at the slider's threshold.
state.outlineOf = (res) => outlineOf(res);

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

// Runs jobs one after another: model loads and detections do not overlap.
function enqueue(job) {
  const run = state.queue.then(job).catch((e) => showError(message(e)));
  state.queue = run;
  return run;
}

// --- kernel choice (WebGPU) ------------------------------------------------------------
// The worker times each kernel family once per adapter (and shader version:
// the key says both) and the page keeps the winner in localStorage.
const KERNELS_KEY = 'scoredd-kernels';

function storedKernels() {
  try {
    return JSON.parse(localStorage.getItem(KERNELS_KEY) || '{}') || {};
  } catch {
    return {}; // unreadable or blocked storage: measure again
  }
}

function keepKernels(k) {
  if (!k || k.stored) return;
  try {
    localStorage.setItem(KERNELS_KEY, JSON.stringify({ ...storedKernels(), [k.key]: k.chosen }));
  } catch {
    // Storage full or blocked: the next load measures again.
  }
}

function kernelWords(k) {
  if (!k) return '';
  if (k.stored) return `; kernels: ${k.chosen} (measured before on this adapter)`;
  const times = Object.entries(k.ms).map(([f, ms]) => `${f} ${ms.toFixed(0)} ms`).join(', ');
  return `; kernels: ${k.chosen}, measured now (${times})`;
}

// --- model --------------------------------------------------------------------------
function wantGpu() {
  return !$('force-cpu').checked;
}

async function loadModel(bytes, name) {
  clearError();
  if (bytes.byteLength > MAX_MODEL_BYTES) {
    throw new Error(`${name} is ${(bytes.byteLength / 1e6).toFixed(0)} MB; models this page takes are at most ${MAX_MODEL_BYTES / 1e6} MB`);
  }
  setBusy(`Loading model ${name}… (on a GPU new to this page, its kernels are timed once first)`);
  let info;
  try {
    info = await pool.load(bytes, name, wantGpu(), storedKernels());
  } catch (e) {
    throw new Error(`Could not load the model: ${message(e)}`);
  }
  state.modelBytes = bytes;
  state.modelName = name;
  state.meta = info.meta;
  state.backendKind = info.kind;
  const m = state.meta;
  const cal = m.calibration
    ? `calibrated on ${m.calibration.normals} normal images (threshold ${fmt(m.calibration.threshold)})`
    : 'not calibrated: scores are raw, no verdict';
  $('model-info').textContent =
    `${name}: ${m.model.image_size} px, ${m.model.channels === 1 ? 'grey' : 'RGB'}, ` +
    `nf ${m.model.nf}, ${m.step} training steps, t {${m.detection.ts.join(', ')}}, ` +
    `taps ${m.detection.taps.join(' + ')}${m.detection.smooth ? `, smoothing σ ${m.detection.smooth} px` : ''}; ${cal}.`;
  $('backend').textContent = `Backend: ${info.backend}${kernelWords(info.kernels)}`;
  keepKernels(info.kernels);
  document.body.dataset.backend = info.kind;
  if (!state.train.running && !state.train.configTouched) {
    // A real GPU trains the 64 px model in reasonable time; the CPU and a
    // software adapter the 32 px one.
    $('train-config').value = info.slow ? 'tiny' : 'small';
    updateTrainCommand();
  }
  state.timings.modelLoaded = performance.now();
  setBusy('');
  $('status').textContent = 'Model ready. Pick an image.';
  document.body.dataset.state = 'ready';
  // Maps of the old model no longer match: recompute what is on screen.
  if (state.results.length) {
    const items = state.results.map((r) => ({ name: r.name, blob: r.blob, bitmap: r.bitmap }));
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
// The bitmap shown on the page (the worker decodes the file again for the
// model: pixels never go through this thread).
async function decode(blob, name) {
  let bitmap;
  try {
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

async function detectAll(items) {
  clearError();
  const first = state.results.length;
  const entries = items.map((item) => ({ name: item.name, blob: item.blob, bitmap: item.bitmap, result: null, error: null }));
  state.results.push(...entries);
  let done = 0;
  const t0 = performance.now();
  const where = state.backendKind === 'webgpu' ? 'WebGPU' : 'the CPU';
  const workers = pool.size(items.length);
  const progress = () => setBusy(`Detecting ${items.length > 1 ? `${done}/${items.length} images` : items[0].name} on ${where}` +
    `${workers > 1 ? ` (${workers} workers)` : ''}…`);
  progress();
  state.busy = true;
  $('cancel').hidden = false;
  let cancelled = false;
  try {
    await pool.detectAll(items, (i, result, error) => {
      const entry = entries[i];
      done += 1;
      if (result) {
        entry.result = result;
        state.detections += 1;
        state.last = result;
        if (state.timings.firstMap === undefined) state.timings.firstMap = performance.now();
      } else {
        entry.error = message(error);
        const hint = state.backendKind === 'webgpu' && /GPU/.test(entry.error) ? ' — tick “use the CPU” to run without WebGPU' : '';
        showError(`${entry.name}: ${entry.error}${hint}`);
      }
      const index = first + i;
      if (result && (state.current < first || items.length === 1)) state.current = index;
      if (state.current < 0) state.current = index;
      progress();
      render();
    });
  } catch (e) {
    if (!(e instanceof Cancelled)) throw e;
    cancelled = true;
    for (const entry of entries) if (!entry.result && !entry.error) entry.error = 'cancelled';
  } finally {
    state.busy = false;
    $('cancel').hidden = true;
  }
  const ok = entries.filter((r) => r.result);
  const wall = performance.now() - t0;
  $('status').textContent = cancelled
    ? `Cancelled: ${ok.length} of ${items.length} image${items.length > 1 ? 's' : ''} done before the stop. The page is ready.`
    : ok.length
      ? `Done: ${ok.length} image${ok.length > 1 ? 's' : ''} in ${fmtMs(wall)}` +
        (entries.length > ok.length ? `; ${entries.length - ok.length} failed` : '') + '.'
      : 'Nothing detected: see the message above.';
  if (cancelled) {
    state.lastCancel = $('status').textContent;
    if (state.current < 0 && state.results.length) state.current = 0;
  }
  render();
  if (document.body.dataset.state !== 'error') document.body.dataset.state = 'done';
}

async function openFiles(files) {
  const items = [];
  for (const f of files) {
    try {
      items.push({ name: f.name, blob: f, bitmap: await decode(f, f.name) });
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
  const blob = await resp.blob();
  const bitmap = await decode(blob, s.file);
  state.results = [];
  state.current = -1;
  await detectAll([{ name: s.name || s.file, blob, bitmap }]);
}

// --- drawing -------------------------------------------------------------------------------
function fmt(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? x.toExponential(3) : x.toPrecision(4);
}
const fmtMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
const clamp01 = (v) => Math.min(Math.max(v, 0), 1);

// The piecewise-linear calibration of src/config.rs (Calibration::normalise):
// 0.5 = threshold. The verdict comes normalised from the detector; outlines
// and colours use the map's own scale (mapScale).
function normalise(raw, cal) {
  const v = raw < cal.threshold
    ? 0.5 * (raw - cal.low) / Math.max(cal.threshold - cal.low, Number.MIN_VALUE)
    : 0.5 + 0.5 * (raw - cal.threshold) / Math.max(cal.high - cal.threshold, Number.MIN_VALUE);
  return Number.isNaN(v) ? 1 : clamp01(v);
}
// ...and its inverse, to show the slider's threshold in raw units.
function denormalise(v, cal) {
  return v < 0.5 ? cal.low + 2 * v * (cal.threshold - cal.low) : cal.threshold + (2 * v - 1) * (cal.high - cal.threshold);
}

// The calibration of the map's values: a model whose image score has its
// own reading (calibrate --objective both) stores the map's scale apart.
function mapScale(cal) {
  return cal && cal.map ? cal.map : cal;
}

function mapRange(map) {
  let lo = Infinity, hi = -Infinity;
  for (const x of map) if (Number.isFinite(x)) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
  return lo > hi ? [0, 0] : [lo, hi];
}

// The colour scale of a map: 0 at the good images' median score (the
// calibration's `low`), 0.5 at the threshold, 1 at this map's own maximum
// (at least the calibration's `high`). The threshold-relative scale the
// verdict uses saturates just above the threshold, which painted a whole
// defect and its surroundings one yellow: here only the strongest response
// is yellow, so the colour points at the defect. Without a calibration: the
// map's range.
function colourScale(res) {
  const cal = mapScale(state.meta && state.meta.calibration);
  const [lo, hi] = mapRange(res.map);
  if (!cal) {
    return { of: (x) => (hi > lo ? (x - lo) / (hi - lo) : 0), labels: [[0, fmt(lo)], [0.5, fmt((lo + hi) / 2)], [1, fmt(hi)]] };
  }
  const top = Math.max(hi, cal.high);
  const of = (x) => (x < cal.threshold
    ? 0.5 * clamp01((x - cal.low) / Math.max(cal.threshold - cal.low, Number.MIN_VALUE))
    : 0.5 + 0.5 * clamp01((x - cal.threshold) / Math.max(top - cal.threshold, Number.MIN_VALUE)));
  return { of, labels: [[0, `${fmt(cal.low)} good median`], [0.5, `${fmt(cal.threshold)} threshold`], [1, `${fmt(top)} ${hi >= cal.high ? 'this map’s max' : ''}`]] };
}

function threshold() {
  return parseFloat($('threshold').value);
}

// The pixels above the slider's threshold (the map's calibrated scale; 0.5 =
// the model's threshold: the pixels that make the image's verdict, unless
// the model reads its image score apart).
function outlineOf(res) {
  const cal = mapScale(state.meta && state.meta.calibration);
  const [lo, hi] = mapRange(res.map);
  const t = threshold();
  return Array.from(res.map, (x) => {
    if (!Number.isFinite(x)) return false;
    return (cal ? normalise(x, cal) : hi > lo ? (x - lo) / (hi - lo) : 0) >= t;
  });
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
  if (!entry.result || !withMap && !withMask) return;
  const n = entry.result.size;
  if (withMap) {
    // Grey and dimmed underneath (viz::dimmed_gray: Rec. 601 luma × DIM).
    const base = g.getImageData(0, 0, side, side);
    const d = base.data;
    for (let i = 0; i < d.length; i += 4) {
      const l = Math.round(Math.floor((299 * d[i] + 587 * d[i + 1] + 114 * d[i + 2] + 500) / 1000) * DIM);
      d[i] = d[i + 1] = d[i + 2] = l;
    }
    g.putImageData(base, 0, 0);
    // The map at model size, colour with opacity ALPHA_MAX·v^0.75 (viz::overlay), smoothed up.
    const scale = colourScale(entry.result);
    const small = document.createElement('canvas');
    small.width = small.height = n;
    const sg = small.getContext('2d');
    const img = sg.createImageData(n, n);
    entry.result.map.forEach((x, i) => {
      const v = Number.isFinite(x) ? scale.of(x) : NaN;
      const c = inferno(v);
      img.data[4 * i] = c[0];
      img.data[4 * i + 1] = c[1];
      img.data[4 * i + 2] = c[2];
      img.data[4 * i + 3] = Number.isNaN(v) ? 255 : v <= 0 ? 0 : Math.round(255 * ALPHA_MAX * Math.pow(v, 0.75));
    });
    sg.putImageData(img, 0, 0);
    g.drawImage(small, 0, 0, side, side);
  }
  if (withMask) {
    const inside = outlineOf(entry.result);
    const at = (x, y) => x >= 0 && y >= 0 && x < n && y < n && inside[y * n + x];
    const s = side / n;
    g.strokeStyle = MASK_COLOR;
    g.lineWidth = Math.max(1, side / 192);
    g.beginPath();
    for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
      if (!at(x, y)) continue;
      if (!at(x - 1, y)) { g.moveTo(x * s, y * s); g.lineTo(x * s, (y + 1) * s); }
      if (!at(x + 1, y)) { g.moveTo((x + 1) * s, y * s); g.lineTo((x + 1) * s, (y + 1) * s); }
      if (!at(x, y - 1)) { g.moveTo(x * s, y * s); g.lineTo((x + 1) * s, y * s); }
      if (!at(x, y + 1)) { g.moveTo(x * s, (y + 1) * s); g.lineTo((x + 1) * s, (y + 1) * s); }
    }
    g.stroke();
  }
}

function drawColorbar(entry) {
  const c = $('colorbar');
  const g = c.getContext('2d');
  const h = c.height, w = c.width;
  g.clearRect(0, 0, w, h);
  const top = 16, bottom = h - 16, x0 = 4, bw = 16;
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
  const res = entry && entry.result;
  const scale = res ? colourScale(res) : null;
  const yOf = (v) => bottom - v * (bottom - top);
  const words = [];
  for (const [v, text] of scale ? scale.labels : []) {
    g.fillRect(x0 + bw, yOf(v), 4, 1);
    const [num, ...rest] = text.split(' ');
    g.fillText(num, x0 + bw + 6, yOf(v) - (rest.length ? 6 : 0));
    if (rest.join(' ').trim()) g.fillText(rest.join(' '), x0 + bw + 6, yOf(v) + 7);
    words.push(text);
  }
  // The slider's threshold, on the colour scale.
  const cal = mapScale(state.meta && state.meta.calibration);
  if (res && cal) {
    const t = scale.of(denormalise(threshold(), cal));
    g.strokeStyle = MASK_COLOR;
    g.lineWidth = 2;
    g.beginPath();
    g.moveTo(x0 - 3, yOf(t));
    g.lineTo(x0 + bw + 3, yOf(t));
    g.stroke();
  }
  c.setAttribute('aria-label', words.length
    ? `colour scale, inferno (dark purple to yellow): ${words.join('; ')}`
    : 'colour scale, inferno (dark purple to yellow)');
}

function verdictOf(res) {
  if (!res || res.normalised === null) return null;
  return res.normalised >= threshold();
}

// Where the outlined pixels are, in words (for screen readers and the test).
function describeOutline(res) {
  const inside = outlineOf(res);
  const n = res.size;
  let count = 0, sx = 0, sy = 0;
  inside.forEach((v, i) => { if (v) { count++; sx += i % n; sy += Math.floor(i / n); } });
  if (!count) return 'No pixel is above the threshold.';
  const horiz = ['left', 'centre', 'right'][Math.min(2, Math.floor(3 * (sx / count + 0.5) / n))];
  const vert = ['top', 'middle', 'bottom'][Math.min(2, Math.floor(3 * (sy / count + 0.5) / n))];
  return `${count} of ${n * n} pixels (${(100 * count / (n * n)).toFixed(1)} %) are above the threshold, around the ${vert} ${horiz} of the image.`;
}

function render() {
  const t = threshold();
  const cal = mapScale(state.meta && state.meta.calibration);
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
  verdict.textContent = !res ? (entry ? (entry.error === 'cancelled' ? 'cancelled' : entry.error ? 'failed' : '…') : '—') : v === null ? 'uncalibrated' : v ? 'DEFECT' : 'OK';
  $('score-norm').textContent = res && res.normalised !== null ? res.normalised.toFixed(3) : '—';
  $('score-raw').textContent = res ? fmt(res.score) : '—';
  $('time').textContent = res ? fmtMs(res.ms) : '—';
  $('ran-on').textContent = res ? (res.backend === 'webgpu' ? 'WebGPU' : 'CPU (WebAssembly)') : '—';
  $('where').textContent = res ? describeOutline(res) : '';
  $('view').setAttribute('aria-label', res ? `${entry.name} with its heat map: ${verdict.textContent}. ${describeOutline(res)}` : 'image with heat-map overlay');
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
    li.setAttribute('role', 'button');
    li.setAttribute('aria-pressed', String(i === state.current));
    li.className = (i === state.current ? 'selected ' : '') + (entry.error ? 'failed' : '');
    const c = document.createElement('canvas');
    drawResult(c, entry, 128, $('show-map').checked, $('show-mask').checked);
    li.appendChild(c);
    const cap = document.createElement('div');
    if (entry.error) {
      cap.textContent = `${entry.name}: ${entry.error}`;
    } else if (!entry.result) {
      cap.textContent = `${entry.name}: waiting…`;
    } else {
      const v = verdictOf(entry.result);
      if (v) defects++;
      const tag = document.createElement('span');
      tag.className = 'tag ' + (v === null ? '' : v ? 'defect' : 'ok');
      tag.textContent = v === null ? '' : v ? 'DEFECT ' : 'OK ';
      cap.append(tag, `${entry.name} · ${entry.result.normalised !== null ? entry.result.normalised.toFixed(2) : fmt(entry.result.score)} · ${fmtMs(entry.result.ms)}`);
    }
    li.appendChild(cap);
    const pick = () => { state.current = i; render(); list.children[i] && list.children[i].focus(); };
    li.addEventListener('click', pick);
    li.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pick(); } });
    list.appendChild(li);
  });
  const ok = state.results.filter((r) => r.result).length;
  $('batch-summary').textContent = `${state.results.length} images, ${ok} done, ${defects} called defective at threshold ${threshold().toFixed(2)}.`;
}

// --- training -----------------------------------------------------------------------------
function trainOptions() {
  const num = (id) => Number($(id).value);
  return {
    config: $('train-config').value,
    steps: Math.round(num('train-steps')),
    batch: Math.round(num('train-batch')),
    lr: num('train-lr'),
    seed: Math.round(num('train-seed')),
  };
}

// The CLI commands that make the same model from the same folder.
function updateTrainCommand() {
  const o = trainOptions();
  $('train-command').textContent = `scoredd train --data DIR --config ${o.config} --steps ${o.steps} --batch ${o.batch} ` +
    `--lr ${+o.lr.toPrecision(6)} --seed ${o.seed} --out model.safetensors && scoredd calibrate --model model.safetensors --data DIR --auto`;
}

function trainMessage(text, kind = 'error') {
  const box = $('train-message');
  state.train.message = text ? { text, kind } : null;
  box.textContent = text || '';
  box.className = `train-message ${kind}`;
  box.hidden = !text;
}

// Files in the CLI's order: by path, byte-wise (what sorting a folder listing gives).
function sortedFiles(files) {
  const key = (f) => f.webkitRelativePath || f.name;
  return [...files].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

function showPreviews(files, taken) {
  const box = $('train-previews');
  for (const img of box.querySelectorAll('img')) URL.revokeObjectURL(img.src);
  box.textContent = '';
  const names = new Set(taken);
  const shown = files.filter((f) => names.has(f.name)).slice(0, 48);
  for (const f of shown) {
    const img = document.createElement('img');
    img.src = URL.createObjectURL(f);
    img.alt = f.name;
    img.title = f.name;
    box.appendChild(img);
  }
  if (taken.length > shown.length) {
    const more = document.createElement('span');
    more.textContent = `+ ${taken.length - shown.length} more`;
    box.appendChild(more);
  }
}

function trainClient() {
  if (!state.train.client || state.train.client.dead) state.train.client = new WorkerClient();
  return state.train.client;
}

// Reads the picked good images in a worker: how many it took, which it skipped and why.
async function pickTrainingFiles(files) {
  const tr = state.train;
  if (tr.running) return;
  trainMessage('');
  $('train-start').disabled = true;
  tr.files = sortedFiles(files);
  tr.prepared = null;
  $('train-taken').textContent = `Reading ${tr.files.length} file${tr.files.length === 1 ? '' : 's'}…`;
  let r;
  try {
    const client = trainClient();
    await client.ready;
    r = await client.call('prepare', { files: tr.files, options: trainOptions() }, {
      onProgress: (p) => { $('train-taken').textContent = `Reading ${p.done}/${p.total} files…`; },
    });
  } catch (e) {
    $('train-taken').textContent = '';
    showPreviews([], []);
    trainMessage(message(e));
    return;
  }
  tr.prepared = r;
  showPreviews(tr.files, r.taken);
  const size = r.taken.length ? ` (${r.width}×${r.height} px; the model sees them at ${r.imageSize}×${r.imageSize})` : '';
  $('train-taken').textContent = `Took ${r.taken.length} good image${r.taken.length === 1 ? '' : 's'}${size}.`;
  const problems = [];
  if (r.skipped.length) {
    problems.push(`Skipped ${r.skipped.length} file${r.skipped.length === 1 ? '' : 's'} that ${r.skipped.length === 1 ? 'is' : 'are'} not ` +
      `an image: ${r.skipped.slice(0, 5).map((s) => s.name).join(', ')}${r.skipped.length > 5 ? ', …' : ''}.`);
  }
  const min = tr.minImages;
  if (r.taken.length < min) {
    problems.push(`Too few images: ${r.taken.length} — training needs at least ${min} good images (${min - 4} to learn from ` +
      'and 4 held out to calibrate the detector); a hundred or more give a reliable threshold.');
  }
  if (problems.length) trainMessage(problems.join(' '), r.taken.length < min ? 'error' : 'notice');
  $('train-start').disabled = r.taken.length < min;
}

function fmtDuration(s) {
  if (!Number.isFinite(s)) return '—';
  if (s < 60) return `${Math.ceil(s)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s - 60 * m)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// The loss curve: every step's loss (thin) and its running average (as the CLI's), log scale.
function drawLossCurve() {
  const c = $('loss-curve');
  const g = c.getContext('2d');
  const w = c.width, h = c.height, pad = { l: 44, r: 8, t: 8, b: 20 };
  g.clearRect(0, 0, w, h);
  const pts = state.train.curve.filter((p) => Number.isFinite(p.loss) && p.loss > 0);
  // The steps so far fill the width (the progress bar shows the whole run).
  const steps = Math.max(pts.length ? pts[pts.length - 1].step : 1, 2);
  g.strokeStyle = '#999';
  g.strokeRect(pad.l + 0.5, pad.t + 0.5, w - pad.l - pad.r, h - pad.t - pad.b);
  g.fillStyle = '#191919';
  g.font = '11px system-ui, sans-serif';
  g.fillText('step', (w + pad.l) / 2 - 12, h - 5);
  g.fillText(String(steps), w - pad.r - 7 * String(steps).length, h - 5);
  g.fillText('0', pad.l, h - 5);
  if (!pts.length) return;
  const logs = pts.map((p) => Math.log10(p.loss));
  let lo = Math.min(...logs), hi = Math.max(...logs);
  if (hi - lo < 1e-3) { lo -= 0.5; hi += 0.5; }
  const X = (s) => pad.l + (w - pad.l - pad.r) * s / steps;
  const Y = (l) => pad.t + (h - pad.t - pad.b) * (hi - l) / (hi - lo);
  g.fillText(pts[0].loss < 1e-2 || hi > 2 ? (10 ** hi).toExponential(1) : (10 ** hi).toPrecision(2), 2, pad.t + 8);
  g.fillText(lo < -2 ? (10 ** lo).toExponential(1) : (10 ** lo).toPrecision(2), 2, h - pad.b);
  g.fillText('loss', 2, (h - pad.b) / 2 + 4);
  g.strokeStyle = '#c9b3d6';
  g.lineWidth = 1;
  g.beginPath();
  pts.forEach((p, i) => (i ? g.lineTo(X(p.step), Y(logs[i])) : g.moveTo(X(p.step), Y(logs[i]))));
  g.stroke();
  g.strokeStyle = '#7a1fa2';
  g.lineWidth = 2;
  g.beginPath();
  let s = null;
  pts.forEach((p, i) => {
    s = s === null ? p.loss : 0.9 * s + 0.1 * p.loss;
    const y = Y(Math.log10(s));
    if (i) g.lineTo(X(p.step), y); else g.moveTo(X(p.step), y);
  });
  g.stroke();
}

let curveFrame = 0;
function onTrainProgress(p) {
  const tr = state.train;
  tr.progress = p;
  const steps = tr.info ? tr.info.steps : trainOptions().steps;
  if (p.phase === 'decoding') {
    $('train-status').textContent = `Reading images ${p.done}/${p.total}…`;
  } else if (p.phase === 'started') {
    tr.info = p.info;
    tr.t0 = performance.now();
    const i = p.info;
    $('train-status').textContent = `Training ${i.config} (${i.params.toLocaleString('en')} parameters) on ${i.backend}: ` +
      `${i.train} images to learn from, ${i.held} held out to calibrate.`;
    $('train-bar').max = i.steps;
  } else if (p.phase === 'step') {
    tr.curve.push({ step: p.step, loss: p.loss });
    tr.lastStep = p.step;
    const now = performance.now();
    // The first step pays one-off costs (shader compilation): the rate counts from its end.
    if (tr.firstStepAt === undefined) { tr.firstStepAt = now; tr.firstStep = p.step; }
    const rate = p.step > tr.firstStep ? (p.step - tr.firstStep) / ((now - tr.firstStepAt) / 1000) : NaN;
    tr.stepsPerSecond = rate;
    const recent = tr.curve.slice(-10);
    const avg = recent.reduce((a, q) => a + q.loss, 0) / recent.length;
    $('train-status').textContent = `Step ${p.step} of ${steps} · loss ${fmt(avg)} · ` +
      `${Number.isFinite(rate) ? rate.toFixed(rate < 10 ? 2 : 1) : '…'} steps/s · ` +
      `about ${fmtDuration((steps - p.step) / rate)} left` + (tr.stopping ? ' · stopping after this step…' : '');
    $('train-bar').value = p.step;
    if (!curveFrame) curveFrame = requestAnimationFrame(() => { curveFrame = 0; drawLossCurve(); });
  } else if (p.phase === 'calibrating') {
    $('train-status').textContent = `Calibrating on the held-out images (on the CPU): ${p.what}` +
      (p.total > 1 ? ` ${p.done}/${p.total}` : '') + '…';
  }
}

function setTraining(on) {
  const tr = state.train;
  tr.running = on;
  $('train-start').disabled = on || !tr.prepared || tr.prepared.taken.length < tr.minImages;
  $('train-stop').disabled = !on;
  $('train-cancel').disabled = !on;
  for (const id of ['train-files-button', 'train-folder-button', 'train-config', 'train-steps', 'train-batch', 'train-lr', 'train-seed']) {
    $(id).disabled = on;
  }
  document.body.dataset.training = on ? 'running' : 'idle';
}

async function startTraining() {
  const tr = state.train;
  if (tr.running || !tr.files.length) return;
  trainMessage('');
  $('train-done').hidden = true;
  tr.curve = [];
  tr.info = null;
  tr.result = null;
  tr.stopping = false;
  tr.lastStep = 0;
  tr.firstStepAt = undefined;
  $('train-progress').hidden = false;
  drawLossCurve();
  setTraining(true);
  const t0 = performance.now();
  const client = trainClient();
  try {
    // Read again with the options as they are now (the model size may have changed).
    await client.call('prepare', { files: tr.files, options: trainOptions() }, { onProgress: onTrainProgress });
    const r = await client.call('train', { preferGpu: wantGpu() }, { onProgress: onTrainProgress });
    drawLossCurve();
    const seconds = (performance.now() - t0) / 1000;
    tr.result = { info: r.info, summary: r.summary, stopped: r.stopped, seconds, stepsPerSecond: tr.stepsPerSecond };
    const name = `trained-${r.info.config}-${r.summary.step}steps-seed${r.info.seed}.safetensors`;
    if (tr.downloadUrl) URL.revokeObjectURL(tr.downloadUrl);
    tr.downloadUrl = URL.createObjectURL(new Blob([r.bytes], { type: 'application/octet-stream' }));
    const link = $('train-download');
    link.href = tr.downloadUrl;
    link.download = name;
    const cal = r.summary.calibration, det = r.summary.detection;
    $('train-summary').textContent = `${r.stopped ? `Stopped at step ${r.summary.step} of ${r.info.steps}` : `Trained ${r.summary.step} steps`} ` +
      `in ${fmtDuration(seconds)} on ${r.info.kind === 'webgpu' ? 'WebGPU' : 'the CPU'}; calibrated on ${cal.normals} held-out images ` +
      `(threshold ${fmt(cal.threshold)}; t {${det.ts.join(', ')}}, taps ${det.taps.join(' + ')}, smoothing σ ${det.smooth} px` +
      `${det.verdict ? `; the image score reads taps ${det.verdict.taps.join(' + ')} of the same runs` : ''}). ` +
      'It is now the model in use above.';
    $('train-done').hidden = false;
    $('train-status').textContent = 'Done.';
    await enqueue(() => loadModel(r.bytes.buffer, name));
    tr.loaded = state.modelName === name;
  } catch (e) {
    if (e instanceof Cancelled) {
      trainMessage(`Training cancelled at step ${tr.lastStep} of ${tr.info ? tr.info.steps : trainOptions().steps}: ` +
        'nothing was kept, the model in use is unchanged.', 'notice');
      $('train-status').textContent = 'Cancelled.';
    } else {
      trainMessage(`Training stopped: ${message(e)}`);
      $('train-status').textContent = 'Failed.';
    }
  } finally {
    if (state.train.client) state.train.client.terminate('finished');
    state.train.client = null;
    setTraining(false);
  }
}

function stopTraining() {
  const tr = state.train;
  if (!tr.running || !tr.client) return;
  tr.stopping = true;
  tr.client.tell('stop');
  $('train-stop').disabled = true;
  $('train-status').textContent += ' · stopping after this step, then calibrating…';
}

function cancelTraining() {
  const tr = state.train;
  if (!tr.running || !tr.client) return;
  tr.client.terminate('cancelled');
}

// --- wiring ----------------------------------------------------------------------------------
// Every file dropped, folders walked (webkitGetAsEntry), in no particular order.
async function droppedFiles(dt) {
  const entries = [...(dt.items || [])].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...(dt.files || [])];
  const out = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      out.push(await new Promise((res, rej) => entry.file(res, rej)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const e of batch) await walk(e);
      }
    }
  };
  for (const e of entries) await walk(e);
  return out;
}

// A drop zone that is also a keyboard control: Enter or Space opens `input`'s picker.
function dropZone(el, input, onFiles) {
  el.addEventListener('dragover', (e) => { e.preventDefault(); el.classList.add('over'); });
  el.addEventListener('dragleave', () => el.classList.remove('over'));
  el.addEventListener('drop', async (e) => {
    e.preventDefault();
    el.classList.remove('over');
    const files = await droppedFiles(e.dataTransfer);
    if (files.length) onFiles(files);
  });
  el.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && e.target === el) { e.preventDefault(); input.click(); }
  });
}

// A visible button that opens a hidden file input (a label is not focusable).
function pickerButton(button, input) {
  button.addEventListener('click', () => input.click());
}

function wire() {
  $('error-close').addEventListener('click', clearError);
  pickerButton($('model-file-button'), $('model-file'));
  pickerButton($('image-file-button'), $('image-file'));
  pickerButton($('train-files-button'), $('train-files'));
  pickerButton($('train-folder-button'), $('train-folder'));
  $('model-file').addEventListener('change', (e) => {
    const f = e.target.files[0];
    e.target.value = '';
    if (f) enqueue(() => loadModelFile(f));
  });
  dropZone($('model-drop'), $('model-file'), (files) => enqueue(() => loadModelFile(files[0])));
  $('model-default').addEventListener('click', () => enqueue(loadDefaultModel));
  $('force-cpu').addEventListener('change', () => {
    if (state.modelBytes) enqueue(() => loadModel(state.modelBytes, state.modelName));
  });
  $('image-file').addEventListener('change', (e) => {
    const files = [...e.target.files];
    e.target.value = '';
    if (files.length) enqueue(() => openFiles(files));
  });
  dropZone($('image-drop'), $('image-file'), (files) => enqueue(() => openFiles(files)));
  $('cancel').addEventListener('click', () => { if (state.busy) pool.cancel(); });
  // Moving the threshold only redraws: the maps are kept.
  $('threshold').addEventListener('input', render);
  $('show-map').addEventListener('change', render);
  $('show-mask').addEventListener('change', render);
  // Training.
  for (const id of ['train-files', 'train-folder']) {
    $(id).addEventListener('change', (e) => {
      const files = [...e.target.files];
      e.target.value = '';
      if (files.length) pickTrainingFiles(files);
    });
  }
  dropZone($('train-drop'), $('train-files'), (files) => pickTrainingFiles(files));
  $('train-start').addEventListener('click', startTraining);
  $('train-stop').addEventListener('click', stopTraining);
  $('train-cancel').addEventListener('click', cancelTraining);
  for (const id of ['train-config', 'train-steps', 'train-batch', 'train-lr', 'train-seed']) {
    $(id).addEventListener('change', () => {
      if (id === 'train-config') state.train.configTouched = true;
      updateTrainCommand();
      // The model size decides how images are read: read them again.
      if (id === 'train-config' && state.train.files.length) pickTrainingFiles(state.train.files);
    });
  }
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
    img.alt = '';
    b.append(img, s.label || s.name);
    b.setAttribute('aria-label', `sample: ${s.name}`);
    b.addEventListener('click', () => enqueue(() => openSample(s)));
    box.appendChild(b);
  }
  $('samples-credit').textContent = manifest.credit || '';
  return manifest.samples;
}

async function main() {
  wire();
  if (params.get('backend') === 'cpu') $('force-cpu').checked = true;
  updateTrainCommand();
  render();
  setBusy('Starting…');
  try {
    // Compile once here; every worker instantiates this module.
    await wasmModule();
  } catch (e) {
    showError(`This browser could not compile the WebAssembly module: ${message(e)}`);
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
  if (pool.info && pool.info.minImages) {
    state.train.minImages = pool.info.minImages;
    $('min-images').textContent = String(pool.info.minImages);
  }
  state.ready = true;
  const auto = params.get('sample');
  if (auto) {
    const s = samples.find((x) => x.file === auto);
    if (s) await enqueue(() => openSample(s));
    else showError(`No bundled sample named ${auto}`);
  }
}

state.started = main();
