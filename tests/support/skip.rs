//! Skipping a test whose environment is missing (GPU adapter, browser, data),
//! visibly. Under `CI=true` a skip is a failure: CI installs everything.
//! Elsewhere the skip is counted and, when the test binary exits, one line
//! after libtest's summary says how many tests did not run and why — so a
//! skipped test never passes for an "ok" unnoticed.

use std::sync::{Mutex, Once};

static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

extern "C" {
    // From the C library std already links: run a hook when the process exits.
    fn atexit(hook: extern "C" fn()) -> i32;
}

extern "C" fn report() {
    let skipped = SKIPPED.lock().map(|s| s.clone()).unwrap_or_default();
    if !skipped.is_empty() {
        eprintln!(
            "SKIPPED: {} test(s) counted as ok by the summary above did not run (under CI=true they fail): {}",
            skipped.len(),
            skipped.join("; ")
        );
    }
}

/// True under CI (`CI=true`, as `.ci/run` exports).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Records that the current test cannot run because of `why`; panics under CI.
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    if under_ci() {
        panic!("CI=true but {test} cannot run: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    AT_EXIT.call_once(|| unsafe {
        atexit(report);
    });
    if let Ok(mut s) = SKIPPED.lock() {
        s.push(format!("{test} ({why})"));
    }
}
