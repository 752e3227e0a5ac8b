// group_norm_param_grad.wgsl's kernel (same parameters, bindings and sums)
// for S % 4 == 0, with aligned vec4 loads of dy and x (see
// group_norm_vec4.wgsl for why it pays on lavapipe).
// Bindings: 1 = dgamma, 2 = dbeta, 3 = x, 4 = stats [B, G, 2], 5 = dy.

struct Params {
    c: u32,       // channels C (workgroups of work)
    batch: u32,   // B
    cg: u32,      // channels per group
    s: u32,       // spatial elements per channel (a multiple of 4 here)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(3) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read> dy4: array<vec4<f32>>;

const WG: u32 = 64u;

var<workgroup> sh_gx: array<f32, 64>;
var<workgroup> sh_g: array<f32, 64>;

@compute @workgroup_size(64)
fn group_norm_param_grad_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= p.c) {
        return;
    }
    let groups = p.c / p.cg;
    let g = c / p.cg;
    let s4 = p.s / 4u;
    var dg = 0.0;
    var db = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        let st = 2u * (b * groups + g);
        let mean = stats[st];
        let rstd = stats[st + 1u];
        let base = (b * p.c + c) * s4;
        var dg_b = 0.0;
        var db_b = 0.0;
        for (var s = lid; s < s4; s += WG) {
            let d = dy4[base + s];
            dg_b += dot(d, (x4[base + s] - vec4<f32>(mean)) * rstd);
            db_b += (d.x + d.y) + (d.z + d.w);
        }
        dg += dg_b;
        db += db_b;
    }
    sh_gx[lid] = dg;
    sh_g[lid] = db;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            sh_gx[lid] += sh_gx[lid + half];
            sh_g[lid] += sh_g[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        dgamma[c] = sh_gx[0];
        dbeta[c] = sh_g[0];
    }
}
