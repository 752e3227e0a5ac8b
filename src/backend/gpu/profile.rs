//! `SCOREDD_GPU_PROFILE=1`: every dispatch is waited for and timed alone, and
//! the totals by entry point (and by entry point and grid) are printed to
//! stderr when the device is dropped. For finding where device time goes;
//! the waits make the whole run slower.
//!
//! On Linux the time is the process's CPU time (all threads: a software
//! adapter's workers included), not wall-clock time: on a shared machine a
//! small dispatch's wall time is mostly waiting to be scheduled, which the
//! CPU time leaves out. Elsewhere it is wall-clock time.

use std::cell::RefCell;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct DispatchProfile {
    /// (count, seconds) by "entry gx×gy×gz".
    totals: RefCell<BTreeMap<String, (u64, f64)>>,
}

impl DispatchProfile {
    /// A profile if `SCOREDD_GPU_PROFILE=1` (never in the browser).
    pub fn from_env() -> Option<Self> {
        let on = std::env::var("SCOREDD_GPU_PROFILE").is_ok_and(|v| v == "1");
        (on && !cfg!(target_arch = "wasm32")).then(Self::default)
    }

    /// Adds one dispatch's `seconds`.
    pub fn record(&self, entry: &str, groups: (u32, u32, u32), seconds: f64) {
        let key = format!("{entry} {}x{}x{}", groups.0, groups.1, groups.2);
        let mut m = self.totals.borrow_mut();
        let e = m.entry(key).or_default();
        e.0 += 1;
        e.1 += seconds;
    }

    /// The report: totals by entry point, then the 40 costliest grids.
    pub fn render(&self) -> String {
        let m = self.totals.borrow();
        let total: f64 = m.values().map(|v| v.1).sum::<f64>().max(1e-9);
        let mut by_entry: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
        for (k, v) in m.iter() {
            let e = by_entry
                .entry(k.split(' ').next().unwrap_or(""))
                .or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        let line = |k: &str, (n, s): (u64, f64)| {
            format!("{s:>9.3} s {:>5.1}% {n:>7}  {k}\n", 100.0 * s / total)
        };
        let mut out = format!(
            "GPU profile ({}): {total:.3} s in dispatches\n",
            clock_name()
        );
        let mut rows: Vec<_> = by_entry.into_iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        rows.iter().for_each(|(k, v)| out += &line(k, *v));
        out += "by grid (the 40 costliest):\n";
        let mut rows: Vec<_> = m.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        rows.iter().take(40).for_each(|(k, v)| out += &line(k, **v));
        out
    }
}

fn clock_name() -> &'static str {
    if cfg!(all(target_os = "linux", target_pointer_width = "64")) {
        "process CPU time"
    } else {
        "wall-clock time"
    }
}

/// Seconds on the profile's clock (see the module comment).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn now_s() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two 64-bit fields on
    // 64-bit Linux) into the valid `ts`.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

/// (Never called in the browser: the profile is native only.)
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn now_s() -> f64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}
