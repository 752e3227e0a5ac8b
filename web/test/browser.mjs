// Browser test of the page in web/dist, in real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core; never a downloaded browser).
//
//   node web/test/browser.mjs [OUT_DIR]
//
// 1. Serves web/dist on a free local port (a small node server, below).
// 2. WebGPU (SwiftShader in a GPU-less machine), then CPU-wasm (?backend=cpu):
//    the bundled model detects a bundled sample in a worker; the map equals the
//    native reference (OUT_DIR/reference.json, written by tests/browser.rs):
//    max |diff| ≤ 1e-3 × (max − min) of the reference; a timer on the page's
//    thread keeps firing within 100 ms during the detection.
// 3. Bad input to detection: a non-image, a corrupt model, a file that is not
//    a scoredd model, a 5000×5000 image: a visible, plain error each, the page
//    still works afterwards. A batch and the threshold slider (CPU page).
// 4. The bundled model on the four samples: the above-threshold outline against
//    each defective sample's true mask (IoU ≥ 0.5), nothing outlined on the
//    good one.
// 5. Training in the page from web/samples/train with the parameters of
//    OUT_DIR/train-params.json (the CLI's run in tests/browser.rs), on WebGPU
//    and on CPU-wasm, the page's thread responsive meanwhile; each model is
//    downloaded (OUT_DIR/browser-trained-<backend>.safetensors) and its map on
//    the sample saved (…-map.json) for tests/browser.rs to compare with the
//    CLI. The CLI's model loaded into the page (cli-model-in-page-map.json).
// 6. Bad input to training: too few images, a non-image among them, mixed
//    sizes, stop-and-keep and cancel in the middle: a visible, plain message
//    each, the page still works. A phone-sized viewport: no horizontal scroll.
// Screenshots and browser-results.json go to OUT_DIR (default target/browser-test,
// or $SCOREDD_BROWSER_OUT). Exit status 0 = all passed.
//
// Environment: CHROMIUM (default /usr/bin/chromium), SCOREDD_REFERENCE (default
// OUT_DIR/reference.json), SCOREDD_TRAIN_PARAMS (default OUT_DIR/train-params.json),
// SCOREDD_REQUIRE_WEBGPU=0 to accept a CPU fallback where WebGPU was asked for
// (default: WebGPU is required), SCOREDD_SCREENSHOT_DIR to also copy the
// README's screenshots there (browser-result.png, browser-train-running.png,
// browser-train.png; `SCOREDD_SCREENSHOT_DIR=$PWD/web/screenshots`).

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const web = path.resolve(here, '..');
const dist = path.join(web, 'dist');
const out = path.resolve(process.argv[2] || process.env.SCOREDD_BROWSER_OUT || path.join(web, '..', 'target', 'browser-test'));
const refPath = process.env.SCOREDD_REFERENCE || path.join(out, 'reference.json');
const paramsPath = process.env.SCOREDD_TRAIN_PARAMS || path.join(out, 'train-params.json');
const requireWebgpu = process.env.SCOREDD_REQUIRE_WEBGPU !== '0';
const TOL = 1e-3;
const RUN_TIMEOUT = 300_000;
// The page's thread must run a 10 ms timer at least every this many ms while
// a worker detects or trains.
const MAX_GAP_MS = 100;
const MIN_IOU = 0.5;

fs.mkdirSync(out, { recursive: true });
const failures = [];
const report = { checks: [] };
function check(name, ok, detail = '') {
  report.checks.push({ name, ok, detail });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
  if (!ok) failures.push(`${name}: ${detail}`);
}

// --- static server ---------------------------------------------------------------
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.wasm': 'application/wasm',
  '.png': 'image/png', '.jpg': 'image/jpeg', '.safetensors': 'application/octet-stream',
};
function serve(root) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let p = path.normalize(path.join(root, decodeURIComponent(url.pathname)));
    if (!p.startsWith(root)) { res.writeHead(403).end(); return; }
    if (fs.existsSync(p) && fs.statSync(p).isDirectory()) p = path.join(p, 'index.html');
    fs.readFile(p, (err, data) => {
      if (err) { res.writeHead(404).end('not found'); return; }
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(p)] || 'application/octet-stream', 'Cache-Control': 'no-store' });
      res.end(data);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// --- test inputs ---------------------------------------------------------------------
