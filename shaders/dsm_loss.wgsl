// Denoising-score-matching loss, fused with its gradient. One pass, on G
// workgroups (G ≤ 4096) striding over the flat [B·D] tensor: element i of
// sample b = i / D has residual r = sign·out[i] + z[i]; the invocation writes
// dout[i] = g_b·r and adds c_b·r² to a register, then the workgroup tree-
// reduces into partials[wg] (summed by sum_squares.wgsl's sum_partials).
// (c_b, g_b) per sample come from the host: c_b = w_b/(B·D) or w_b/(2B),
// g_b = sign·w_b·2/(B·D) or sign·w_b/B, so loss = Σ_b c_b Σ r².

struct Params {
    n: u32,      // B·D
    d: u32,      // elements per sample
    sign: f32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> dout: array<f32>;
@group(0) @binding(3) var<storage, read> out: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
@group(0) @binding(5) var<storage, read> factors: array<vec2<f32>>;

const WG: u32 = 64u;

var<workgroup> scratch: array<f32, 64>;

@compute @workgroup_size(64)
fn dsm_loss_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let stride = nwg.x * WG;
    var acc = 0.0;
    for (var i = wid.x * WG + lid; i < p.n; i += stride) {
        let f = factors[i / p.d];
        let r = p.sign * out[i] + z[i];
        dout[i] = f.y * r;
        acc += f.x * (r * r);
    }
    scratch[lid] = acc;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            scratch[lid] += scratch[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        partials[wid.x] = scratch[0];
    }
}
