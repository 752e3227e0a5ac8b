// FIR ×2 resampling with the [1,3,3,1] kernel (NCSN++'s upfirdn2d), per NCHW
// plane, zero outside the input. One invocation per output element on the
// 1-D grid of gpu::grid_1d. Bindings: 1 = output, 2 = input.
//
// fir_up: zero insertion, k⊗k with k = [1,3,3,1]/8, gain 4, pads (2, 1). Per
// axis that is out[2q] = (x[q-1] + 3x[q])/4, out[2q+1] = (3x[q] + x[q+1])/4.
// Times 1/4 it is the adjoint of fir_down (fir_down_backward).
//
// fir_down: k⊗k, pads (1, 1), every second sample. Per axis
// out[o] = (x[2o-1] + 3x[2o] + 3x[2o+1] + x[2o+2])/8.
// Times 4 it is the adjoint of fir_up (fir_up_backward).

struct Params {
    n: u32,      // output elements
    h: u32,      // input height
    w: u32,      // input width
    scale: f32,  // overall factor (1 for the forwards)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// [.., H, W] -> [.., 2H, 2W]
@compute @workgroup_size(64)
fn fir_up(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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
    let base = plane * p.h * p.w;
    let qy = i32(oy / 2u) - i32(1u - (oy & 1u));
    let qx = i32(ox / 2u) - i32(1u - (ox & 1u));
    // weights of taps (q, q + 1): even outputs (1/4, 3/4), odd (3/4, 1/4)
    var wy = vec2<f32>(0.75, 0.25);
    if ((oy & 1u) == 0u) {
        wy = vec2<f32>(0.25, 0.75);
    }
    var wx = vec2<f32>(0.75, 0.25);
    if ((ox & 1u) == 0u) {
        wx = vec2<f32>(0.25, 0.75);
    }
    var acc = 0.0;
    for (var dy = 0; dy < 2; dy++) {
        let iy = qy + dy;
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        var row = 0.0;
        for (var dx = 0; dx < 2; dx++) {
            let ix = qx + dx;
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            row += wx[dx] * x[base + u32(iy) * p.w + u32(ix)];
        }
        acc += wy[dy] * row;
    }
    out[i] = p.scale * acc;
}

// [.., H, W] -> [.., H/2, W/2] (H, W even)
@compute @workgroup_size(64)
fn fir_down(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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
    let base = plane * p.h * p.w;
    let k = vec4<f32>(0.125, 0.375, 0.375, 0.125);
    let y0 = 2 * i32(oy) - 1;
    let x0 = 2 * i32(ox) - 1;
    var acc = 0.0;
    for (var ty = 0; ty < 4; ty++) {
        let iy = y0 + ty;
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        var row = 0.0;
        for (var tx = 0; tx < 4; tx++) {
            let ix = x0 + tx;
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            row += k[tx] * x[base + u32(iy) * p.w + u32(ix)];
        }
        acc += k[ty] * row;
    }
    out[i] = p.scale * acc;
}