// A w×h grey PNG of one value (compresses to almost nothing, decodes to w·h·4 bytes).
function grayPng(w, h, value = 128) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; ihdr[9] = 0; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  const row = Buffer.alloc(w + 1, value); row[0] = 0;
  const raw = Buffer.alloc((w + 1) * h);
  for (let y = 0; y < h; y++) row.copy(raw, y * (w + 1));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw, { level: 9 })), chunk('IEND', Buffer.alloc(0)),
  ]);
}

// A valid safetensors file that is not a scoredd model (no metadata).
function foreignSafetensors() {
  const header = Buffer.from(JSON.stringify({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }));
  const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(header.length));
  return Buffer.concat([len, header, Buffer.alloc(4)]);
}

// --- page helpers ------------------------------------------------------------------------
async function waitIdle(page, what) {
  // The page's job queue drains when nothing is loading or detecting.
  await page.waitForFunction(() => window.scoredd && (window.scoredd.ready === true || window.scoredd.failed), null, { timeout: RUN_TIMEOUT });
  await page.evaluate(() => window.scoredd.queue);
  return what;
}

async function lastResult(page) {
  return page.evaluate(() => {
    const s = window.scoredd;
    const r = s.last;
    return {
      backend: document.body.dataset.backend,
      backendText: document.getElementById('backend').textContent,
      lastError: s.lastError,
      timings: s.timings,
      result: r && { map: Array.from(r.map), size: r.size, score: r.score, normalised: r.normalised,
        defect: r.defect, ms: r.ms, backend: r.backend },
    };
  });
}

function parity(map, ref) {
  if (!map || map.length !== ref.map.length) {
    return { ok: false, detail: `map has ${map ? map.length : 0} values, reference ${ref.map.length}` };
  }
  let lo = Infinity, hi = -Infinity, maxDiff = 0;
  ref.map.forEach((v, i) => {
    lo = Math.min(lo, v); hi = Math.max(hi, v);
    const d = Math.abs(v - map[i]);
    maxDiff = Number.isNaN(d) ? Infinity : Math.max(maxDiff, d);
  });
  const range = hi - lo;
  const rel = maxDiff / range;
  return { ok: range > 0 && rel <= TOL, maxDiff, range, rel, detail: `max |diff| ${maxDiff.toExponential(3)} = ${rel.toExponential(3)} of the range ${range.toExponential(3)} (limit ${TOL})` };
}

async function errorText(page) {
  await page.waitForSelector('#error:not([hidden])', { timeout: RUN_TIMEOUT });
  const text = await page.textContent('#error-text');
  await page.click('#error-close');
  return text;
}

// A 10 ms timer on the page's thread; the longest gap between its ticks says
// whether the thread stayed free while a worker computed. Beside it, the
// browser's own record of tasks on the page's thread longer than 50 ms (the
// Long Tasks API): a gap without a long task is the machine not scheduling
// the thread, not the page keeping it busy.
async function startGapMonitor(page) {
  await page.evaluate(() => {
    const g = { max: 0, last: performance.now(), ticks: 0, long: [], longTasks: [] };
    g.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) g.longTasks.push(Math.round(e.duration));
    });
    g.observer.observe({ type: 'longtask' });
    g.timer = setInterval(() => {
      const now = performance.now();
      // What the page was doing at each long gap, to tell where it came from.
      if (now - g.last > 50) g.long.push(`${(now - g.last).toFixed(0)} ms at ${document.getElementById('train-status').textContent.slice(0, 40) || document.getElementById('status').textContent.slice(0, 40)}`);
      g.max = Math.max(g.max, now - g.last);
      g.last = now;
      g.ticks++;
    }, 10);
    window.__gap = g;
  });
}

async function stopGapMonitor(page) {
  return page.evaluate(() => {
    const g = window.__gap;
    clearInterval(g.timer);
    for (const e of g.observer.takeRecords()) g.longTasks.push(Math.round(e.duration));
    g.observer.disconnect();
    g.max = Math.max(g.max, performance.now() - g.last);
    return { max_gap_ms: g.max, ticks: g.ticks, long_gaps: g.long.slice(0, 10), long_tasks_ms: g.longTasks };
  });
}

