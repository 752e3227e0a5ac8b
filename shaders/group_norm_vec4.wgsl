// group_norm.wgsl's kernels (same parameters, bindings, sums and statistics)
// for S % 4 == 0, four elements at a time: aligned vec4 loads and stores, and
// each vec4 within one channel, so its gamma and beta (and the channel index,
// a u32 division) are fetched once per 4 elements instead of per element. On
// lavapipe every storage access at an offset that is not a compile-time
// constant, and every u32 division by a uniform, costs one lane at a time:
// those, not the arithmetic, bound the scalar kernels.
// Bindings: 1 = y, 2 = stats, 3 = x, 4 = gamma, 5 = beta, 6 = dy (silu_grad).

struct Params {
    bg: u32,      // B·G workgroups of work
    groups: u32,  // G
    cg: u32,      // channels per group
    s: u32,       // spatial elements per channel (a multiple of 4 here)
    eps: f32,
    act: u32,     // 0: identity, 1: SiLU
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read> dy4: array<vec4<f32>>;

const WG: u32 = 64u;

var<workgroup> sh_n: array<f32, 64>;
var<workgroup> sh_mean: array<f32, 64>;
var<workgroup> sh_m2: array<f32, 64>;

@compute @workgroup_size(64)
fn group_norm_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let bg = wid.x + wid.y * nwg.x;
    if (bg >= p.bg) {
        return;
    }
    let n4 = p.cg * p.s / 4u;
    let base = bg * n4;

    var cnt = 0u;
    var sum = 0.0;
    for (var j = lid; j < n4; j += WG) {
        let v = x4[base + j];
        sum += (v.x + v.y) + (v.z + v.w);
        cnt += 4u;
    }
    var mean = 0.0;
    if (cnt > 0u) {
        mean = sum / f32(cnt);
    }
    var m2 = 0.0;
    for (var j = lid; j < n4; j += WG) {
        let d = x4[base + j] - vec4<f32>(mean);
        m2 += dot(d, d);
    }
    sh_n[lid] = f32(cnt);
    sh_mean[lid] = mean;
    sh_m2[lid] = m2;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            let na = sh_n[lid];
            let nb = sh_n[lid + half];
            let nt = na + nb;
            if (nb > 0.0) {
                let delta = sh_mean[lid + half] - sh_mean[lid];
                sh_mean[lid] += delta * (nb / nt);
                sh_m2[lid] += sh_m2[lid + half] + delta * delta * (na * (nb / nt));
                sh_n[lid] = nt;
            }
        }
        workgroupBarrier();
    }
    let g_mean = sh_mean[0];
    var variance = 0.0;
    if (n4 > 0u) {
        variance = sh_m2[0] / f32(4u * n4);
    }
    let rstd = 1.0 / sqrt(variance + p.eps);
    if (lid == 0u) {
        stats[2u * bg] = g_mean;
        stats[2u * bg + 1u] = rstd;
    }
    let s4 = p.s / 4u;
    let c0 = (bg % p.groups) * p.cg;
    for (var j = lid; j < n4; j += WG) {
        let c = c0 + j / s4;
        let h = (x4[base + j] - vec4<f32>(g_mean)) * rstd * gamma[c] + beta[c];
        if (p.act == 1u) {
            y4[base + j] = h / (1.0 + exp(-h));
        } else {
            y4[base + j] = h;
        }
    }
}

// The fused norm + SiLU's backward up to the norm, 4 elements per invocation:
// y = dy·silu'(h), h = (x − mean)·rstd·gamma[c] + beta[c] from the saved stats.
@compute @workgroup_size(64)
fn group_norm_silu_grad_vec4(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let n4 = p.cg * p.s / 4u;
    if (i >= p.bg * n4) {
        return;
    }
    let bg = i / n4;
    let c = (bg % p.groups) * p.cg + (i - bg * n4) / (p.s / 4u);
    let h = (x4[i] - vec4<f32>(stats[2u * bg])) * stats[2u * bg + 1u] * gamma[c] + beta[c];
    let sg = 1.0 / (1.0 + exp(-h));
    y4[i] = dy4[i] * sg * (1.0 + h * (1.0 - sg));
}
