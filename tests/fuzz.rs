//! Hostile inputs, fuzzed (issue 12). A deterministic, seeded byte mutator
//! feeds mutated model files, images, masks and JSON configs through the
//! library's loaders, with hand-made nasties beside them (a safetensors header
//! claiming [2^40, 2^40] tensors, a PNG claiming 100000×100000 pixels, absurd
//! configs …). Every call must return Ok or a typed `scoredd::Error` whose
//! message names the file it was given: never a panic, never an abort, never a
//! huge allocation (each case must finish within [`SLOW`]).
//!
//! A failure names its case and seed; the same seed gives the same input.
//! `SCOREDD_FUZZ_TRACE=1` prints every case before it runs (to find one that
//! aborts the process); `SCOREDD_FUZZ_SCALE=N` runs N times as many mutated
//! inputs (new seeds) for a longer hunt.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::ImageFormat;
use serde_json::{json, Value};

use scoredd::data::{self, ImageSpec};
use scoredd::model_file::{Calibration, DetectionSettings, ModelFile, ModelMeta, FORMAT_VERSION};
use scoredd::nn::unet::{TimeEmbedding, UNet, UNetConfig};
use scoredd::sde::SdeConfig;
use scoredd::Error;

/// A case slower than this counts as a failure (it allocated or looped on a claim).
const SLOW: Duration = Duration::from_secs(2);
/// The issue's floor on the number of inputs.
const MIN_CASES: usize = 10_000;

// ---------------------------------------------------------------------------
// Random numbers and mutation

/// xorshift64*, seeded through splitmix64: tiny and deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that tend to matter: zero, sign and high bits, JSON punctuation.
const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff09-e.\"{}[],:\\";
/// Little-endian words for length and size fields.
const WORDS: &[u64] = &[0, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 40, u64::MAX, 1 << 63];
/// Replacements for a run of ASCII digits (sizes and counts in JSON).
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e999",
    "99999999999999999999",
    "1099511627776",
    "0.5",
];

/// 1–4 random edits; positions fall in `..focus` (or anywhere past it, 1 in 8).
fn mutate(rng: &mut Rng, input: &[u8], focus: usize) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let span = if rng.below(8) == 0 {
            b.len()
        } else {
            focus.min(b.len())
        };
        let at = rng.below(span);
        edit(rng, &mut b, at);
    }
    b
}

/// One edit at `at`.
fn edit(rng: &mut Rng, b: &mut Vec<u8>, at: usize) {
    let len = b.len();
    match rng.below(9) {
        0 if at < len => b[at] ^= 1 << rng.below(8),
        1 if at < len => b[at] = rng.next() as u8,
        2 if at < len => b[at] = INTERESTING[rng.below(INTERESTING.len())],
        3 if at + 8 <= len => {
            let w = WORDS[rng.below(WORDS.len())].to_le_bytes();
            b[at..at + 8].copy_from_slice(&w);
        }
        4 => {
            let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            b.splice(at..at, extra);
        }
        5 => drop(b.drain(at..(at + 1 + rng.below(64)).min(len))),
        6 if at < len => {
            let chunk = b[at..(at + 1 + rng.below(64)).min(len)].to_vec();
            let to = rng.below(len);
            b.splice(to..to, chunk);
        }
        7 => b.truncate(at),
        _ => replace_number(rng, b, at),
    }
}

/// Replaces the first run of ASCII digits at or after `at` with a hostile number.
fn replace_number(rng: &mut Rng, b: &mut Vec<u8>, at: usize) {
    let Some(start) = (at..b.len()).find(|&i| b[i].is_ascii_digit()) else {
        return;
    };
    let end = (start..b.len())
        .find(|&i| !b[i].is_ascii_digit())
        .unwrap_or(b.len());
    let n = NUMBERS[rng.below(NUMBERS.len())].bytes();
    b.splice(start..end, n);
}

/// Hostile JSON values: wrong types, zero, negative, huge, 65 levels of ch_mult.
fn hostile_value(rng: &mut Rng) -> Value {
    let many_levels = Value::from(vec![1; 65]);
    let pick = [
        json!(0),
        json!(1),
        json!(-1),
        json!(3),
        json!(1u64 << 30),
        json!(1u64 << 40),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(-1e308),
        json!(1e39),
        json!(0.5),
        json!(null),
        json!(true),
        json!(""),
        json!("x"),
        json!([]),
        json!({}),
        json!([0]),
        json!([1u64 << 62]),
        many_levels,
    ];
    pick[rng.below(pick.len())].clone()
}

