// Gathers a strided 3-D view into a dense, zero-padded [batch][rows][cols_pad]
// array: out[t, r, j] = src[base + t·s_batch + r·s_row + j·s_col] for j < cols,
// 0 for cols ≤ j < cols_pad. Strides are two's-complement u32 (wrapping
// arithmetic), so a stride may be negative (a flip).
//
// Packs operands for the register-blocked kernels: bmm's A and B k-major,
// conv2d_backward's dy and x channels-last, and its transposed (for stride 1
// also spatially flipped) weights.

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
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn strided_pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.batch * p.rows * p.cols_pad) {
        return;
    }
    let j = i % p.cols_pad;
    let rest = i / p.cols_pad;
    let r = rest % p.rows;
    let t = rest / p.rows;
    var v = 0.0;
    if (j < p.cols) {
        v = src[p.base + t * p.s_batch + r * p.s_row + j * p.s_col];
    }
    dst[i] = v;
}
