// Inverted-dropout mask: element i is `scale` (= 1/(1 − p), computed on the
// host in f32) if uniform(i) ≥ p, else 0, with uniform(i) element i of the
// Philox stream exactly as RngStream::uniform on the CPU. One invocation per
// Philox block (4 elements), as in rng_fill.wgsl. Needs philox.wgsl prepended.
// Bindings: 1 = mask.

struct Params {
    n: u32,
    p: f32,          // drop probability
    scale: f32,      // kept value
    _p0: u32,
    key: vec4<u32>,  // (seed lo, seed hi, stream lo, stream hi)
}

@group(0) @binding(0) var<uniform> prm: Params;
@group(0) @binding(1) var<storage, read_write> mask: array<f32>;

@compute @workgroup_size(64)
fn dropout_mask(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = gid.x + gid.y * nwg.x * 64u;
    let blocks = prm.n / 4u + select(0u, 1u, (prm.n & 3u) != 0u);
    if (blk >= blocks) {
        return;
    }
    let bits = rng_block(prm.key.xy, prm.key.zw, blk, 0u);
    for (var l = 0u; l < 4u; l++) {
        let i = blk * 4u + l;
        if (i < prm.n) {
            let u = uniform_from_bits(bits[l]);
            mask[i] = select(0.0, prm.scale, u >= prm.p);
        }
    }
}
