//! Kernel variants and their autotuning (after burn's autotune): the first
//! time a (kernel family, shape class) runs on an adapter, every candidate
//! variant is timed a few times on the real operands, the fastest is kept,
//! and the choice is cached on disk keyed by adapter, driver, backend and the
//! family's shader hash, so a new driver or an edited shader re-measures.
//!
//! `SCOREDD_TUNE=off` always uses the default (today's register-blocked
//! kernel); `SCOREDD_TUNE=fresh` ignores the cache and re-measures. In the
//! browser nothing can wait for the GPU inside an op: there the page times
//! whole detections once per kernel family (`Detector.tuneKernels`), forces
//! the fastest, and keeps the choice in localStorage under the adapter key.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::kernels::{
    CONV2D_BACKWARD_WEIGHT, CONV2D_BACKWARD_WEIGHT_SUBGROUP, CONV2D_K3S1, CONV2D_K3S1_SUBGROUP,
    CONV2D_TILED, MATMUL_ANY, MATMUL_TILED, MATMUL_TRANSPOSE, MATMUL_VEC4,
};

/// A kernel family's variants (matmul and conv forward have the first two;
/// the conv forward also the subgroup one, where it applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// 8×8 outputs per invocation in registers (`matmul.wgsl`, A transposed
    /// first, or `matmul_any.wgsl` when N is not a multiple of 4; `conv2d.wgsl`).
    RegisterBlocked,
    /// 64×64 output tiles staged through workgroup memory
    /// (`matmul_tiled.wgsl`, `conv2d_tiled.wgsl`).
    Tiled,
    /// The register-blocked conv with each input channel's weights loaded
    /// once per subgroup and shared by `subgroupBroadcast`
    /// (`conv2d_subgroup.wgsl`: 3×3 with padding 1 or 1×1 with padding 0,
    /// stride 1, W % 4 == 0, on adapters with subgroups of 8 or more); for the weight gradient, its
    /// kernel with dy shared the same way
    /// (`conv2d_backward_weight_subgroup.wgsl`: ceil(Cin / 8) a multiple of
    /// the subgroup size). A shape or adapter it does not fit runs the
    /// register-blocked kernel instead.
    Subgroup,
    /// The 3×3 subgroup conv with two output rows per invocation
    /// (`conv2d_subgroup.wgsl`, `conv2d_k3s1_subgroup_rows2`): the 4 input
    /// rows the pair sees are loaded and shuffled once, and each input
    /// channel's weights broadcast once, for both rows. Where it fits the
    /// 3×3 subgroup conv fits; elsewhere the register-blocked kernel runs.
    SubgroupRows2,
    /// The same with four output rows per invocation
    /// (`conv2d_k3s1_subgroup_rows4`): 6 input rows loaded and each
    /// input channel's weights broadcast once for 4 rows.
    SubgroupRows4,
    /// For the 3×3 stride-1 weight gradient only: the three taps of a kernel
    /// row per invocation, 8 output × 4 input channels, over a window of
    /// x that slides one column per step (`conv2d_backward_weight_row3.wgsl`):
    /// a third of the one-tap kernels' loads per FMA.
    KernelRow,
    /// The kernel-row weight gradient with dy loaded once per subgroup and
    /// shared by `subgroupBroadcast`
    /// (`conv2d_backward_weight_row3_subgroup.wgsl`: ceil(Cin / 4) a
    /// multiple of the subgroup size, subgroups of 8 or more).
    KernelRowSubgroup,
}

impl Variant {
    pub const ALL: [Variant; 7] = [
        Variant::RegisterBlocked,
        Variant::Tiled,
        Variant::Subgroup,
        Variant::SubgroupRows2,
        Variant::SubgroupRows4,
        Variant::KernelRow,
        Variant::KernelRowSubgroup,
    ];
    /// What `SCOREDD_TUNE=off` uses: the kernel the backend had before tuning.
    pub const DEFAULT: Variant = Variant::RegisterBlocked;

