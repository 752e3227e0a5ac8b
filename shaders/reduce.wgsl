// Sums for bias gradients and batch sums. WGSL has no float atomics, so
// reduce_rows gives each output its own workgroup: every invocation sums a
// strided slice into registers (one partial per batch entry, then their total,
// to keep long sums accurate), then one tree reduction in workgroup memory
// (log2(64) barriers). Bindings: 1 = output, 2 = input.

struct Params {
    rows: u32,      // reduce_rows: outputs; sum_batch: elements per sample D
    nb: u32,        // batch entries summed over
    len: u32,       // reduce_rows: contiguous elements per (batch entry, row)
    stride_b: u32,  // reduce_rows: distance between batch entries
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

const WG: u32 = 64u;

var<workgroup> partial: array<f32, 64>;

// out[r] = Σ_{b < nb} Σ_{s < len} x[b·stride_b + r·len + s]; one workgroup per r
// (workgroups linearised with num_workgroups). bias_grad: rows = C, nb = B,
// len = S, stride_b = C·S. sample_bias_grad: rows = B·C, nb = 1, len = S.
@compute @workgroup_size(64)
fn reduce_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    var acc = 0.0;
    for (var b = 0u; b < p.nb; b++) {
        let base = b * p.stride_b + r * p.len;
        var s_b = 0.0;
        for (var s = lid; s < p.len; s += WG) {
            s_b += x[base + s];
        }
        acc += s_b;
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[r] = partial[0];
    }
}

// out[j] = Σ_{b < nb} x[b·D + j]: one invocation per output, on the 1-D grid of
// gpu::grid_1d; neighbouring invocations read neighbouring addresses.
@compute @workgroup_size(64)
fn sum_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * 64u;
    if (j >= p.rows) {
        return;
    }
    var acc = 0.0;
    for (var b = 0u; b < p.nb; b++) {
        acc += x[b * p.rows + j];
    }
    out[j] = acc;
}
