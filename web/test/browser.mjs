// Browser test of the page in web/dist, in real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core; never a downloaded browser).
//
//   node web/test/browser.mjs [OUT_DIR]
//
// 1. Serves web/dist on a free local port (a small node server, below).
// 2. Loads the page with ?sample=… : the bundled model, then detection on a
//    bundled sample on WebGPU (SwiftShader in a GPU-less machine); compares the
//    map with the native reference map (OUT_DIR/reference.json, written by
//    tests/browser.rs): max |diff| ≤ 1e-3 × (max − min) of the reference.
// 3. The same forced onto the CPU-wasm backend (?backend=cpu).
// 4. Bad input: a non-image, a corrupt model, a file that is not a scoredd
//    model and a 5000×5000 image each give a visible, plain error, and the page
//    still works afterwards.
// 5. A phone-sized viewport: no horizontal scrolling.
// Screenshots and browser-results.json go to OUT_DIR (default target/browser-test,
// or $SCOREDD_BROWSER_OUT). Exit status 0 = all passed.
//
// Environment: CHROMIUM (default /usr/bin/chromium), SCOREDD_REFERENCE (default
// OUT_DIR/reference.json), SCOREDD_REQUIRE_WEBGPU=0 to accept a CPU fallback
// where WebGPU was asked for (default: WebGPU is required).

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const web = path.resolve(here, '..');
const dist = path.join(web, 'dist');
const out = path.resolve(process.argv[2] || process.env.SCOREDD_BROWSER_OUT || path.join(web, '..', 'target', 'browser-test'));
const refPath = process.env.SCOREDD_REFERENCE || path.join(out, 'reference.json');
const requireWebgpu = process.env.SCOREDD_REQUIRE_WEBGPU !== '0';
const TOL = 1e-3;
const RUN_TIMEOUT = 300_000;

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

// --- the test --------------------------------------------------------------------------------
async function main() {
  if (!fs.existsSync(path.join(dist, 'index.html'))) throw new Error(`${dist} is not built: run web/build.sh`);
  if (!fs.existsSync(refPath)) throw new Error(`no reference map at ${refPath} (tests/browser.rs writes it)`);
  const ref = JSON.parse(fs.readFileSync(refPath, 'utf8'));
  const server = await serve(dist);
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-gpu-sandbox', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  report.browser = browser.version();
  console.log(`chromium ${report.browser}, serving ${dist} at ${base}, reference ${refPath} (${ref.sample})`);
  try {
    for (const [label, query] of [['webgpu', ''], ['cpu', 'backend=cpu&']]) {
      const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
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
        continue;
      }
      const wantKind = label;
      const kindOk = first.backend === wantKind || (!requireWebgpu && label === 'webgpu');
      check(`${label}: runs on ${wantKind}`, kindOk, first.backendText);
      const p = parity(first.result.map, ref);
      check(`${label}: map equals the native CLI's`, p.ok, p.detail);
      // A second run of the same image: warm timings (pipelines compiled, caches full).
      await page.click(`button[data-sample="${ref.sample}"]`);
      await waitIdle(page);
      const second = await lastResult(page);
      const p2 = parity(second.result && second.result.map, ref);
      check(`${label}: second run equal too`, p2.ok, p2.detail);
      await page.screenshot({ path: path.join(out, `browser-${label}.png`), fullPage: true });
      report[label] = {
        backend: first.backendText,
        load_to_first_map_ms: first.timings.firstMap,
        wasm_ready_ms: first.timings.wasmReady,
        model_loaded_ms: first.timings.modelLoaded,
        first_detect_ms: first.result.ms,
        warm_detect_ms: second.result ? second.result.ms : null,
        test_wall_ms: wall,
        parity: { max_abs_diff: p.maxDiff, range: p.range, relative: p.rel },
        score: first.result.score, normalised: first.result.normalised, defect: first.result.defect,
      };
      console.log(`${label}: first map ${first.timings.firstMap.toFixed(0)} ms after navigation ` +
        `(detection ${first.result.ms.toFixed(0)} ms, warm ${second.result ? second.result.ms.toFixed(0) : '?'} ms)`);

      if (label === 'webgpu') {
        // Bad input: each gives a visible plain message; the page keeps working.
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
        await page.click(`button[data-sample="${ref.sample}"]`);
        await waitIdle(page);
        const after = await lastResult(page);
        const p3 = parity(after.result && after.result.map, ref);
        const hidden = await page.$eval('#error', (e) => e.hidden);
        check('page usable after bad input', p3.ok && hidden, `${p3.detail}; error box hidden: ${hidden}`);

        // Phone-sized screen: everything fits the width.
        await page.setViewportSize({ width: 390, height: 844 });
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        check('phone-sized screen: no horizontal scrolling', overflow <= 1, `${overflow} px too wide`);
        await page.screenshot({ path: path.join(out, 'browser-phone.png'), fullPage: true });
      }
      if (label === 'cpu') {
        // Batch: every sample at once, a list of results; the threshold slider
        // changes the verdicts without computing anything again.
        const manifest = JSON.parse(fs.readFileSync(path.join(dist, 'samples', 'samples.json'), 'utf8'));
        await page.setInputFiles('#image-file', manifest.samples.map((s) => path.join(dist, 'samples', s.file)));
        await waitIdle(page);
        const items = await page.$$eval('#batch-list li', (lis) => lis.map((li) => li.textContent));
        check('batch: one result per image', items.length === manifest.samples.length && !items.some((t) => /failed|:/.test(t) && !/DEFECT|OK/.test(t)), items.join(' | '));
        const before = await page.evaluate(() => ({ n: window.scoredd.detections, summary: document.getElementById('batch-summary').textContent }));
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
        report.batch = { items, summary: before.summary };
        await page.screenshot({ path: path.join(out, 'browser-batch.png'), fullPage: true });
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
