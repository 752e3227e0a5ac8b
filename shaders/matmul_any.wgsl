// C[M, N] = A[M, K] · B[K, N] for any shape (odd K or N): 4×4 register blocks,
// scalar loads with bounds checks. The fast path is matmul.wgsl.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(64)
fn matmul_any(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 4u;
    let m0 = gid.y * 4u;
    if (n0 >= p.n || m0 >= p.m) {
        return;
    }
    var acc: array<vec4<f32>, 4>;
    var arow: array<u32, 4>;
    var bcol: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        arow[i] = min(m0 + i, p.m - 1u) * p.k;
        bcol[i] = min(n0 + i, p.n - 1u);
    }
    for (var kk = 0u; kk < p.k; kk++) {
        let r = kk * p.n;
        let bv = vec4<f32>(b[r + bcol[0]], b[r + bcol[1]], b[r + bcol[2]], b[r + bcol[3]]);
        for (var i = 0u; i < 4u; i++) {
            acc[i] += a[arow[i] + kk] * bv;
        }
    }
    for (var i = 0u; i < 4u; i++) {
        if (m0 + i >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            if (n0 + j < p.n) {
                c[(m0 + i) * p.n + n0 + j] = acc[i][j];
            }
        }
    }
}
