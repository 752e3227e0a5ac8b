// Softmax over the last axis (ModuleOps::softmax): y = exp(x − max) / Σ exp(x − max)
// per row. Pass 1 keeps a running (max, sum of exp) — the "online" softmax: one
// read for both — pass 2 writes the row. Two entry points:
// `softmax`: one workgroup per row (the grid spills into y past the
//   per-dimension limit), each invocation a strided share of the row, merged by
//   a tree reduction in workgroup memory — for long rows on GPUs;
// `softmax_row`: one invocation per row, no barriers — for short rows, and on
//   CPU-emulated devices (lavapipe), where barriers are costly and a few
//   threads are busy anyway.

struct Params {
    rows: u32,
    len: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> red_max: array<f32, 64>;
var<workgroup> red_sum: array<f32, 64>;

// -f32::MAX written exactly: browsers (Tint) reject -3.40282347e38, which is
// just past it before rounding.
const LOWEST: f32 = -3.4028234663852886e38;

@compute @workgroup_size(64)
fn softmax(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.len;
    var m = LOWEST;
    var s = 0.0;
    for (var j = li; j < p.len; j += 64u) {
        let v = x[base + j];
        if (v > m) {
            s = s * exp(m - v) + 1.0;
            m = v;
        } else {
            s += exp(v - m);
        }
    }
    red_max[li] = m;
    red_sum[li] = s;
    workgroupBarrier();
    for (var off = 32u; off > 0u; off >>= 1u) {
        if (li < off) {
            let m2 = red_max[li + off];
            let s2 = red_sum[li + off];
            let mm = max(m, m2);
            s = s * exp(m - mm) + s2 * exp(m2 - mm);
            m = mm;
            red_max[li] = m;
            red_sum[li] = s;
        }
        workgroupBarrier();
    }
    let mx = red_max[0];
    let inv = 1.0 / red_sum[0];
    for (var j = li; j < p.len; j += 64u) {
        y[base + j] = exp(x[base + j] - mx) * inv;
    }
}

@compute @workgroup_size(64)
fn softmax_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.len;
    var m = LOWEST;
    var s = 0.0;
    for (var j = 0u; j < p.len; j++) {
        let v = x[base + j];
        if (v > m) {
            s = s * exp(m - v) + 1.0;
            m = v;
        } else {
            s += exp(v - m);
        }
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < p.len; j++) {
        y[base + j] = exp(x[base + j] - m) * inv;
    }
}