    pub fn name(self) -> &'static str {
        match self {
            Variant::RegisterBlocked => "register-blocked 8x8",
            Variant::Tiled => "tiled 64x64x16",
            Variant::Subgroup => "subgroup 8x8",
            Variant::SubgroupRows2 => "subgroup 8x8 2 rows",
            Variant::SubgroupRows4 => "subgroup 8x8 4 rows",
            Variant::KernelRow => "kernel row 8x4x3",
            Variant::KernelRowSubgroup => "kernel row 8x4x3 subgroup",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// The conv-forward variants the tuner times (the stride-1 input gradient's
/// too) for a kernel size `k`, where the subgroup kernels fit or not: the
/// multi-row subgroup kernels are 3×3 only. The GPU report shows these.
pub fn conv_forward_candidates(subgroup: bool, k: usize) -> &'static [Variant] {
    use Variant::*;
    match (subgroup, k) {
        (false, _) => &[RegisterBlocked, Tiled],
        (true, 3) => &[
            RegisterBlocked,
            Tiled,
            Subgroup,
            SubgroupRows2,
            SubgroupRows4,
        ],
        (true, _) => &[RegisterBlocked, Tiled, Subgroup],
    }
}

/// How the tuner behaves (`SCOREDD_TUNE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneMode {
    /// Use the cache; measure what it lacks.
    On,
    /// Always the default variant.
    Off,
    /// Ignore the cache on disk; measure again.
    Fresh,
}

impl TuneMode {
    pub fn from_env() -> Self {
        Self::parse(std::env::var("SCOREDD_TUNE").ok().as_deref())
    }

    /// `off` (or `0`), `fresh`; anything else, or unset, is on.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("off") | Some("0") => TuneMode::Off,
            Some("fresh") => TuneMode::Fresh,
            _ => TuneMode::On,
        }
    }
}

/// A matmul's shape class: dimensions rounded up to powers of two (shapes in
/// one class run alike), and whether N suits the vec4 kernel.
pub fn matmul_class(m: usize, k: usize, n: usize) -> String {
    let p2 = |v: usize| v.max(1).next_power_of_two();
    format!(
        "matmul m{} k{} n{}{}",
        p2(m),
        p2(k),
        p2(n),
        if n.is_multiple_of(4) { "" } else { " odd" }
    )
}

/// 64-bit FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// The hash of the tuned families' shaders: a changed kernel re-measures.
pub fn shader_hash() -> u64 {
    let w = [
        MATMUL_VEC4.info,
        MATMUL_ANY.info,
        MATMUL_TILED.info,
        MATMUL_TRANSPOSE.info,
        CONV2D_K3S1.info,
        CONV2D_TILED.info,
        CONV2D_K3S1_SUBGROUP.info,
        CONV2D_BACKWARD_WEIGHT.info,
        CONV2D_BACKWARD_WEIGHT_SUBGROUP.info,
    ]
    .map(|k| k.wgsl());
    let parts: Vec<&str> = w.iter().map(|s| s.as_str()).collect();
    fnv1a(&parts)
}

/// The tuned kernel families, by the prefix of their shape classes
/// (`conv_class` for the forward; the stride-1 conv input gradient's are
/// prefixed `dx-`, the weight gradient's `dw-`), for `--verbose`.
const FAMILIES: [(&str, &str); 4] = [
    ("matmul", "matmul"),
    ("conv", "conv forward"),
    ("dx-conv", "conv input gradient (stride 1)"),
    ("dw-conv", "conv weight gradient"),
];

/// A conv forward's shape class: kernel, stride, and channels and output
/// positions rounded up to powers of two.
pub fn conv_class(k: usize, stride: usize, c_in: usize, c_out: usize, positions: usize) -> String {
    let p2 = |v: usize| v.max(1).next_power_of_two();
    format!(
        "conv k{k} s{stride} cin{} cout{} pos{}",
        p2(c_in),
        p2(c_out),
        p2(positions)
    )
}

/// A conv shape class, marked when the subgroup kernel is among its
/// candidates (shapes with and without it are tuned apart).
pub fn with_subgroup(class: String, subgroup: bool) -> String {
    if subgroup {
        class + " sg"
    } else {
        class
    }
}

