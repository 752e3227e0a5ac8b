// conv2d forward as an implicit GEMM through workgroup memory: the tiled
// family beside conv2d.wgsl's register-blocked kernels. C[co, pos] = Σ_r
// W[r, co] · X[r, pos] with r = (ci, ky, kx) and pos = (b, oy, ox): a
// workgroup of 16×16 invocations owns 64 output channels × 64 output
// positions; per 16 rows of r it stages the packed weights (from
// conv_weight_pack.wgsl, [r][Cout padded to 8]) and the im2col slab of the
// input (gathered, zero outside the image) in workgroup memory, and each
// invocation does 4 channels × 4 positions from there. KSIZE and STRIDE are
// pipeline constants.

struct Params {
    batch: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    c_out_pad: u32,
    h_out: u32,
    w_out: u32,
    padding: u32,
    tiles_x: u32,
    has_bias: u32,
    has_sample_bias: u32,
    has_residual: u32,
    has_scale: u32,
    scale: f32,
    _pad: u32,
}

override KSIZE: u32 = 3u;
override STRIDE: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> sample_bias: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<f32>;

// The fused epilogue: scale·(acc + bias[co] + sample_bias[b, co] + residual),
// each part only when its flag is set.
fn epilogue(acc: f32, b: u32, co: u32, idx: u32) -> f32 {
    var v = acc;
    if (p.has_bias != 0u) {
        v += bias[co];
    }
    if (p.has_sample_bias != 0u) {
        v += sample_bias[b * p.c_out + co];
    }
    if (p.has_residual != 0u) {
        v += residual[idx];
    }
    if (p.has_scale != 0u) {
        v *= p.scale;
    }
    return v;
}

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
const SIDE: u32 = 16u;

// Both k-major ([TILE_K][TILE]).
var<workgroup> w_tile: array<f32, 1024>;
var<workgroup> x_tile: array<f32, 1024>;

// The input value row `r` of the im2col matrix holds at output position `pos`.
fn im2col(r: u32, pos: u32) -> f32 {
    let kk = KSIZE * KSIZE;
    let ci = r / kk;
    let tap = r % kk;
    let ox = pos % p.w_out;
    let rest = pos / p.w_out;
    let oy = rest % p.h_out;
    let b = rest / p.h_out;
    let iy = i32(oy * STRIDE + tap / KSIZE) - i32(p.padding);
    let ix = i32(ox * STRIDE + tap % KSIZE) - i32(p.padding);
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return x[((b * p.c_in + ci) * p.h + u32(iy)) * p.w + u32(ix)];
}

fn stage(t: u32, co0: u32, pos0: u32, r0: u32, rows: u32, n_pos: u32) {
    for (var j = 0u; j < 4u; j++) {
        let e = t + j * SIDE * SIDE;
        let kk = e / TILE;
        let col = e % TILE;
        let r = r0 + kk;
        var wv = 0.0;
        if (r < rows && co0 + col < p.c_out) {
            wv = wt[r * p.c_out_pad + co0 + col];
        }
        w_tile[kk * TILE + col] = wv;
        var xv = 0.0;
        if (r < rows && pos0 + col < n_pos) {
            xv = im2col(r, pos0 + col);
        }
        x_tile[kk * TILE + col] = xv;
    }
}

fn store(co: u32, pos0: u32, n_pos: u32, v: vec4<f32>) {
    if (co >= p.c_out) {
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        let pos = pos0 + i;
        if (pos < n_pos) {
            let ox = pos % p.w_out;
            let rest = pos / p.w_out;
            let oy = rest % p.h_out;
            let b = rest / p.h_out;
            let idx = ((b * p.c_out + co) * p.h_out + oy) * p.w_out + ox;
            out[idx] = epilogue(v[i], b, co, idx);
        }
    }
}

@compute @workgroup_size(16, 16)
fn conv2d_tiled(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let t = lid.y * SIDE + lid.x;
    let co0 = wid.y * TILE;
    let pos0 = wid.x * TILE;
    let n_pos = p.batch * p.h_out * p.w_out;
    let rows = p.c_in * KSIZE * KSIZE;
    let mi = lid.y * 4u;
    let ni = lid.x * 4u;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    // Uniform control flow: every invocation takes every step and barrier.
    for (var r0 = 0u; r0 < rows; r0 += TILE_K) {
        stage(t, co0, pos0, r0, rows, n_pos);
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let wb = kk * TILE + mi;
            let xb = kk * TILE + ni;
            let wv = vec4<f32>(w_tile[wb], w_tile[wb + 1u], w_tile[wb + 2u], w_tile[wb + 3u]);
            let xv = vec4<f32>(x_tile[xb], x_tile[xb + 1u], x_tile[xb + 2u], x_tile[xb + 3u]);
            c0 = fma(vec4<f32>(wv.x), xv, c0);
            c1 = fma(vec4<f32>(wv.y), xv, c1);
            c2 = fma(vec4<f32>(wv.z), xv, c2);
            c3 = fma(vec4<f32>(wv.w), xv, c3);
        }
        workgroupBarrier();
    }
    store(co0 + mi, pos0 + ni, n_pos, c0);
    store(co0 + mi + 1u, pos0 + ni, n_pos, c1);
    store(co0 + mi + 2u, pos0 + ni, n_pos, c2);
    store(co0 + mi + 3u, pos0 + ni, n_pos, c3);
}
