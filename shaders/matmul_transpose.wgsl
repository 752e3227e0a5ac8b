// at[k, m] = a[m, k], with the m axis zero-padded to `m_pad` (a multiple of 8),
// so matmul.wgsl can load 8 rows of A at one k as two aligned vec4.

struct Params {
    m: u32,
    k: u32,
    m_pad: u32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> at: array<f32>;

@compute @workgroup_size(64)
fn matmul_transpose(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.k * p.m_pad) {
        return;
    }
    let m = i % p.m_pad;
    let k = i / p.m_pad;
    var v = 0.0;
    if (m < p.m) {
        v = a[m * p.k + k];
    }
    at[i] = v;
}