/// Replaces (or, 1 in 8, removes) one random part of a JSON value.
fn mutate_value(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.below(4) != 0 => {
            let k = m.keys().nth(rng.below(m.len())).cloned().unwrap();
            if rng.below(8) == 0 {
                m.remove(&k);
            } else {
                mutate_value(rng, m.get_mut(&k).unwrap());
            }
        }
        Value::Array(a) if !a.is_empty() && rng.below(4) != 0 => {
            let i = rng.below(a.len());
            mutate_value(rng, &mut a[i]);
        }
        _ => *v = hostile_value(rng),
    }
}

// ---------------------------------------------------------------------------
// The harness

/// What one call gave.
enum Outcome {
    Loaded,
    Refused(Error),
    Panicked,
}

/// Counts cases per kind and collects failures: a panic, a slow case, or an
/// error whose message does not name the file it was given.
#[derive(Default)]
struct Fuzz {
    counts: BTreeMap<&'static str, usize>,
    /// Cases per kind that loaded (mutations that kept the input valid).
    loaded: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
    trace: bool,
}

impl Fuzz {
    fn case<T>(
        &mut self,
        kind: &'static str,
        case: &str,
        name: &str,
        f: impl FnOnce() -> scoredd::Result<T>,
    ) -> Outcome {
        if self.trace {
            eprintln!("[fuzz] {kind}: {case}");
        }
        *self.counts.entry(kind).or_default() += 1;
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(f));
        if t.elapsed() > SLOW {
            self.fail(kind, case, format!("took {:?}", t.elapsed()));
        }
        match r {
            Ok(Ok(_)) => {
                *self.loaded.entry(kind).or_default() += 1;
                Outcome::Loaded
            }
            Ok(Err(e)) => {
                if !e.to_string().contains(name) {
                    self.fail(kind, case, format!("error does not name {name}: {e}"));
                }
                Outcome::Refused(e)
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                self.fail(kind, case, format!("panicked: {msg}"));
                Outcome::Panicked
            }
        }
    }

    /// A case that must be refused, with every one of `words` in the message.
    fn refuse<T>(
        &mut self,
        kind: &'static str,
        case: &str,
        name: &str,
        words: &[&str],
        f: impl FnOnce() -> scoredd::Result<T>,
    ) {
        match self.case(kind, case, name, f) {
            Outcome::Loaded => self.fail(kind, case, "loaded, but must be refused".into()),
            Outcome::Refused(e) => {
                let m = e.to_string();
                if let Some(w) = words.iter().find(|w| !m.contains(*w)) {
                    self.fail(kind, case, format!("error does not say {w:?}: {m}"));
                }
            }
            Outcome::Panicked => {}
        }
    }

    fn fail(&mut self, kind: &str, case: &str, why: String) {
        self.failures.push(format!("{kind} / {case}: {why}"));
    }

    fn total(&self) -> usize {
        self.counts.values().sum()
    }
}

/// A folder under the system temp dir, removed on drop (also on failure).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("scoredd-fuzz-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

// ---------------------------------------------------------------------------
// Model files

/// 8 px, nf 4, one level with attention: every kind of layer, a few KB.
fn tiny_config() -> UNetConfig {
    UNetConfig {
        image_size: 8,
        nf: 4,
        ch_mult: vec![1],
        num_res_blocks: 1,
        attn_resolutions: vec![8],
        ..UNetConfig::tiny(1, TimeEmbedding::Fourier)
    }
}

/// A valid model file with metadata, calibration and one extra tensor.
fn model_bytes() -> Vec<u8> {
    let model = tiny_config();
    let weights = UNet::new(model.clone()).unwrap().init_values(1);
    let meta = ModelMeta {
        format: FORMAT_VERSION,
        model,
        sde: SdeConfig::ve(50.0),
        step: 7,
        detection: DetectionSettings::default(),
        calibration: Some(Calibration {
            threshold: 1.0,
            low: 0.5,
            high: 2.0,
            quantile: 0.99,
            normals: 10,
            false_alarm_bound: None,
            map: None,
            tiles: None,
        }),
        selection: None,
        training: None,
    };
    let extra = BTreeMap::from([("ema.x".to_string(), (vec![2, 3], vec![0.5; 6]))]);
    let file = ModelFile {
        meta,
        weights,
        extra,
    };
    let bytes = file.to_bytes().unwrap();
    assert_eq!(ModelFile::from_bytes(&bytes, "seed").unwrap(), file);
    bytes
}

