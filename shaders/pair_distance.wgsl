// Score-DD's feature distance: a tapped feature map of the batch [x'; x'']
// (2N samples, the first N on the learned-score path, the last N on the
// self-score path) → per-pixel Euclidean distance over channels,
//   out[n, s] = sqrt(Σ_c (x[n, c, s] − x[N + n, c, s])²),   out: [N, S],
// with `relative` divided by ‖x[n, ·, s]‖ + ‖x[N + n, ·, s]‖ + 1e-6.
// One invocation per output pixel on the 1-D grid of gpu::grid_1d;
// neighbouring invocations read neighbouring addresses for every c.
// Bindings: 1 = output, 2 = input.

struct Params {
    n: u32,     // pairs N
    c: u32,     // channels
    s: u32,     // pixels per channel (H·W)
    relative: u32, // 1: divide by the pair's feature norms
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

@compute @workgroup_size(64)
fn pair_distance(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n * p.s) {
        return;
    }
    let n = i / p.s;
    let s = i % p.s;
    let a = n * p.c * p.s + s;
    let b = (p.n + n) * p.c * p.s + s;
    var acc = 0.0;
    var na = 0.0;
    var nb = 0.0;
    for (var c = 0u; c < p.c; c++) {
        let u = x[a + c * p.s];
        let v = x[b + c * p.s];
        acc += (u - v) * (u - v);
        na += u * u;
        nb += v * v;
    }
    var d = sqrt(acc);
    if (p.relative == 1u) {
        d = d / (sqrt(na) + sqrt(nb) + 1e-6);
    }
    out[i] = d;
}