// The page's thread stayed free: no task on it longer than MAX_GAP_MS (the
// browser lists those over 50 ms) and its 10 ms timer kept firing within
// MAX_GAP_MS. Both are wall-clock: on a machine with more runnable threads
// than cores (SwiftShader emulates the GPU on the same CPUs; other jobs), the
// scheduler alone can stretch a few-ms task or delay a tick past 100 ms. So
// when the 1-minute load average exceeds the core count, the task limit grows
// with the overload and a late tick is printed as a WARN line with the load
// (and kept in browser-results.json), not a failure — unless
// SCOREDD_STRICT_TIMER=1.
function checkResponsive(name, gap, extra = '') {
  const load = os.loadavg()[0], cores = os.cpus().length;
  const longest = Math.max(0, ...gap.long_tasks_ms);
  const detail = `longest timer gap ${gap.max_gap_ms.toFixed(0)} ms over ${gap.ticks} ticks${extra}; ` +
    `tasks over 50 ms on the page's thread: ${gap.long_tasks_ms.length ? gap.long_tasks_ms.join(', ') + ' ms' : 'none'}; ` +
    `gaps over 50 ms: ${gap.long_gaps.join(' | ') || 'none'}; load average ${load.toFixed(1)} on ${cores} cores (limit ${MAX_GAP_MS} ms)`;
  const overloaded = load > cores && process.env.SCOREDD_STRICT_TIMER !== '1';
  // A task on the page's thread is always checked: on an overloaded machine
  // against the limit stretched by the overload (at most 4×), which a
  // detection or training step run on that thread (≥ 130 ms unloaded) still
  // exceeds. Only the timer's jitter, which the scheduler alone can cause,
  // becomes a warning there.
  const taskLimit = overloaded ? MAX_GAP_MS * Math.min(4, load / cores) : MAX_GAP_MS;
  check(`${name}: no task over ${taskLimit.toFixed(0)} ms on the page's thread`, longest <= taskLimit, detail);
  for (const [what, ok] of [[`timer within ${MAX_GAP_MS} ms`, gap.max_gap_ms <= MAX_GAP_MS]]) {
    if (!ok && overloaded) {
      console.log(`WARN ${name}: ${what} missed on an overloaded machine — ${detail}`);
      report.checks.push({ name: `${name}: ${what}`, ok: true, warning: true, detail });
    } else {
      check(`${name}: ${what}`, ok, detail);
    }
  }
  gap.load_average = load;
}

// The idle page's own timer jitter, for comparison (the machine may be busy).
async function idleGap(page, ms = 1000) {
  await startGapMonitor(page);
  await page.waitForTimeout(ms);
  return stopGapMonitor(page);
}

async function detectSample(page, file) {
  await page.click(`button[data-sample="${file}"]`);
  await waitIdle(page);
  return lastResult(page);
}

// --- training in the page ------------------------------------------------------------------------
async function setTrainOptions(page, o) {
  await page.selectOption('#train-config', o.config);
  for (const [id, v] of [['train-steps', o.steps], ['train-batch', o.batch], ['train-lr', o.lr], ['train-seed', o.seed]]) {
    await page.fill(`#${id}`, String(typeof v === 'number' ? +v.toPrecision(6) : v));
    await page.$eval(`#${id}`, (el) => el.dispatchEvent(new Event('change')));
  }
}

// Files as playwright payloads (paths and in-memory files cannot be mixed).
const payload = (f) => (typeof f === 'string' ? { name: path.basename(f), mimeType: 'image/png', buffer: fs.readFileSync(f) } : f);

// Picks training files and waits for the page to have read them.
async function pickTraining(page, files) {
  await page.evaluate(() => { window.scoredd.train.prepared = null; window.scoredd.train.message = null; });
  await page.setInputFiles('#train-files', files.map(payload));
  await page.waitForFunction(() => {
    const t = window.scoredd.train;
    return t.prepared || (t.message && t.message.kind === 'error');
  }, null, { timeout: RUN_TIMEOUT });
  return page.evaluate(() => ({
    prepared: window.scoredd.train.prepared,
    message: window.scoredd.train.message,
    taken: document.getElementById('train-taken').textContent,
    startDisabled: document.getElementById('train-start').disabled,
  }));
}

async function trainState(page) {
  return page.evaluate(() => {
    const t = window.scoredd.train;
    return { running: t.running, result: t.result, message: t.message, lastStep: t.lastStep || 0,
      stepsPerSecond: t.stepsPerSecond, status: document.getElementById('train-status').textContent };
  });
}

// Clicks Train and waits until the run has ended (result, failure or cancel).
async function trainToEnd(page) {
  await page.click('#train-start');
  await page.waitForFunction(() => window.scoredd.train.running, null, { timeout: RUN_TIMEOUT });
  await page.waitForFunction(() => !window.scoredd.train.running, null, { timeout: RUN_TIMEOUT });
  await page.evaluate(() => window.scoredd.queue);
  return trainState(page);
}