/// Where the header ends (8 + its declared length).
fn header_end(b: &[u8]) -> usize {
    8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
}

/// The header as JSON and the data bytes.
fn split(b: &[u8]) -> (Value, &[u8]) {
    let end = header_end(b);
    (serde_json::from_slice(&b[8..end]).unwrap(), &b[end..])
}

/// A safetensors file from header text and data.
fn safetensors(header: impl AsRef<[u8]>, data: &[u8]) -> Vec<u8> {
    let header = header.as_ref();
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(data);
    b
}

/// `valid` with its header changed by `f`.
fn with_header(valid: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let (mut h, data) = split(valid);
    f(&mut h);
    safetensors(h.to_string(), data)
}

/// `valid` with its scoredd metadata JSON changed by `f`.
fn with_meta(valid: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    with_header(valid, |h| {
        let slot = &mut h["__metadata__"]["scoredd"];
        let mut meta: Value = serde_json::from_str(slot.as_str().unwrap()).unwrap();
        f(&mut meta);
        *slot = Value::String(meta.to_string());
    })
}

/// Byte mutations of valid files through `ModelFile::from_bytes`, mostly in the header.
fn fuzz_model_bytes(fz: &mut Fuzz, kind: &'static str, valid: &[u8], n: u64) {
    let focus = header_end(valid);
    for seed in 0..n {
        let b = mutate(&mut Rng::new(seed), valid, focus);
        let name = format!("{kind}-{seed}.safetensors");
        fz.case(kind, &format!("seed {seed}"), &name, || {
            ModelFile::from_bytes(&b, &name)
        });
    }
}

/// Structured mutations of the metadata JSON: every field gets hostile values.
fn fuzz_model_meta(fz: &mut Fuzz, valid: &[u8], n: u64) {
    for seed in 0..n {
        let mut rng = Rng::new(seed ^ 0x4D45_5441);
        let b = with_meta(valid, |m| {
            for _ in 0..1 + rng.below(3) {
                mutate_value(&mut rng, m);
            }
        });
        let name = format!("meta-{seed}.safetensors");
        fz.case("model metadata", &format!("seed {seed}"), &name, || {
            ModelFile::from_bytes(&b, &name)
        });
    }
}

/// Mutated files through `ModelFile::load`, plus a missing file and a folder.
fn fuzz_model_load(fz: &mut Fuzz, valid: &[u8], n: u64) {
    let dir = TempDir::new("model");
    for seed in 0..n {
        let b = mutate(&mut Rng::new(seed ^ 0x4C4F_4144), valid, header_end(valid));
        let path = dir.0.join(format!("load-{seed}.safetensors"));
        std::fs::write(&path, &b).unwrap();
        fz.case("model load", &format!("seed {seed}"), &shown(&path), || {
            ModelFile::load(&path)
        });
        let _ = std::fs::remove_file(&path);
    }
    let missing = dir.0.join("missing.safetensors");
    fz.refuse("model load", "missing", &shown(&missing), &[], || {
        ModelFile::load(&missing)
    });
    fz.refuse("model load", "a folder", &shown(&dir.0), &[], || {
        ModelFile::load(&dir.0)
    });
}

/// Hand-made broken files: lengths, huge shapes, bad JSON, dtypes, NaN,
/// truncation, absurd configs. All refused as model-file errors.
fn handmade_model_files(fz: &mut Fuzz, valid: &[u8]) {
    let mut cases: Vec<(String, Vec<u8>)> = broken_layouts()
        .into_iter()
        .chain(broken_contents(valid))
        .map(|(case, b)| (case.to_string(), b))
        .collect();
    let cuts = (0..valid.len()).step_by(valid.len() / 40 + 1);
    for k in cuts.chain([valid.len() - 1]) {
        cases.push((format!("truncated to {k} bytes"), valid[..k].to_vec()));
    }
    for (what, ptr, v) in absurd_configs() {
        let b = with_meta(valid, |m| {
            *m.pointer_mut(&format!("/model{ptr}")).unwrap() = v
        });
        cases.push((format!("config {what}"), b));
    }
    for (case, b) in cases {
        let name = "handmade.safetensors";
        fz.refuse("model handmade", &case, name, &["model file"], || {
            ModelFile::from_bytes(&b, name)
        });
    }
}

