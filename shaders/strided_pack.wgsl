// Gathers a strided 3-D view into a dense, zero-padded [batch][rows][cols_pad]
// array: out[t, r, j] = src[base + t·s_batch + r·s_row + j·s_col] for j < cols,
// 0 for cols ≤ j < cols_pad. Strides are two's-complement u32 (wrapping
// arithmetic), so a stride may be negative (a flip).
//
// Packs operands for the register-blocked kernels: bmm's A and B k-major,
// conv2d_backward's dy and x channels-last, and its transposed (for stride 1
// also spatially flipped) weights.
//
// cols_pad is a multiple of 4 (the callers pad to 8): one invocation writes
// 4 consecutive j as one vec4, so the index arithmetic (three u32 divisions)
// and the store, each costing one lane at a time on lavapipe, come once per
// 4 elements.

struct Params {
    batch: u32,
    rows: u32,
    cols: u32,
    cols_pad: u32,
    base: u32,
    s_batch: u32,
    s_row: u32,
    s_col: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn strided_pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let cp4 = p.cols_pad / 4u;
    if (i >= p.batch * p.rows * cp4) {
        return;
    }
    let j0 = (i % cp4) * 4u;
    let rest = i / cp4;
    let r = rest % p.rows;
    let t = rest / p.rows;
    let at = p.base + t * p.s_batch + r * p.s_row + j0 * p.s_col;
    var v = vec4<f32>(0.0);
    if (j0 < p.cols) {
        v.x = src[at];
    }
    if (j0 + 1u < p.cols) {
        v.y = src[at + p.s_col];
    }
    if (j0 + 2u < p.cols) {
        v.z = src[at + 2u * p.s_col];
    }
    if (j0 + 3u < p.cols) {
        v.w = src[at + 3u * p.s_col];
    }
    dst4[i] = v;
}

