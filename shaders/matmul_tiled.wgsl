// C[M, N] = A[M, K] · B[K, N], f32, any shape: the workgroup-memory tiled
// family beside the register-blocked matmul.wgsl. A workgroup of 16×16
// invocations owns a 64×64 tile of C; per 16-wide step of K it stages a 64×16
// slab of A and a 16×64 slab of B in workgroup memory (four loads each per
// invocation, zero past the edges), then each invocation does 4×4 outputs
// from there. On a discrete GPU the staging turns 64 global reads per value
// into one; on lavapipe the barriers cost more (the autotuner decides).
// A and B are read as given (row-major), so no transposed copy is needed.

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

const TILE: u32 = 64u;     // rows and columns of C per workgroup
const TILE_K: u32 = 16u;   // K per staging step
const SIDE: u32 = 16u;     // invocations per side; each owns 4×4 outputs

// Both slabs k-major ([TILE_K][TILE]): an invocation's 4 rows (or columns)
// for one k are then adjacent.
var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> b_tile: array<f32, 1024>;

fn stage(t: u32, m0: u32, n0: u32, k0: u32) {
    for (var j = 0u; j < 4u; j++) {
        let e = t + j * SIDE * SIDE;
        // A: element e of the 64×16 slab, row-major so adjacent lanes read adjacent k.
        let r = e / TILE_K;
        let ka = e % TILE_K;
        var av = 0.0;
        if (m0 + r < p.m && k0 + ka < p.k) {
            av = a[(m0 + r) * p.k + k0 + ka];
        }
        a_tile[ka * TILE + r] = av;
        // B: element e of the 16×64 slab, adjacent lanes read adjacent columns.
        let kb = e / TILE;
        let col = e % TILE;
        var bv = 0.0;
        if (k0 + kb < p.k && n0 + col < p.n) {
            bv = b[(k0 + kb) * p.n + n0 + col];
        }
        b_tile[kb * TILE + col] = bv;
    }
}

fn store_row(m: u32, n0: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    let base = m * p.n;
    for (var i = 0u; i < 4u; i++) {
        if (n0 + i < p.n) {
            c[base + n0 + i] = v[i];
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul_tiled(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let t = lid.y * SIDE + lid.x;
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    let mi = lid.y * 4u;
    let ni = lid.x * 4u;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    // Uniform control flow: every invocation takes every step and barrier.
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        stage(t, m0, n0, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let ab = kk * TILE + mi;
            let bb = kk * TILE + ni;
            let av = vec4<f32>(a_tile[ab], a_tile[ab + 1u], a_tile[ab + 2u], a_tile[ab + 3u]);
            let bv = vec4<f32>(b_tile[bb], b_tile[bb + 1u], b_tile[bb + 2u], b_tile[bb + 3u]);
            c0 = fma(vec4<f32>(av.x), bv, c0);
            c1 = fma(vec4<f32>(av.y), bv, c1);
            c2 = fma(vec4<f32>(av.z), bv, c2);
            c3 = fma(vec4<f32>(av.w), bv, c3);
        }
        workgroupBarrier();
    }
    store_row(m0 + mi, n0 + ni, c0);
    store_row(m0 + mi + 1u, n0 + ni, c1);
    store_row(m0 + mi + 2u, n0 + ni, c2);
    store_row(m0 + mi + 3u, n0 + ni, c3);
}
