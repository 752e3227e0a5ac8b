// resample.wgsl's upsample2x and avgpool2x four outputs at a time, for widths
// that keep every row vec4-aligned (upsample: W % 4 == 0, avgpool: W % 8 == 0).
// On lavapipe a storage access at an offset that is not a compile-time
// constant costs one lane at a time, as does a u32 division by a uniform, so
// the scalar kernels (one output per invocation, three divisions each) are
// bound by those; here one invocation handles 16 outputs (upsample) or 4
// (avgpool) with aligned vec4 accesses and one division. Same values, bit for
// bit: upsampling copies, pooling sums in the scalar kernel's order.
// Bindings: 1 = output, 2 = input.

struct Params {
    n: u32,  // output elements
    h: u32,  // input height
    w: u32,  // input width
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// One invocation per input vec4 (4 columns of one input row): input row r
// becomes output rows 2r and 2r + 1 (the planes' rows line up: plane·2H + 2·iy
// = 2·(plane·H + iy)), columns 8q … 8q + 7 of each.
@compute @workgroup_size(64)
fn upsample2x_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n / 16u) {
        return;
    }
    let w4 = p.w / 4u;
    let q = i % w4;
    let v = x4[i];
    let lo = v.xxyy;
    let hi = v.zzww;
    // Output row 2r starts at vec4 (2r)·(2W / 4) = 4·r·w4 = 4·(i − q).
    let o = 4u * (i - q) + 2u * q;
    out4[o] = lo;
    out4[o + 1u] = hi;
    out4[o + 2u * w4] = lo;
    out4[o + 2u * w4 + 1u] = hi;
}

// One invocation per output vec4 (4 columns of one output row r): input rows
// 2r and 2r + 1, columns 8q … 8q + 7.
@compute @workgroup_size(64)
fn avgpool2x_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n / 4u) {
        return;
    }
    let w4 = p.w / 4u;
    let wo4 = w4 / 2u;
    let q = i % wo4;
    // Input row 2r starts at vec4 2r·w4 = 4·(i − q) (as w4 = 2·wo4).
    let k = 4u * (i - q) + 2u * q;
    let a = x4[k];
    let b = x4[k + 1u];
    let c = x4[k + w4];
    let d = x4[k + w4 + 1u];
    let top = vec4<f32>(a.x + a.y, a.z + a.w, b.x + b.y, b.z + b.w);
    let bottom = vec4<f32>(c.x + c.y, c.z + c.w, d.x + d.y, d.z + d.w);
    out4[i] = (top + bottom) * 0.25;
}
