// C[M, N] = A[M, K] · B[K, N], row-major f32.
//
// Each invocation owns an 8×8 block of C held in registers (16 vec4 accumulators)
// and walks K four at a time, loading A as vec4 along K and B as vec4 along N:
// 16 vec4 loads feed 256 multiply-adds. On lavapipe (LLVM, one invocation per SIMD
// lane) big register blocks and vector loads beat workgroup-memory tiling, whose
// barriers are costly on a CPU. Needs K % 4 == 0 and N % 4 == 0; `matmul_any`
// below covers other shapes.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(64)
fn matmul_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 8u;
    let m0 = gid.y * 8u;
    if (n0 >= p.n || m0 >= p.m) {
        return;
    }
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    // Rows past M and the second half-block past N read clamped (valid) addresses
    // and are dropped at the store, so the loop stays branch-free.
    var arow: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        arow[i] = min(m0 + i, p.m - 1u) * k4;
    }
    let bcol0 = n0 / 4u;
    let bcol1 = min(bcol0 + 1u, n4 - 1u);

    var lo: array<vec4<f32>, 8>;
    var hi: array<vec4<f32>, 8>;
    for (var kk = 0u; kk < k4; kk++) {
        let r = kk * 4u * n4;
        let b0l = b4[r + bcol0];
        let b0h = b4[r + bcol1];
        let b1l = b4[r + n4 + bcol0];
        let b1h = b4[r + n4 + bcol1];
        let b2l = b4[r + 2u * n4 + bcol0];
        let b2h = b4[r + 2u * n4 + bcol1];
        let b3l = b4[r + 3u * n4 + bcol0];
        let b3h = b4[r + 3u * n4 + bcol1];
        for (var i = 0u; i < 8u; i++) {
            let a = a4[arow[i] + kk];
            lo[i] += a.x * b0l + a.y * b1l + a.z * b2l + a.w * b3l;
            hi[i] += a.x * b0h + a.y * b1h + a.z * b2h + a.w * b3h;
        }
    }
    for (var i = 0u; i < 8u; i++) {
        let m = m0 + i;
        if (m >= p.m) {
            break;
        }
        let base = m * p.n + n0;
        for (var j = 0u; j < 4u; j++) {
            c[base + j] = lo[i][j];
        }
        if (n0 + 4u < p.n) {
            for (var j = 0u; j < 4u; j++) {
                c[base + 4u + j] = hi[i][j];
            }
        }
    }
}
