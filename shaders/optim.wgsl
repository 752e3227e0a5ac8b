// Adam, in place, one invocation per element on the 1-D grid of
// gpu::grid_1d (64 per workgroup, linearised with num_workgroups).

struct AdamParams {
    n: u32,
    clip: u32,       // 1: clip to max_norm
    _p0: u32,
    _p1: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bc1: f32,        // 1 − beta1^t
    bc2: f32,        // 1 − beta2^t
    max_norm: f32,
    ema_rate: f32,   // adam_ema_step: the weight kept on the old average
}

@group(0) @binding(0) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read> grad_sq_total: array<f32>;
// adam_ema_step only.
@group(0) @binding(6) var<storage, read_write> ema: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// Inf or NaN, from the bits (compilers may assume floats are finite).
fn non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// Adam with global-norm clipping from the device-side Σ g² over all
// parameters; a non-finite total skips the step (nothing is written). The
// f32 expression order matches the CPU backend's.
fn adam_update(i: u32) -> f32 {
    let total = grad_sq_total[0];
    if (non_finite(total)) {
        return param[i];
    }
    var scale = 1.0;
    if (ap.clip != 0u) {
        scale = min(1.0, ap.max_norm / (sqrt(total) + 1e-6));
    }
    let g = scale * grad[i];
    let mi = ap.beta1 * m[i] + (1.0 - ap.beta1) * g;
    let vi = ap.beta2 * v[i] + (1.0 - ap.beta2) * (g * g);
    m[i] = mi;
    v[i] = vi;
    let mhat = mi / ap.bc1;
    let vhat = vi / ap.bc2;
    let updated = param[i] - ap.lr * mhat / (sqrt(vhat) + ap.eps);
    param[i] = updated;
    return updated;
}

@compute @workgroup_size(64)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= ap.n) {
        return;
    }
    adam_update(i);
}

// adam_step, then ema = rate·ema + (1 − rate)·param on the updated param
// (ema.wgsl's expression): one dispatch per parameter instead of two, which
// on a software adapter is most of the cost of these small tensors. A
// skipped step still moves the average toward the (unchanged) param, as the
// two separate kernels do.
@compute @workgroup_size(64)
fn adam_ema_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= ap.n) {
        return;
    }
    let updated = adam_update(i);
    ema[i] = ap.ema_rate * ema[i] + (1.0 - ap.ema_rate) * updated;
}
