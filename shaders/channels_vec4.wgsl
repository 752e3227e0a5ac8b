// channels.wgsl's concat and slice four elements at a time, where every row
// length and offset is a multiple of 4 (S·C % 4 == 0: any plane of a multiple
// of 4 positions): aligned vec4 copies and one u32 division per 4 elements,
// where the scalar kernels do one of each per element (on lavapipe both cost
// one lane at a time). Copies, so the same values bit for bit.
// Bindings: 1 = output, 2 = first input, 3 = second input (concat only).

struct Params {
    n: u32,     // output elements
    row_a: u32, // concat: Ca·S; slice: output row length Cout·S
    row_b: u32, // concat: Cb·S; slice: input row length C·S
    off: u32,   // slice: first channel's offset in the input row, c0·S
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

@compute @workgroup_size(64)
fn concat_channels_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n / 4u) {
        return;
    }
    let ra = p.row_a / 4u;
    let rb = p.row_b / 4u;
    let n = i / (ra + rb);
    let r = i - n * (ra + rb);
    if (r < ra) {
        out4[i] = a4[n * ra + r];
    } else {
        out4[i] = b4[n * rb + (r - ra)];
    }
}

@compute @workgroup_size(64)
fn slice_channels_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n / 4u) {
        return;
    }
    let ra = p.row_a / 4u;
    let n = i / ra;
    let r = i - n * ra;
    out4[i] = a4[n * (p.row_b / 4u) + p.off / 4u + r];
}