/// The cache's key for an adapter: name, driver, backend and shader hash.
pub fn adapter_key(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} / {} {} / {:?} / {:016x}",
        info.name,
        info.driver,
        info.driver_info,
        info.backend,
        shader_hash()
    )
    .replace(['\t', '\n'], " ")
}

/// Chosen variants by (adapter key, shape class), as stored on disk: one
/// `key<TAB>class<TAB>variant` line each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TuneCache {
    pub entries: BTreeMap<(String, String), Variant>,
}

impl TuneCache {
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (key, class, v) = (f.next()?, f.next()?, f.next()?);
                Some(((key.to_string(), class.to_string()), Variant::from_name(v)?))
            })
            .collect();
        TuneCache { entries }
    }

    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|((key, class), v)| format!("{key}\t{class}\t{}\n", v.name()))
            .collect()
    }

    /// The cache file, or an empty cache if it is missing or unreadable.
    pub fn load(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// Writes the cache (creating its folder). Failing to is not an error
    /// worth stopping for: the next run measures again.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.render())
    }
}

/// `scoredd/gpu-tune.tsv` in the user's cache directory (`SCOREDD_TUNE_CACHE`
/// overrides), natively; none in the browser.
pub fn default_cache_path() -> Option<PathBuf> {
    if cfg!(target_arch = "wasm32") {
        return None;
    }
    if let Some(p) = std::env::var_os("SCOREDD_TUNE_CACHE") {
        return Some(PathBuf::from(p));
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = if cfg!(windows) {
        env("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        env("HOME").map(|h| h.join("Library/Caches"))
    } else {
        env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))
    }?;
    Some(base.join("scoredd").join("gpu-tune.tsv"))
}

/// The backend's tuning state: a forced variant (tests; in the browser, the
/// family the page measured fastest, see `web::Detector::tune_kernels`), the choices so far,
/// and the timings behind them (for the GPU report).
pub struct Tuner {
    pub mode: TuneMode,
    pub forced: Cell<Option<Variant>>,
    key: String,
    path: Option<PathBuf>,
    cache: RefCell<TuneCache>,
    /// Milliseconds per variant, by shape class, measured in this process.
    pub timings: RefCell<BTreeMap<String, Vec<(Variant, f64)>>>,
    /// The variant each shape class ran with in this process (not forced).
    used: RefCell<BTreeMap<String, Variant>>,
}

impl Tuner {
    /// The tuner for an adapter, as `SCOREDD_TUNE` and the cache say.
    pub fn new(info: &wgpu::AdapterInfo) -> Self {
        Self::with(
            TuneMode::from_env(),
            adapter_key(info),
            default_cache_path(),
        )
    }

    /// A tuner with an explicit mode, adapter key and cache file (tests).
    pub fn with(mode: TuneMode, key: String, path: Option<PathBuf>) -> Self {
        let mut cache = path.as_deref().map(TuneCache::load).unwrap_or_default();
        if mode == TuneMode::Fresh {
            // Forget this adapter's choices, keep other adapters'.
            cache.entries.retain(|(k, _), _| *k != key);
        }
        Tuner {
            mode,
            forced: Cell::new(None),
            key,
            path,
            cache: RefCell::new(cache),
            timings: RefCell::default(),
            used: RefCell::default(),
        }
    }

    /// The variant for `class` if it is settled (forced, off, or chosen before).
    pub fn settled(&self, class: &str) -> Option<Variant> {
        if let Some(v) = self.forced.get() {
            return Some(v);
        }
        let v = if self.mode == TuneMode::Off || cfg!(target_arch = "wasm32") {
            Some(Variant::DEFAULT)
        } else {
            let key = (self.key.clone(), class.to_string());
            self.cache.borrow().entries.get(&key).copied()
        };
        if let Some(v) = v {
            self.note_used(class, v);
        }
        v
    }

    fn note_used(&self, class: &str, v: Variant) {
        let mut used = self.used.borrow_mut();
        if !used.contains_key(class) {
            used.insert(class.to_string(), v);
        }
    }

