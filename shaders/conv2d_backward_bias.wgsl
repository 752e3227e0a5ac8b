// Bias gradient of conv2d: db[co] = Σ_{b, y, x} dy[b, co, y, x].
// One workgroup per channel (the grid spills into y past the per-dimension
// limit); each invocation sums a strided share of the channel's planes, then a
// tree reduction in workgroup memory (fixed order: deterministic).

struct Params {
    batch: u32,
    c_out: u32,
    plane: u32,     // Ho · Wo
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> db: array<f32>;

var<workgroup> part: array<f32, 64>;

@compute @workgroup_size(64)
fn conv2d_backward_bias(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let co = wg.x + wg.y * nwg.x;
    if (co >= p.c_out) {
        return;
    }
    var acc = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        let base = (b * p.c_out + co) * p.plane;
        for (var j = li; j < p.plane; j += 64u) {
            acc += dy[base + j];
        }
    }
    part[li] = acc;
    workgroupBarrier();
    for (var off = 32u; off > 0u; off >>= 1u) {
        if (li < off) {
            part[li] += part[li + off];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        db[co] = part[0];
    }
}