/// Shapes of 2^40 and 2^80 elements, and the byte range the first would need.
const SHAPE_2_40: &str = "[1048576,1048576]";
const BYTES_2_40: &str = "[0,4398046511104]";
const SHAPE_2_80: &str = "[1099511627776,1099511627776]";

/// Files broken in their layout: lengths, huge shapes, a header that is not JSON.
fn broken_layouts() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", vec![]),
        ("3 bytes", vec![1, 2, 3]),
        ("header length u64::MAX", huge_length(u64::MAX)),
        ("header length 2^40", huge_length(1 << 40)),
        ("header length past the end", huge_length(1000)),
        ("shape [2^40, 2^40]", huge_tensor(SHAPE_2_80, "[0,16]")),
        (
            "shape [2^20, 2^20], offsets to match",
            huge_tensor(SHAPE_2_40, BYTES_2_40),
        ),
        (
            "shape overflowing usize",
            huge_tensor("[18446744073709551615,4]", "[0,16]"),
        ),
        ("invalid header JSON", safetensors("{not json", b"")),
        ("header not UTF-8", safetensors(b"{\"\xff\":1}", b"")),
        ("header only", safetensors("{}", b"")),
    ]
}

/// A valid file with wrong contents: metadata, dtypes, names, shapes, NaN.
fn broken_contents(valid: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let data_len = valid.len() - header_end(valid);
    let meta_text = |m: &str| with_header(valid, |h| h["__metadata__"]["scoredd"] = json!(m));
    let header = |f: fn(&mut Value)| with_header(valid, f);
    vec![
        (
            "no metadata",
            header(|h| drop(h.as_object_mut().unwrap().remove("__metadata__"))),
        ),
        ("metadata not JSON", meta_text("{")),
        ("metadata a number", meta_text("42")),
        (
            "format version 2",
            with_meta(valid, |m| m["format"] = json!(2)),
        ),
        (
            "SDE sigma_min < 0",
            with_meta(valid, |m| m["sde"]["sigma_min"] = json!(-1.0)),
        ),
        ("dtype I32", header(|h| retype(h, "I32"))),
        ("dtype F16", header(|h| retype(h, "F16"))),
        ("dtype F64", header(|h| retype(h, "F64"))),
        ("dtype unknown", header(|h| retype(h, "Q4"))),
        ("renamed tensor", header(rename_param)),
        ("reshaped tensor", header(reshape_bias)),
        ("NaN weight", poison(valid, 0, f32::NAN)),
        (
            "Inf in the last tensor",
            poison(valid, data_len - 4, f32::INFINITY),
        ),
    ]
}

/// Eight bytes of header length and a little JSON.
fn huge_length(n: u64) -> Vec<u8> {
    let mut b = n.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    b
}

