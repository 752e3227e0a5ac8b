// Pointwise ops on f32 tensors: one invocation per output element, on the 1-D
// grid of gpu::grid_1d (64 per workgroup, linearised with num_workgroups).
// Bindings: 1 = output, 2 = first input, 3 = second input (the unary silu
// binds only 1 and 2). Inputs are read-only, so a and b may be one buffer.
//
// axpby, mul, silu and silu_backward are the elementwise registry
// (backend::pointwise): the GPU backend dispatches an op by its entry point
// here, named after it, with alpha and beta as the op's scalars. A new
// registry op is one more entry point of the same shape. add_bias and
// add_sample_bias broadcast (c, inner), so they have their own dispatch.

struct Params {
    n: u32,       // output elements
    c: u32,       // channels (add_bias)
    inner: u32,   // elements per (sample, channel) (add_bias, add_sample_bias)
    _p0: u32,
    alpha: f32,   // axpby
    beta: f32,    // axpby
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// out = alpha * a + beta * b
@compute @workgroup_size(64)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    out[i] = p.alpha * a[i] + p.beta * b[i];
}

// out = a * b
@compute @workgroup_size(64)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    out[i] = a[i] * b[i];
}

// out = a * sigmoid(a)
@compute @workgroup_size(64)
fn silu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let x = a[i];
    out[i] = x * sigmoid(x);
}

// a = x, b = dy: out = dy * s * (1 + x * (1 - s)), s = sigmoid(x)
@compute @workgroup_size(64)
fn silu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let x = a[i];
    let s = sigmoid(x);
    out[i] = b[i] * (s * (1.0 + x * (1.0 - s)));
}

// a = x [B, C, inner], b = bias [C]: out = x + bias[c]
@compute @workgroup_size(64)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    out[i] = a[i] + b[(i / p.inner) % p.c];
}

// a = x [B, C, inner], b = t [B, C]: out = x + t[b, c]
@compute @workgroup_size(64)
fn add_sample_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    out[i] = a[i] + b[i / p.inner];
}
