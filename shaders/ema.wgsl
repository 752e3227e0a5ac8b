// Exponential moving average of the weights, in place, one invocation per
// element on the 1-D grid of gpu::grid_1d (64 per workgroup, linearised with
// num_workgroups).

struct EmaParams {
    n: u32,
    _p0: u32,
    rate: f32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: EmaParams;
@group(0) @binding(1) var<storage, read_write> ema: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// ema = rate·ema + (1 − rate)·src
@compute @workgroup_size(64)
fn ema_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    ema[i] = p.rate * ema[i] + (1.0 - p.rate) * src[i];
}
