// GroupNorm backward with respect to x, one workgroup per (sample, group) of
// N = Cg·S contiguous values. With x̂ = (x − mean)·rstd and g = dy·gamma[c]:
//   dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), means over the group.
// Each invocation sums its strided slice in registers, one tree reduction of
// the two sums (log2(64) barriers), then the workgroup writes dx.
// Bindings: 1 = dx, 2 = x, 3 = gamma, 4 = stats [B, G, 2] (mean, rstd), 5 = dy.

struct Params {
    bg: u32,      // B·G
    groups: u32,  // G
    cg: u32,      // channels per group
    s: u32,       // spatial elements per channel
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;

const WG: u32 = 64u;

var<workgroup> sh_g: array<f32, 64>;
var<workgroup> sh_gx: array<f32, 64>;

@compute @workgroup_size(64)
fn group_norm_backward_dx(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let bg = wid.x + wid.y * nwg.x;
    if (bg >= p.bg) {
        return;
    }
    let n = p.cg * p.s;
    let base = bg * n;
    let mean = stats[2u * bg];
    let rstd = stats[2u * bg + 1u];
    let c0 = (bg % p.groups) * p.cg;

    var sg = 0.0;
    var sgx = 0.0;
    for (var j = lid; j < n; j += WG) {
        let g = dy[base + j] * gamma[c0 + j / p.s];
        let xh = (x[base + j] - mean) * rstd;
        sg += g;
        sgx += g * xh;
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
    let inv_n = 1.0 / f32(max(n, 1u));
    let mean_g = sh_g[0] * inv_n;
    let mean_gx = sh_gx[0] * inv_n;
    for (var j = lid; j < n; j += WG) {
        let g = dy[base + j] * gamma[c0 + j / p.s];
        let xh = (x[base + j] - mean) * rstd;
        dx[base + j] = rstd * (g - mean_g - xh * mean_gx);
    }
}
