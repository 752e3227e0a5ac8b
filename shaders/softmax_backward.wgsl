// Softmax backward over the last axis (ModuleOps::softmax_backward):
// dx = y ⊙ (dy − Σ_j dy_j·y_j) per row: the row's dot product, then one write
// pass. As in softmax.wgsl, two entry points: `softmax_backward`, one
// workgroup per row (the grid spills into y past the per-dimension limit), the
// dot product by strided shares and a tree reduction in workgroup memory; and
// `softmax_backward_row`, one invocation per row, no barriers.

struct Params {
    rows: u32,
    len: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn softmax_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.len;
    var acc = 0.0;
    for (var j = li; j < p.len; j += 64u) {
        acc += dy[base + j] * y[base + j];
    }
    red[li] = acc;
    workgroupBarrier();
    for (var off = 32u; off > 0u; off >>= 1u) {
        if (li < off) {
            red[li] += red[li + off];
        }
        workgroupBarrier();
    }
    let dot = red[0];
    for (var j = li; j < p.len; j += 64u) {
        dx[base + j] = y[base + j] * (dy[base + j] - dot);
    }
}

@compute @workgroup_size(64)
fn softmax_backward_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.len;
    var dot = 0.0;
    for (var j = 0u; j < p.len; j++) {
        dot += dy[base + j] * y[base + j];
    }
    for (var j = 0u; j < p.len; j++) {
        dx[base + j] = y[base + j] * (dy[base + j] - dot);
    }
}
