// strided_pack.wgsl's view (out[t, r, j] = src[base + t·s_batch + r·s_row +
// j·s_col], zero-padded to cols_pad) where rows are contiguous (s_row = 1)
// and every vec4 of 4 rows is aligned (rows, base, s_batch and s_col
// multiples of 4): one invocation reads 4 rows of 4 columns as 4 vec4 and
// writes them transposed as 4 vec4, so each load brings 4 elements instead
// of 1 (on lavapipe every load at a computed offset runs one lane at a
// time). x: (4-row block, vec4 of columns) pairs, columns fastest. The conv
// weight gradient's channels-last dy and x are such views.

struct Params {
    batch: u32,
    rows: u32,
    cols: u32,
    cols_pad: u32,
    base: u32,
    s_batch: u32,
    s_row: u32,
    s_col: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn strided_pack_rows4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let cp4 = p.cols_pad / 4u;
    let rb = p.rows / 4u;
    if (i >= p.batch * rb * cp4) {
        return;
    }
    let j0 = (i % cp4) * 4u;
    let rest = i / cp4;
    let r0 = (rest % rb) * 4u;
    let t = rest / rb;
    let at = (p.base + t * p.s_batch + r0 + j0 * p.s_col) / 4u;
    let s4 = p.s_col / 4u;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    if (j0 < p.cols) {
        c0 = src4[at];
    }
    if (j0 + 1u < p.cols) {
        c1 = src4[at + s4];
    }
    if (j0 + 2u < p.cols) {
        c2 = src4[at + 2u * s4];
    }
    if (j0 + 3u < p.cols) {
        c3 = src4[at + 3u * s4];
    }
    let o = (t * p.rows + r0) * cp4 + j0 / 4u;
    dst4[o] = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
    dst4[o + cp4] = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
    dst4[o + 2u * cp4] = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
    dst4[o + 3u * cp4] = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
}
