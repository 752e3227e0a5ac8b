// SDE noise injection: z ~ N(0, I) from the sample's Philox stream, x_t = μ·x0 + σ·z.
// One invocation per Philox block (4 consecutive elements of one sample), so the
// numbers equal the CPU's RngStream::fill_normal exactly.
// Needs philox.wgsl prepended.

struct Params {
    d: u32,       // elements per sample
    batch: u32,
    _p0: u32,
    _p1: u32,
}

struct Coef {
    mu: f32,
    sigma: f32,
    _p0: f32,
    _p1: f32,
    key: vec4<u32>,   // (seed lo, seed hi, stream lo, stream hi) of the sample's derived stream
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> coef: array<Coef>;
@group(0) @binding(2) var<storage, read> x0: array<f32>;
@group(0) @binding(3) var<storage, read_write> xt: array<f32>;
@group(0) @binding(4) var<storage, read_write> z: array<f32>;

@compute @workgroup_size(64)
fn perturb(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let blocks = (p.d + 3u) / 4u;
    let t = gid.x + gid.y * nwg.x * 64u;
    if (t >= blocks * p.batch) {
        return;
    }
    let b = t / blocks;
    let blk = t % blocks;
    let c = coef[b];
    let g = normals_from_block(rng_block(c.key.xy, c.key.zw, blk, 0u));
    for (var l = 0u; l < 4u; l++) {
        let j = blk * 4u + l;
        if (j >= p.d) {
            break;
        }
        let i = b * p.d + j;
        z[i] = g[l];
        xt[i] = c.mu * x0[i] + c.sigma * g[l];
    }
}
