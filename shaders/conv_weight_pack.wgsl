// Repacks conv weights w[Cout, Cin, K, K] into the layout conv2d.wgsl reads:
// wt[(ci·K + ky)·K + kx][co], with Cout zero-padded to a multiple of 8 so every
// invocation's 8 output channels load as two aligned vec4.

struct Params {
    c_out: u32,
    c_in: u32,
    kk: u32,        // K·K
    c_out_pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> wt: array<f32>;

@compute @workgroup_size(64)
fn conv_weight_pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let rows = p.c_in * p.kk;
    if (i >= rows * p.c_out_pad) {
        return;
    }
    let co = i % p.c_out_pad;
    let r = i / p.c_out_pad;     // ci·K² + ky·K + kx
    var v = 0.0;
    if (co < p.c_out) {
        v = w[co * rows + r];
    }
    wt[i] = v;
}