/// One F32 tensor with the given shape and offsets, and 16 bytes of data.
fn huge_tensor(shape: &str, offsets: &str) -> Vec<u8> {
    let h = format!(r#"{{"w":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}"#);
    safetensors(&h, &[0; 16])
}

/// Sets every tensor's dtype.
fn retype(h: &mut Value, dtype: &str) {
    for (k, v) in h.as_object_mut().unwrap() {
        if k != "__metadata__" {
            v["dtype"] = json!(dtype);
        }
    }
}

/// Renames the first model parameter (so it goes missing).
fn rename_param(h: &mut Value) {
    let m = h.as_object_mut().unwrap();
    let k = m.keys().find(|k| k.ends_with(".weight")).cloned().unwrap();
    let v = m.remove(&k).unwrap();
    m.insert(format!("{k}.renamed"), v);
}

/// Gives a bias of shape [n] the shape [1, n]: same bytes, wrong shape.
fn reshape_bias(h: &mut Value) {
    let (_, v) = h
        .as_object_mut()
        .unwrap()
        .iter_mut()
        .find(|(k, _)| k.ends_with(".bias"))
        .unwrap();
    let n = v["shape"][0].clone();
    v["shape"] = json!([1, n]);
}

/// `valid` with the f32 at data offset `at` set to `x`.
fn poison(valid: &[u8], at: usize, x: f32) -> Vec<u8> {
    let mut b = valid.to_vec();
    let p = header_end(valid) + at;
    b[p..p + 4].copy_from_slice(&x.to_le_bytes());
    b
}

// ---------------------------------------------------------------------------
// JSON configs

/// Absurd U-net configs: (what, JSON pointer into the config, value).
fn absurd_configs() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("nf 0", "/nf", json!(0)),
        ("nf 3", "/nf", json!(3)),
        ("nf 2^40", "/nf", json!(1u64 << 40)),
        ("nf u64::MAX", "/nf", json!(u64::MAX)),
        ("nf 8192 (too many parameters)", "/nf", json!(8192)),
        ("nf -4", "/nf", json!(-4)),
        ("image_size 0", "/image_size", json!(0)),
        ("image_size 1<<30", "/image_size", json!(1u64 << 30)),
        ("image_size 2^62", "/image_size", json!(1u64 << 62)),
        ("image_size -1", "/image_size", json!(-1)),
        ("channels 0", "/channels", json!(0)),
        ("channels 2", "/channels", json!(2)),
        ("channels 2^40", "/channels", json!(1u64 << 40)),
        ("ch_mult []", "/ch_mult", json!([])),
        ("ch_mult [0]", "/ch_mult", json!([0])),
        ("ch_mult [2^62]", "/ch_mult", json!([1u64 << 62])),
        ("ch_mult 13 levels", "/ch_mult", json!(vec![1; 13])),
        ("ch_mult 65 levels", "/ch_mult", json!(vec![1; 65])),
        ("num_res_blocks 0", "/num_res_blocks", json!(0)),
        ("num_res_blocks 2^40", "/num_res_blocks", json!(1u64 << 40)),
        ("dropout 1.5", "/dropout", json!(1.5)),
        ("dropout -1", "/dropout", json!(-1)),
        (
            "fourier_scale 1e39 (inf in f32)",
            "/fourier_scale",
            json!(1e39),
        ),
        ("embedding unknown", "/embedding", json!("cosine")),
        ("resample unknown", "/resample", json!("bicubic")),
    ]
}

/// `UNetConfig::from_json`, and when it accepts, building the network.
fn load_config(bytes: &[u8], name: &str) -> scoredd::Result<()> {
    let cfg = UNetConfig::from_json(bytes, name)?;
    // Not a loader error if the network is refused (the parameter limit), but no panic.
    let _ = UNet::new(cfg);
    Ok(())
}

/// Byte and value mutations of valid configs through `UNetConfig::from_json`.
fn fuzz_configs(fz: &mut Fuzz, n: u64) {
    let seeds = [
        serde_json::to_value(tiny_config()).unwrap(),
        serde_json::to_value(UNetConfig::small(3, TimeEmbedding::Sinusoidal)).unwrap(),
    ];
    for seed in 0..n {
        let mut rng = Rng::new(seed ^ 0x434F_4E46);
        let mut v = seeds[seed as usize % 2].clone();
        let b = if seed % 2 == 0 {
            let text = serde_json::to_string_pretty(&v).unwrap();
            mutate(&mut rng, text.as_bytes(), text.len())
        } else {
            mutate_value(&mut rng, &mut v);
            v.to_string().into_bytes()
        };
        let name = format!("config-{seed}.json");
        fz.case("config JSON", &format!("seed {seed}"), &name, || {
            load_config(&b, &name)
        });
    }
}

/// Absurd values, and not JSON at all: all refused, naming the file.
fn handmade_configs(fz: &mut Fuzz) {
    let valid = serde_json::to_value(tiny_config()).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("not UTF-8".into(), vec![0xFF, 0xFE, b'{']),
        ("an array".into(), b"[1,2,3]".to_vec()),
        ("nesting 10000 deep".into(), "[".repeat(10_000).into_bytes()),
        ("missing nf".into(), {
            let mut v = valid.clone();
            v.as_object_mut().unwrap().remove("nf");
            v.to_string().into_bytes()
        }),
    ];
    for (what, ptr, value) in absurd_configs() {
        let mut v = valid.clone();
        *v.pointer_mut(ptr).unwrap() = value;
        cases.push((what.into(), v.to_string().into_bytes()));
    }
    for (case, b) in cases {
        let name = "handmade-config.json";
        fz.refuse("config handmade", &case, name, &[], || {
            UNetConfig::from_json(&b, name).and_then(|c| UNet::new(c).map(drop))
        });
    }
}

// ---------------------------------------------------------------------------
// Images