// Step 5 on one page: the parity run, downloaded, its map on the sample saved.
async function trainForParity(page, label, params, ref) {
  const files = params.files.map((f) => path.join(dist, params.dir, f));
  await setTrainOptions(page, params);
  const picked = await pickTraining(page, files);
  check(`${label}: training images read`, picked.prepared && picked.prepared.taken.length === files.length && !picked.startDisabled,
    `${picked.taken} ${picked.message ? picked.message.text : ''}`);
  await startGapMonitor(page);
  const t0 = Date.now();
  const st = await trainToEnd(page);
  const gap = await stopGapMonitor(page);
  const ok = !!st.result && st.result.summary.step === params.steps;
  check(`${label}: trains ${params.steps} steps in the page`, ok,
    ok ? `${st.result.info.backend}; ${st.result.seconds.toFixed(1)} s with calibration` : `${st.message ? st.message.text : st.status}`);
  if (!ok) return null;
  check(`${label}: trained on the asked backend`, st.result.info.kind === label || (!requireWebgpu && label === 'webgpu'), st.result.info.backend);
  checkResponsive(`${label}: page's thread during training`, gap);
  const inUse = await page.evaluate(() => window.scoredd.modelName);
  check(`${label}: the trained model is in use at once`, /^trained-/.test(inUse), inUse);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#train-download')]);
  const saved = path.join(out, `browser-trained-${label}.safetensors`);
  await download.saveAs(saved);
  check(`${label}: the model downloads as .safetensors`, fs.statSync(saved).size > 1000 && /\.safetensors$/.test(download.suggestedFilename()),
    `${download.suggestedFilename()}, ${fs.statSync(saved).size} bytes`);
  const res = await detectSample(page, ref.sample);
  fs.writeFileSync(path.join(out, `browser-trained-${label}-map.json`), JSON.stringify({ sample: ref.sample, map: res.result.map }));
  return { seconds: st.result.seconds, wall_ms: Date.now() - t0, steps: params.steps, steps_per_second: st.result.stepsPerSecond,
    backend: st.result.info.backend, main_thread: gap, detection: st.result.summary.detection, calibration: st.result.summary.calibration };
}