    /// Records the measured times of `class` and keeps (and saves) the fastest.
    pub fn choose(&self, class: &str, times: Vec<(Variant, f64)>) -> Variant {
        let best = times
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(Variant::DEFAULT, |t| t.0);
        let line = times
            .iter()
            .map(|(v, ms)| format!("{} {ms:.3} ms", v.name()))
            .collect::<Vec<_>>()
            .join(", ");
        log::info!("autotune {class}: {} ({line})", best.name());
        self.timings.borrow_mut().insert(class.to_string(), times);
        self.note_used(class, best);
        let mut cache = self.cache.borrow_mut();
        cache
            .entries
            .insert((self.key.clone(), class.to_string()), best);
        if let Some(p) = &self.path {
            if let Err(e) = cache.save(p) {
                log::debug!("autotune cache {} not written: {e}", p.display());
            }
        }
        best
    }

    /// One line for `--verbose`: what this process measured and chose, and
    /// how many choices came from the cache (the CLI prints it; each choice
    /// is also logged at `info` as it is made).
    pub fn summary(&self) -> String {
        let timings = self.timings.borrow();
        let measured: Vec<String> = timings
            .iter()
            .map(|(class, times)| {
                let best = times
                    .iter()
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or("?", |t| t.0.name());
                format!("{class} → {best}")
            })
            .collect();
        let cached = self.choices().len().saturating_sub(measured.len());
        format!(
            "autotune ({:?}): {} measured now{}{}; {cached} from the cache",
            self.mode,
            measured.len(),
            if measured.is_empty() { "" } else { ": " },
            measured.join(", ")
        )
    }

    /// For `--verbose`: one line per tuned kernel family that ran in this
    /// process, with the variant it got in each of its shape classes
    /// (grouped by variant; the classes listed for all but the most used).
    pub fn family_lines(&self) -> Vec<String> {
        let used = self.used.borrow();
        let timings = self.timings.borrow();
        FAMILIES
            .iter()
            .filter_map(|&(prefix, family)| {
                let classes: Vec<(&String, &Variant)> =
                    used.iter().filter(|(c, _)| c.starts_with(prefix)).collect();
                if classes.is_empty() {
                    return None;
                }
                let measured = classes
                    .iter()
                    .filter(|(c, _)| timings.contains_key(*c))
                    .count();
                let mut by_variant: Vec<(Variant, Vec<&str>)> = Vec::new();
                for (c, v) in &classes {
                    match by_variant.iter_mut().find(|(w, _)| w == *v) {
                        Some((_, cs)) => cs.push(c.as_str()),
                        None => by_variant.push((**v, vec![c.as_str()])),
                    }
                }
                by_variant.sort_by_key(|(_, cs)| std::cmp::Reverse(cs.len()));
                let parts: Vec<String> = by_variant
                    .iter()
                    .enumerate()
                    .map(|(i, (v, cs))| {
                        if i == 0 {
                            format!("{} ×{}", v.name(), cs.len())
                        } else {
                            format!("{} ×{} ({})", v.name(), cs.len(), cs.join(", "))
                        }
                    })
                    .collect();
                Some(format!(
                    "autotune {family} ({:?}): {}; {} shape classes, {measured} measured now",
                    self.mode,
                    parts.join("; "),
                    classes.len()
                ))
            })
            .collect()
    }

    /// The choices made or loaded for this adapter, by shape class.
    pub fn choices(&self) -> Vec<(String, Variant)> {
        self.cache
            .borrow()
            .entries
            .iter()
            .filter(|((k, _), _)| *k == self.key)
            .map(|((_, c), v)| (c.clone(), *v))
            .collect()
    }
}

/// Whether a candidate kernel's output `b` matches the reference `a`: every
/// element within 1e-3 of the reference's largest magnitude. Summation order
/// differs between variants (a few ulps of the sums); a lane mix-up in a
/// subgroup kernel moves whole values.
pub fn agrees(a: &[f32], b: &[f32]) -> bool {
    let scale = a
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (x - y).abs() <= 1e-3 * scale
                || x.to_bits() == y.to_bits()
                || (x.is_nan() && y.is_nan())
        })
}