/// A 16×16 test pattern, encoded.
fn encoded(format: ImageFormat, gray16: bool) -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 16, |x, y| {
        image::Rgb([(x * 16) as u8, (y * 16) as u8, ((x ^ y) * 16) as u8])
    });
    let img = if gray16 {
        image::DynamicImage::ImageLuma16(image::DynamicImage::ImageRgb8(img).to_luma16())
    } else {
        image::DynamicImage::ImageRgb8(img)
    };
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// CRC-32 (IEEE), as PNG chunks use.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Recomputes every complete chunk's CRC, so mutations reach past the CRC check.
fn fix_png_crcs(b: &mut [u8]) {
    let mut i = 8;
    while i + 12 <= b.len() {
        let n = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        let Some(end) = (i + 8).checked_add(n).filter(|&e| e + 4 <= b.len()) else {
            return;
        };
        let crc = crc32(&b[i + 4..end]).to_be_bytes();
        b[end..end + 4].copy_from_slice(&crc);
        i = end + 4;
    }
}

/// One PNG chunk with its length and CRC.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(&body);
    c.extend_from_slice(&crc32(&body).to_be_bytes());
    c
}

/// A well-formed 8-bit grayscale PNG header claiming `w × h`, with an empty IDAT.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend(png_chunk(b"IHDR", &ihdr));
    b.extend(png_chunk(b"IDAT", b"\x78\x9c\x03\x00\x00\x00\x00\x01"));
    b.extend(png_chunk(b"IEND", b""));
    b
}

/// A valid JPEG whose frame header (SOF0) claims `w × h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut b = encoded(ImageFormat::Jpeg, false);
    let sof = b.windows(2).position(|x| x == [0xFF, 0xC0]).unwrap();
    b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    b
}

/// Loads one image file the way `scoredd detect`/`eval` do.
fn load_image(path: &Path) -> scoredd::Result<data::Loaded> {
    data::inputs(&[path.to_path_buf()], ImageSpec::gray(8))
}

/// Mutated images through `data::inputs`; PNG CRCs are repaired half the time,
/// and 1 in 8 files gets the other format's extension (content sniffing).
fn fuzz_images(fz: &mut Fuzz, kind: &'static str, seeds: &[Vec<u8>], ext: &str, n: u64) {
    let dir = TempDir::new(kind);
    for seed in 0..n {
        let mut rng = Rng::new(seed ^ 0x494D_4147);
        let valid = &seeds[seed as usize % seeds.len()];
        let mut b = mutate(&mut rng, valid, valid.len());
        if ext == "png" && rng.below(2) == 0 {
            fix_png_crcs(&mut b);
        }
        let swapped = if ext == "png" { "jpg" } else { "png" };
        let ext = if rng.below(8) == 0 { swapped } else { ext };
        let path = dir.0.join(format!("{kind}-{seed}.{ext}"));
        std::fs::write(&path, &b).unwrap();
        fz.case(kind, &format!("seed {seed}"), &shown(&path), || {
            load_image(&path)
        });
        let _ = std::fs::remove_file(&path);
    }
}

/// Files that claim enormous sizes (refused by the pixel limit before any
/// allocation), empty and truncated files.
fn handmade_images(fz: &mut Fuzz) {
    let dir = TempDir::new("images");
    let png = encoded(ImageFormat::Png, false);
    let jpeg = encoded(ImageFormat::Jpeg, false);
    let limit = ["limit", "pixels"];
    let cases: Vec<(&str, &str, Vec<u8>, &[&str])> = vec![
        (
            "PNG 100000×100000",
            "png",
            png_claiming(100_000, 100_000),
            &limit,
        ),
        (
            "PNG 20000×20000 (under the crate's default max_alloc)",
            "png",
            png_claiming(20_000, 20_000),
            &limit,
        ),
        (
            "PNG 8193×8192, just over",
            "png",
            png_claiming(8193, 8192),
            &limit,
        ),
        (
            "PNG 2^31-1 square",
            "png",
            png_claiming(0x7FFF_FFFF, 0x7FFF_FFFF),
            &[],
        ),
        (
            "JPEG 65000×65000",
            "jpg",
            jpeg_claiming(65_000, 65_000),
            &limit,
        ),
        ("empty PNG", "png", vec![], &[]),
        ("empty JPEG", "jpg", vec![], &[]),
        ("PNG signature only", "png", png[..8].to_vec(), &[]),
        ("PNG cut in half", "png", png[..png.len() / 2].to_vec(), &[]),
        (
            "JPEG cut in half",
            "jpg",
            jpeg[..jpeg.len() / 2].to_vec(),
            &[],
        ),
        ("text named .png", "png", b"not an image".to_vec(), &[]),
    ];
    for (case, ext, bytes, words) in cases {
        let path = dir.0.join(format!("handmade.{ext}"));
        std::fs::write(&path, &bytes).unwrap();
        fz.refuse("image handmade", case, &shown(&path), words, || {
            load_image(&path)
        });
    }
}

