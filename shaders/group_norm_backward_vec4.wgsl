// group_norm_backward.wgsl's kernel (same parameters, bindings and sums) for
// S % 4 == 0, four elements at a time: aligned vec4 loads and stores, and
// gamma (and the channel index, a u32 division) once per vec4, which lies
// within one channel (see group_norm_vec4.wgsl for why it pays on lavapipe).
// Bindings: 1 = dx, 2 = x, 3 = gamma, 4 = stats [B, G, 2] (mean, rstd), 5 = dy.

struct Params {
    bg: u32,      // B·G
    groups: u32,  // G
    cg: u32,      // channels per group
    s: u32,       // spatial elements per channel (a multiple of 4 here)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read> dy4: array<vec4<f32>>;

const WG: u32 = 64u;

var<workgroup> sh_g: array<f32, 64>;
var<workgroup> sh_gx: array<f32, 64>;

@compute @workgroup_size(64)
fn group_norm_backward_dx_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let bg = wid.x + wid.y * nwg.x;
    if (bg >= p.bg) {
        return;
    }
    let n4 = p.cg * p.s / 4u;
    let s4 = p.s / 4u;
    let base = bg * n4;
    let mean = stats[2u * bg];
    let rstd = stats[2u * bg + 1u];
    let c0 = (bg % p.groups) * p.cg;

    var sg = 0.0;
    var sgx = 0.0;
    for (var j = lid; j < n4; j += WG) {
        let g = dy4[base + j] * gamma[c0 + j / s4];
        let xh = (x4[base + j] - vec4<f32>(mean)) * rstd;
        sg += (g.x + g.y) + (g.z + g.w);
        sgx += dot(g, xh);
    }
    sh_g[lid] = sg;
    sh_gx[lid] = sgx;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            sh_g[lid] += sh_g[lid + half];
            sh_gx[lid] += sh_gx[lid + half];
        }
        workgroupBarrier();
    }
    let inv_n = 1.0 / f32(max(4u * n4, 1u));
    let mean_g = sh_g[0] * inv_n;
    let mean_gx = sh_gx[0] * inv_n;
    for (var j = lid; j < n4; j += WG) {
        let g = dy4[base + j] * gamma[c0 + j / s4];
        let xh = (x4[base + j] - vec4<f32>(mean)) * rstd;
        dx4[base + j] = rstd * (g - vec4<f32>(mean_g) - xh * mean_gx);
    }
}
