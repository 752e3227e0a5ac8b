// Fills a tensor with element i of a Philox stream: uniforms in (0, 1) or
// standard Gaussians, exactly as RngStream::fill_uniform / fill_normal on the
// CPU. One invocation per Philox block (4 elements). Needs philox.wgsl prepended.

struct Params {
    n: u32,
    normal: u32,     // 0: uniform, 1: Gaussian
    _p0: u32,
    _p1: u32,
    key: vec4<u32>,  // (seed lo, seed hi, stream lo, stream hi)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn rng_fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = gid.x + gid.y * nwg.x * 64u;
    if (blk * 4u >= p.n) {
        return;
    }
    let bits = rng_block(p.key.xy, p.key.zw, blk, 0u);
    var v: vec4<f32>;
    if (p.normal != 0u) {
        v = normals_from_block(bits);
    } else {
        v = vec4<f32>(uniform_from_bits(bits.x), uniform_from_bits(bits.y), uniform_from_bits(bits.z), uniform_from_bits(bits.w));
    }
    for (var l = 0u; l < 4u; l++) {
        let i = blk * 4u + l;
        if (i < p.n) {
            out[i] = v[l];
        }
    }
}