// ---------------------------------------------------------------------------
// Masks

/// `<root>/test/{good,crack}/000.png` and the crack's mask; returns the mask path.
fn mvtec_tree(root: &Path, image: &[u8], mask: &[u8]) -> PathBuf {
    for d in ["test/good", "test/crack", "ground_truth/crack"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("test/good/000.png"), image).unwrap();
    std::fs::write(root.join("test/crack/000.png"), image).unwrap();
    let mask_path = root.join("ground_truth/crack/000_mask.png");
    std::fs::write(&mask_path, mask).unwrap();
    mask_path
}

/// Mutated masks through `data::mvtec_test`: an error must name the mask file.
fn fuzz_masks(fz: &mut Fuzz, n: u64) {
    let dir = TempDir::new("masks");
    let image = encoded(ImageFormat::Png, false);
    let mask = encoded(ImageFormat::Png, true);
    let mask_path = mvtec_tree(&dir.0, &image, &mask);
    let name = shown(&mask_path);
    for seed in 0..n {
        let mut rng = Rng::new(seed ^ 0x4D41_534B);
        let mut b = mutate(&mut rng, &mask, mask.len());
        if rng.below(2) == 0 {
            fix_png_crcs(&mut b);
        }
        std::fs::write(&mask_path, &b).unwrap();
        fz.case("mask", &format!("seed {seed}"), &name, || {
            data::mvtec_test(&dir.0, ImageSpec::gray(8))
        });
    }
    std::fs::write(&mask_path, png_claiming(100_000, 100_000)).unwrap();
    fz.refuse(
        "mask",
        "mask claiming 100000×100000",
        &name,
        &["limit"],
        || data::mvtec_test(&dir.0, ImageSpec::gray(8)),
    );
}

// ---------------------------------------------------------------------------

#[test]
fn hostile_inputs_give_typed_errors_naming_the_file() {
    let start = Instant::now();
    let k: u64 = std::env::var("SCOREDD_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut fz = Fuzz {
        trace: std::env::var_os("SCOREDD_FUZZ_TRACE").is_some(),
        ..Fuzz::default()
    };
    let tiny = model_bytes();
    let shipped =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("web/models/default.safetensors"))
            .unwrap();
    ModelFile::from_bytes(&shipped, "default").unwrap();

    handmade_model_files(&mut fz, &tiny);
    handmade_configs(&mut fz);
    handmade_images(&mut fz);
    fuzz_model_bytes(&mut fz, "model bytes", &tiny, 8000 * k);
    fuzz_model_bytes(&mut fz, "shipped model bytes", &shipped, 1000 * k);
    fuzz_model_meta(&mut fz, &tiny, 4000 * k);
    fuzz_model_load(&mut fz, &tiny, 500 * k);
    fuzz_configs(&mut fz, 4000 * k);
    let png = [
        encoded(ImageFormat::Png, false),
        encoded(ImageFormat::Png, true),
    ];
    fuzz_images(&mut fz, "PNG", &png, "png", 4000 * k);
    fuzz_images(
        &mut fz,
        "JPEG",
        &[encoded(ImageFormat::Jpeg, false)],
        "jpg",
        4000 * k,
    );
    fuzz_masks(&mut fz, 500 * k);

    let secs = start.elapsed().as_secs_f64();
    for (kind, n) in &fz.counts {
        let ok = fz.loaded.get(kind).copied().unwrap_or(0);
        eprintln!("{kind:>22}: {n:>6} cases, {ok:>5} loaded");
    }
    eprintln!("fuzz: {} cases in {secs:.1} s", fz.total());
    assert!(
        fz.failures.is_empty(),
        "{} failure(s):\n{}",
        fz.failures.len(),
        fz.failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(fz.total() >= MIN_CASES, "only {} cases", fz.total());
}
