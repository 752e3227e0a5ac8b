// Nearest-neighbour ×2 upsampling and 2×2 average pooling of NCHW tensors.
// One invocation per output element on the 1-D grid of gpu::grid_1d.
// Bindings: 1 = output, 2 = input.

struct Params {
    n: u32,  // output elements
    h: u32,  // input height
    w: u32,  // input width
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// [.., H, W] -> [.., 2H, 2W], out[oy, ox] = x[oy / 2, ox / 2]
@compute @workgroup_size(64)
fn upsample2x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let wo = 2u * p.w;
    let ho = 2u * p.h;
    let ox = i % wo;
    let t = i / wo;
    let oy = t % ho;
    let plane = t / ho;
    out[i] = x[(plane * p.h + oy / 2u) * p.w + ox / 2u];
}

// [.., H, W] -> [.., H/2, W/2] (H, W even), the mean of each 2×2 block
@compute @workgroup_size(64)
fn avgpool2x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let wo = p.w / 2u;
    let ho = p.h / 2u;
    let ox = i % wo;
    let t = i / wo;
    let oy = t % ho;
    let plane = t / ho;
    let k = (plane * p.h + 2u * oy) * p.w + 2u * ox;
    out[i] = ((x[k] + x[k + 1u]) + (x[k + p.w] + x[k + p.w + 1u])) * 0.25;
}