// Step 6 on the CPU page: bad training input, stop and cancel, each leaving the page usable.
async function trainingBadInput(page, params, ref) {
  const files = params.files.map((f) => path.join(dist, params.dir, f));
  const report = {};
  let r = await pickTraining(page, files.slice(0, 5));
  check('training: too few images → clear message, Train disabled',
    r.message && r.message.kind === 'error' && /at least \d+/.test(r.message.text) && r.startDisabled, r.message && r.message.text);
  r = await pickTraining(page, [...files, { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not an image\n') }]);
  check('training: a non-image among them → skipped with a message, the rest usable',
    r.message && /notes\.txt/.test(r.message.text) && /not an image/.test(r.message.text) && r.prepared.taken.length === files.length && !r.startDisabled,
    r.message && r.message.text);
  r = await pickTraining(page, [...files.slice(0, 15), { name: 'odd-size.png', mimeType: 'image/png', buffer: grayPng(48, 40) }]);
  check('training: mixed sizes → clear message, Train disabled',
    r.message && r.message.kind === 'error' && /different sizes/.test(r.message.text) && /odd-size\.png/.test(r.message.text) && r.startDisabled,
    r.message && r.message.text);
  await page.screenshot({ path: path.join(out, 'browser-train-error.png'), fullPage: true });

  // Stop and keep: a long run stopped after a few steps is calibrated and used.
  await setTrainOptions(page, { ...params, steps: 1000 });
  r = await pickTraining(page, files);
  await page.click('#train-start');
  await page.waitForFunction(() => (window.scoredd.train.lastStep || 0) >= 8 || !window.scoredd.train.running, null, { timeout: RUN_TIMEOUT });
  const rate = await trainState(page);
  report.cpu_steps_per_second = rate.stepsPerSecond;
  // The flow while it runs: loss curve, step rate, time left, the stop button.
  const shot = path.join(out, 'browser-train-running.png');
  await page.locator('#train-panel').screenshot({ path: shot });
  if (process.env.SCOREDD_SCREENSHOT_DIR) fs.copyFileSync(shot, path.join(process.env.SCOREDD_SCREENSHOT_DIR, 'browser-train-running.png'));
  await page.click('#train-stop');
  await page.waitForFunction(() => !window.scoredd.train.running, null, { timeout: RUN_TIMEOUT });
  await page.evaluate(() => window.scoredd.queue);
  let st = await trainState(page);
  check('training: stop and keep → calibrated at the step reached, in use',
    st.result && st.result.stopped && st.result.summary.step >= 8 && st.result.summary.step < 1000,
    st.result ? `stopped at step ${st.result.summary.step}; ${rate.stepsPerSecond.toFixed(2)} steps/s (batch ${params.batch})` : st.message && st.message.text);

  // Cancel in the middle: nothing kept, the page usable (detects, trains again).
  const before = await page.evaluate(() => window.scoredd.modelName);
  await page.click('#train-start');
  await page.waitForFunction(() => (window.scoredd.train.lastStep || 0) >= 2 || !window.scoredd.train.running, null, { timeout: RUN_TIMEOUT });
  await page.click('#train-cancel');
  await page.waitForFunction(() => !window.scoredd.train.running, null, { timeout: RUN_TIMEOUT });
  st = await trainState(page);
  const after = await page.evaluate(() => ({ model: window.scoredd.modelName, start: document.getElementById('train-start').disabled }));
  check('training: cancel in the middle → clear message, model unchanged',
    st.message && /cancelled at step \d+/.test(st.message.text) && after.model === before && !after.start,
    `${st.message && st.message.text} (model in use: ${after.model}; Train enabled: ${!after.start})`);
  const res = await detectSample(page, ref.sample);
  check('training: page usable after the cancel', !!res.result, res.lastError || 'detected');
  return report;
}

// Step 4: the bundled model's outline against each sample's true mask.
async function outlineIoUs(page, manifest) {
  return page.evaluate(async (samples) => {
    const s = window.scoredd;
    const out = [];
    for (const sample of samples) {
      const entry = s.results.find((r) => r.name === sample.file);
      if (!entry || !entry.result) { out.push({ file: sample.file, error: 'no result' }); continue; }
      const outline = s.outlineOf(entry.result);
      const n = entry.result.size;
      let mask = new Array(n * n).fill(false);
      if (sample.mask) {
        const blob = await (await fetch(`samples/${sample.mask}`)).blob();
        const bmp = await createImageBitmap(blob, { colorSpaceConversion: 'none' });
        const c = new OffscreenCanvas(n, n);
        const g = c.getContext('2d');
        g.imageSmoothingEnabled = false;
        g.drawImage(bmp, 0, 0, n, n);
        const d = g.getImageData(0, 0, n, n).data;
        mask = Array.from({ length: n * n }, (_, i) => d[4 * i] > 127);
      }
      let inter = 0, union = 0, flagged = 0, truth = 0;
      outline.forEach((o, i) => {
        if (o) flagged++;
        if (mask[i]) truth++;
        if (o && mask[i]) inter++;
        if (o || mask[i]) union++;
      });
      out.push({ file: sample.file, defective: !!sample.mask, flagged, truth, iou: union ? inter / union : 1,
        normalised: entry.result.normalised, score: entry.result.score });
    }
    return out;
  }, manifest.samples);
}

// --- the test --------------------------------------------------------------------------------
// On WebGPU the page times the kernel families on its first load, says which
// won, and on the next load takes the stored choice without timing again;
// maps stay equal to the CLI's with whichever family runs.
async function kernelChoice(page, first, ref) {
  const families = '(register-blocked 8x8|tiled 64x64x16)';
  const measured = new RegExp(`kernels: ${families}, measured now \\(register-blocked 8x8 \\d+ ms, tiled 64x64x16 \\d+ ms\\)`);
  check('webgpu: kernel families timed on the first load', measured.test(first.backendText), first.backendText);
  await page.reload();
  await waitIdle(page);
  const again = await lastResult(page);
  const stored = new RegExp(`kernels: ${families} \\(measured before on this adapter\\)`);
  check('webgpu: the stored kernel choice is used on the next load', stored.test(again.backendText), again.backendText);
  const p = parity(again.result && again.result.map, ref);
  check('webgpu: map after the reload equals the CLI\'s', p.ok, p.detail);
}

async function detectionPage(browser, base, label, query, ref) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1000 }, acceptDownloads: true });
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  const t0 = Date.now();
  await page.goto(`${base}/?${query}sample=${encodeURIComponent(ref.sample)}`);
  await waitIdle(page);
  const first = await lastResult(page);
  const wall = Date.now() - t0;
  if (!first.result) {
    check(`${label}: detection ran`, false, `${first.lastError || 'no result'}; console: ${logs.slice(-10).join(' | ')}`);
    await page.screenshot({ path: path.join(out, `browser-${label}-failed.png`), fullPage: true });
    await page.close();
    return null;
  }
  const kindOk = first.backend === label || (!requireWebgpu && label === 'webgpu');
  check(`${label}: runs on ${label}`, kindOk, first.backendText);
  const p = parity(first.result.map, ref);
  check(`${label}: map equals the native CLI's`, p.ok, p.detail);
  // A second run of the same image (warm: pipelines compiled, caches full),
  // with a timer on the page's thread.
  const idle = await idleGap(page);
  await startGapMonitor(page);
  const second = await detectSample(page, ref.sample);
  const gap = await stopGapMonitor(page);
  const p2 = parity(second.result && second.result.map, ref);
  check(`${label}: second run equal too`, p2.ok, p2.detail);
  checkResponsive(`${label}: page's thread during detection`, gap,
    ` during a ${second.result.ms.toFixed(0)} ms detection; idle page: ${idle.max_gap_ms.toFixed(0)} ms`);
  if (first.backend === 'webgpu') await kernelChoice(page, first, ref);
  await page.screenshot({ path: path.join(out, `browser-${label}.png`), fullPage: true });
  report[label] = {
    backend: first.backendText,
    load_to_first_map_ms: first.timings.firstMap,
    wasm_compiled_ms: first.timings.wasmReady,
    model_loaded_ms: first.timings.modelLoaded,
    first_detect_ms: first.result.ms,
    warm_detect_ms: second.result ? second.result.ms : null,
    test_wall_ms: wall,
    main_thread_during_detection: gap,
    main_thread_idle: idle,
    parity: { max_abs_diff: p.maxDiff, range: p.range, relative: p.rel },
    score: first.result.score, normalised: first.result.normalised, defect: first.result.defect,
  };
  console.log(`${label}: first map ${first.timings.firstMap.toFixed(0)} ms after navigation ` +
    `(detection ${first.result.ms.toFixed(0)} ms, warm ${second.result ? second.result.ms.toFixed(0) : '?'} ms)`);
  return { page, logs };
}

