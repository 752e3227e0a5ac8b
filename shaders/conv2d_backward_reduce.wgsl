// Sums conv2d_backward_weight.wgsl's per-split partial weight gradients:
// dw[i] = Σ_{s < splits} part[s·n + i], in split order (deterministic, no atomics).

struct Params {
    n: u32,
    splits: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;

@compute @workgroup_size(64)
fn conv2d_backward_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += part[s * p.n + i];
    }
    dw[i] = acc;
}
