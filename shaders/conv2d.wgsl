// conv2d forward as an implicit GEMM: out[b, co, oy, ox] = bias[co] +
//   Σ_{ci, ky, kx} w[co, ci, ky, kx] · x[b, ci, oy·S + ky − P, ox·S + kx − P]   (zero outside)
//
// Each invocation owns 8 output channels × 8 consecutive output columns of one
// output row. For every (ci, ky) it loads the input row segment those 8 columns
// see once (7·S + K values) and reuses it for all K taps of the row; the weights
// come pre-packed by conv_weight_pack.wgsl as [ci, ky, kx][Cout padded to 8], so
// the 8 channels load as two vec4. KSIZE and STRIDE are pipeline constants, so
// the loops unroll and the row segment lives in registers.

override KSIZE: u32 = 3u;
override STRIDE: u32 = 1u;

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
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Longest row segment: 8 columns at stride 2 with a 3-wide kernel.
const ROW_MAX: u32 = 17u;

@compute @workgroup_size(64)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>) {
    let tile = gid.x;
    let co0 = gid.y * 8u;
    if (tile >= p.batch * p.h_out * p.tiles_x || co0 >= p.c_out) {
        return;
    }
    let tx = tile % p.tiles_x;
    let rest = tile / p.tiles_x;
    let oy = rest % p.h_out;
    let b = rest / p.h_out;
    let ox0 = tx * 8u;
    let ix0 = i32(ox0 * STRIDE) - i32(p.padding);
    let cop4 = p.c_out_pad / 4u;
    let wcol = co0 / 4u;
    let row_len = 7u * STRIDE + KSIZE;

    var lo: array<vec4<f32>, 8>;
    var hi: array<vec4<f32>, 8>;
    var row: array<f32, ROW_MAX>;
    for (var ci = 0u; ci < p.c_in; ci++) {
        let plane = (b * p.c_in + ci) * p.h * p.w;
        for (var ky = 0u; ky < KSIZE; ky++) {
            let iy = i32(oy * STRIDE + ky) - i32(p.padding);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            let rbase = plane + u32(iy) * p.w;
            for (var j = 0u; j < row_len; j++) {
                let ix = ix0 + i32(j);
                let inside = ix >= 0 && ix < i32(p.w);
                row[j] = select(0.0, x[rbase + u32(clamp(ix, 0, i32(p.w) - 1))], inside);
            }
            for (var kx = 0u; kx < KSIZE; kx++) {
                let wr = ((ci * KSIZE + ky) * KSIZE + kx) * cop4 + wcol;
                let wl = wt4[wr];
                let wh = wt4[wr + 1u];
                for (var i = 0u; i < 8u; i++) {
                    let v = row[i * STRIDE + kx];
                    lo[i] += v * wl;
                    hi[i] += v * wh;
                }
            }
        }
    }
    let plane_out = p.h_out * p.w_out;
    for (var c = 0u; c < 8u; c++) {
        let co = co0 + c;
        if (co >= p.c_out) {
            break;
        }
        var bv = 0.0;
        if (p.has_bias != 0u) {
            bv = bias[co];
        }
        let obase = (b * p.c_out + co) * plane_out + oy * p.w_out;
        for (var i = 0u; i < 8u; i++) {
            let ox = ox0 + i;
            if (ox >= p.w_out) {
                break;
            }
            var v: f32;
            if (c < 4u) {
                v = lo[i][c];
            } else {
                v = hi[i][c - 4u];
            }
            out[obase + ox] = v + bv;
        }
    }
}
