//! The PyTorch reference's figures (`../shared/peer/bench.py --out FILE`,
//! passed as `PEER_RESULTS=FILE`; measure it on the same machine right before
//! the bench). Each figure is the FASTER of its two malloc modes (`default`
//! and `nommap`), so a ratio never flatters us.

/// Milliseconds of `key` for `model` ("small", "tiny"), and the mode it came from.
pub fn peer_ms(model: &str, key: &str) -> Option<(f64, &'static str)> {
    let path = std::env::var("PEER_RESULTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/peer/results_cpu.json"
        )
        .into()
    });
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    ["default", "nommap"]
        .into_iter()
        .filter_map(|mode| {
            let s = v["modes"][mode]["models"][model][key]["median_s"].as_f64()?;
            Some((s * 1e3, mode))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

/// Where the reference figures come from, for the bench's header.
pub fn source() -> String {
    std::env::var("PEER_RESULTS").unwrap_or_else(|_| {
        "../shared/peer/results_cpu.json (measured elsewhere: pass PEER_RESULTS for a fair ratio)"
            .into()
    })
}
