// Channel concatenation and slicing of [B, C, …] tensors, viewed as B rows of
// C·S contiguous values (S = spatial elements per channel). One invocation per
// output element on the 1-D grid of gpu::grid_1d.
// Bindings: 1 = output, 2 = first input, 3 = second input (concat only).

struct Params {
    n: u32,     // output elements
    row_a: u32, // concat: Ca·S; slice: output row length Cout·S
    row_b: u32, // concat: Cb·S; slice: input row length C·S
    off: u32,   // slice: first channel's offset in the input row, c0·S
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// out[n] = a[n] ++ b[n] along the channel axis
@compute @workgroup_size(64)
fn concat_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let row = p.row_a + p.row_b;
    let n = i / row;
    let r = i - n * row;
    if (r < p.row_a) {
        out[i] = a[n * p.row_a + r];
    } else {
        out[i] = b[n * p.row_b + (r - p.row_a)];
    }
}

// out[n] = a[n][c0 .. c0 + Cout] along the channel axis
@compute @workgroup_size(64)
fn slice_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let n = i / p.row_a;
    let r = i - n * p.row_a;
    out[i] = a[n * p.row_b + p.off + r];
}