async function detectionBadInput(page, ref) {
  await page.setInputFiles('#image-file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not an image\n') });
  let t = await errorText(page);
  check('non-image file: visible error', /not an image/.test(t), t);
  await page.setInputFiles('#model-file', { name: 'broken.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from('garbage, not a model at all') });
  t = await errorText(page);
  check('corrupt model file: visible error', /Could not load the model/.test(t) && /broken\.safetensors/.test(t), t);
  await page.setInputFiles('#model-file', { name: 'other.safetensors', mimeType: 'application/octet-stream', buffer: foreignSafetensors() });
  t = await errorText(page);
  check('foreign safetensors file: visible error', /scoredd/.test(t), t);
  await page.setInputFiles('#image-file', { name: 'huge.png', mimeType: 'image/png', buffer: grayPng(5000, 5000) });
  t = await errorText(page);
  check('5000×5000 image: visible error', /far larger/.test(t), t);
  await page.screenshot({ path: path.join(out, 'browser-error.png'), fullPage: true });
  // Still usable: the bundled model is still loaded and detects.
  const info = await page.textContent('#model-info');
  check('model kept after bad model files', /default\.safetensors/.test(info), info);
  const after = await detectSample(page, ref.sample);
  const p3 = parity(after.result && after.result.map, ref);
  const hidden = await page.$eval('#error', (e) => e.hidden);
  check('page usable after bad input', p3.ok && hidden, `${p3.detail}; error box hidden: ${hidden}`);
}

async function batchAndSlider(page, manifest) {
  // Batch: every sample at once, a list of results; the threshold slider
  // changes the verdicts without computing anything again.
  await page.setInputFiles('#image-file', manifest.samples.map((s) => path.join(dist, 'samples', s.file)));
  await waitIdle(page);
  const items = await page.$$eval('#batch-list li', (lis) => lis.map((li) => li.textContent));
  check('batch: one result per image', items.length === manifest.samples.length && items.every((t) => /DEFECT|OK/.test(t)), items.join(' | '));
  const before = await page.evaluate(() => ({ n: window.scoredd.detections, summary: document.getElementById('batch-summary').textContent, workers: window.scoredd.pool.workers.length }));
  const defectsAt = async (v) => {
    await page.$eval('#threshold', (el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }, String(v));
    const shown = await page.$$eval('#batch-list .tag.defect', (t) => t.length);
    const want = await page.evaluate((v) => window.scoredd.results.filter((r) => r.result && r.result.normalised >= v).length, v);
    return { shown, want };
  };
  const low = await defectsAt(0.01), high = await defectsAt(0.99), mid = await defectsAt(0.5);
  const after = await page.evaluate(() => window.scoredd.detections);
  check('threshold slider: verdicts move, nothing recomputed',
    [low, high, mid].every((d) => d.shown === d.want) && low.shown >= mid.shown && mid.shown >= high.shown && after === before.n,
    `defective at 0.01 / 0.5 / 0.99: ${low.shown} / ${mid.shown} / ${high.shown}; maps computed while sliding: ${after - before.n}; ${before.summary}`);
  report.batch = { items, summary: before.summary, workers: before.workers, hardware_concurrency: await page.evaluate(() => navigator.hardwareConcurrency) };
  await page.screenshot({ path: path.join(out, 'browser-batch.png'), fullPage: true });
  const shot = path.join(out, 'browser-result.png');
  await page.locator('#result-panel').screenshot({ path: shot });
  if (process.env.SCOREDD_SCREENSHOT_DIR) fs.copyFileSync(shot, path.join(process.env.SCOREDD_SCREENSHOT_DIR, 'browser-result.png'));
  // Step 4 on the same results, the slider back at the model's threshold.
  const ious = await outlineIoUs(page, manifest);
  for (const r of ious) {
    if (r.error) check(`outline of ${r.file}`, false, r.error);
    else if (r.defective) {
      check(`outline of ${r.file} overlaps its defect (IoU ≥ ${MIN_IOU})`, r.iou >= MIN_IOU,
        `IoU ${r.iou.toFixed(3)}: ${r.flagged} px outlined, ${r.truth} px of defect; score ${r.normalised.toFixed(3)}`);
    } else {
      check(`nothing outlined on ${r.file}`, r.flagged === 0, `${r.flagged} px outlined; score ${r.normalised.toFixed(3)}`);
    }
  }
  report.outlines = ious;
}

// Cancelling a running batch: the workers stop at once, a plain message says
// how many were done, and the page detects again afterwards.
async function cancelDetection(page, params, ref) {
  const files = params.files.map((f) => path.join(dist, params.dir, f));
  await page.setInputFiles('#image-file', files);
  await page.waitForFunction(() => window.scoredd.busy, null, { timeout: RUN_TIMEOUT });
  await page.click('#cancel');
  await waitIdle(page);
  const st = await page.evaluate(() => ({ status: document.getElementById('status').textContent, results: window.scoredd.results.length,
    done: window.scoredd.results.filter((r) => r.result).length, cancelButton: document.getElementById('cancel').hidden }));
  check('detection: cancel in the middle of a batch → plain message', /^Cancelled: \d+ of \d+ images done/.test(st.status) && st.done < files.length && st.cancelButton,
    `${st.status} (${st.done} of ${st.results} maps kept)`);
  const res = await detectSample(page, ref.sample);
  const p = parity(res.result && res.result.map, ref);
  check('detection: page usable after the cancel (fresh workers)', p.ok, p.detail);
}

// Every control is reachable with Tab, and a drop zone opens its file picker
// with Enter (a hidden file input is not focusable; its button is).
async function keyboard(page) {
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.focus('body');
  const seen = [];
  for (let i = 0; i < 60; i++) {
    await page.keyboard.press('Tab');
    seen.push(await page.evaluate(() => {
      const e = document.activeElement;
      return e ? e.id || (e.dataset && e.dataset.sample) || e.tagName.toLowerCase() : '';
    }));
  }
  const want = ['model-drop', 'model-file-button', 'model-default', 'force-cpu', 'image-drop', 'image-file-button',
    'stripes-good-000.png', 'threshold', 'show-map', 'show-mask', 'train-drop', 'train-files-button', 'train-folder-button',
    'train-config', 'train-steps', 'train-batch', 'train-lr', 'train-seed'];
  const missing = want.filter((id) => !seen.includes(id));
  check('keyboard: every control is reached with Tab', missing.length === 0,
    missing.length ? `not reached: ${missing.join(', ')}` : `${want.length} controls reached`);
  await page.focus('#image-drop');
  const waiting = page.waitForEvent('filechooser', { timeout: 10_000 }).catch(() => null);
  // Playwright starts intercepting file choosers asynchronously: let it.
  await page.waitForTimeout(500);
  await page.keyboard.press('Enter');
  const chooser = await waiting;
  check('keyboard: Enter on a drop zone opens its file picker', !!chooser, chooser ? 'file chooser opened' : 'no file chooser');
  if (chooser) await chooser.setFiles([]);
}

// The CLI's trained model, loaded into the page as a user would: its map on the sample.
async function cliModelInPage(page, params, ref) {
  await page.setInputFiles('#model-file', params.native);
  await waitIdle(page);
  const info = await page.textContent('#model-info');
  check("the CLI's model file loads in the page", /native-trained\.safetensors/.test(info), info);
  const res = await detectSample(page, ref.sample);
  fs.writeFileSync(path.join(out, 'cli-model-in-page-map.json'), JSON.stringify({ sample: ref.sample, map: res.result ? res.result.map : [] }));
}

async function main() {
  if (!fs.existsSync(path.join(dist, 'index.html'))) throw new Error(`${dist} is not built: run web/build.sh`);
  if (!fs.existsSync(refPath)) throw new Error(`no reference map at ${refPath} (tests/browser.rs writes it)`);
  if (!fs.existsSync(paramsPath)) throw new Error(`no training parameters at ${paramsPath} (tests/browser.rs writes them)`);
  const ref = JSON.parse(fs.readFileSync(refPath, 'utf8'));
  const params = JSON.parse(fs.readFileSync(paramsPath, 'utf8'));
  const manifest = JSON.parse(fs.readFileSync(path.join(dist, 'samples', 'samples.json'), 'utf8'));
  const server = await serve(dist);
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-gpu-sandbox', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  report.browser = browser.version();
  report.train_params = params;
  console.log(`chromium ${report.browser}, serving ${dist} at ${base}, reference ${refPath} (${ref.sample})`);
  try {
    for (const [label, query] of [['webgpu', ''], ['cpu', 'backend=cpu&']]) {
      const opened = await detectionPage(browser, base, label, query, ref);
      if (!opened) continue;
      const { page, logs } = opened;
      if (label === 'webgpu') {
        await detectionBadInput(page, ref);
        report.train_webgpu = await trainForParity(page, label, params, ref);
        // Phone-sized screen: everything fits the width.
        await page.setViewportSize({ width: 390, height: 844 });
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        check('phone-sized screen: no horizontal scrolling', overflow <= 1, `${overflow} px too wide`);
        await page.screenshot({ path: path.join(out, 'browser-phone.png'), fullPage: true });
      }
      if (label === 'cpu') {
        await batchAndSlider(page, manifest);
        await keyboard(page);
        await cancelDetection(page, params, ref);
        await cliModelInPage(page, params, ref);
        report.train_bad_input = await trainingBadInput(page, params, ref);
        report.train_cpu = await trainForParity(page, label, params, ref);
        const shot = path.join(out, 'browser-train.png');
        await page.locator('#train-panel').screenshot({ path: shot });
        if (process.env.SCOREDD_SCREENSHOT_DIR) fs.copyFileSync(shot, path.join(process.env.SCOREDD_SCREENSHOT_DIR, 'browser-train.png'));
        await page.screenshot({ path: path.join(out, 'browser-cpu-trained.png'), fullPage: true });
      }
      if (logs.some((l) => l.startsWith('pageerror'))) {
        check(`${label}: no uncaught page errors`, false, logs.filter((l) => l.startsWith('pageerror')).join(' | '));
      }
      fs.writeFileSync(path.join(out, `browser-${label}-console.log`), logs.join('\n') + '\n');
      await page.close();
    }
  } finally {
    await browser.close();
    server.close();
  }
  const build = path.join(dist, 'build.json');
  if (fs.existsSync(build)) report.build = JSON.parse(fs.readFileSync(build, 'utf8'));
  fs.writeFileSync(path.join(out, 'browser-results.json'), JSON.stringify(report, null, 2) + '\n');
  console.log(`results and screenshots in ${out}`);
}

main().then(() => {
  if (failures.length) {
    console.error(`${failures.length} check(s) failed:\n  ${failures.join('\n  ')}`);
    process.exit(1);
  }
}, (e) => {
  console.error(`browser test failed: ${e.stack || e}`);
  process.exit(1);
});
