// GroupNorm forward, one workgroup per (sample, group); the group is N = Cg·S
// contiguous values. Each invocation takes a strided slice, computes its mean
// and sum of squared deviations in two passes over it (registers only), then
// the slices are merged with Chan's pairwise formula in one tree reduction
// (log2(64) barriers) — no E[x²] − E[x]² cancellation. The same workgroup then
// writes y = (x − mean)·rstd·gamma[c] + beta[c] (its SiLU when act = 1: the
// U-net's norm → activation pairs in one pass) and stats [B, G, 2] = (mean, rstd).
// Bindings: 1 = y, 2 = stats, 3 = x, 4 = gamma, 5 = beta.
// `group_norm_silu_grad`: the fused op's backward up to the norm, one element
// per invocation: y = dy·silu'(h), h = (x − mean)·rstd·gamma[c] + beta[c]
// recomputed from the saved stats; binding 6 = dy.

struct Params {
    bg: u32,      // B·G workgroups of work
    groups: u32,  // G
    cg: u32,      // channels per group
    s: u32,       // spatial elements per channel
    eps: f32,
    act: u32,     // 0: identity, 1: SiLU
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<f32>;

const WG: u32 = 64u;

var<workgroup> sh_n: array<f32, 64>;
var<workgroup> sh_mean: array<f32, 64>;
var<workgroup> sh_m2: array<f32, 64>;

@compute @workgroup_size(64)
fn group_norm(
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

    var cnt = 0u;
    var sum = 0.0;
    for (var j = lid; j < n; j += WG) {
        sum += x[base + j];
        cnt += 1u;
    }
    var mean = 0.0;
    if (cnt > 0u) {
        mean = sum / f32(cnt);
    }
    var m2 = 0.0;
    for (var j = lid; j < n; j += WG) {
        let d = x[base + j] - mean;
        m2 += d * d;
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
    if (n > 0u) {
        variance = sh_m2[0] / f32(n);
    }
    let rstd = 1.0 / sqrt(variance + p.eps);
    if (lid == 0u) {
        stats[2u * bg] = g_mean;
        stats[2u * bg + 1u] = rstd;
    }
    let c0 = (bg % p.groups) * p.cg;
    for (var j = lid; j < n; j += WG) {
        let c = c0 + j / p.s;
        let h = (x[base + j] - g_mean) * rstd * gamma[c] + beta[c];
        if (p.act == 1u) {
            y[base + j] = h / (1.0 + exp(-h));
        } else {
            y[base + j] = h;
        }
    }
}

@compute @workgroup_size(64)
fn group_norm_silu_grad(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let n = p.cg * p.s;
    if (i >= p.bg * n) {
        return;
    }
    let bg = i / n;
    let c = (bg % p.groups) * p.cg + (i % n) / p.s;
    let h = (x[i] - stats[2u * bg]) * stats[2u * bg + 1u] * gamma[c] + beta[c];
    let sg = 1.0 / (1.0 + exp(-h));
    y[i] = dy[i] * sg * (1.0 + h * (1.0 - sg));
}
