// Squared norms without float atomics, in two levels: sum_squares_partial
// runs G workgroups (G ≤ 4096, chosen so each invocation sums ≤ ~16 values
// for tensors up to 4M elements); invocation k of the grid sums x² over
// i = k, k + 64·G, … in a register, then each workgroup tree-reduces its 64
// sums in workgroup memory into partials[wg]. sum_partials (one workgroup)
// then adds the G partials, and optionally an accumulator, into out[0].
// Everything stays on the device: out is a 1-element tensor.

const WG: u32 = 64u;

var<workgroup> scratch: array<f32, 64>;

// Tree reduction of the workgroup's 64 values; the result is in scratch[0].
fn tree_reduce(lid: u32, v: f32) {
    scratch[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            scratch[lid] += scratch[lid + half];
        }
        workgroupBarrier();
    }
}

struct Params {
    n: u32,           // sum_squares_partial: elements of x; sum_partials: partials to add
    accumulate: u32,  // sum_partials: 1 to also add acc_in[0]
    offset: u32,      // sum_squares_partial: where its partials start in out
    _p1: u32,
}

// Bindings: 1 = output (partials, or the total), 2 = input (x, or the
// partials), 3 = accumulator (sum_partials only; read-only).
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> acc_in: array<f32>;

// partials[offset + wg] = Σ x[i]² over the workgroup's share (grid-strided),
// 1-D grid in x. The offset lets many tensors' partials share one buffer
// and one sum_partials (the squared global norm of all gradients).
@compute @workgroup_size(64)
fn sum_squares_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let stride = nwg.x * WG;
    var acc = 0.0;
    for (var i = wid.x * WG + lid; i < p.n; i += stride) {
        let v = x[i];
        acc += v * v;
    }
    tree_reduce(lid, acc);
    if (lid == 0u) {
        out[p.offset + wid.x] = scratch[0];
    }
}

// out[0] = Σ x[0..n] (+ acc_in[0]): the partials' total; one workgroup.
@compute @workgroup_size(64)
fn sum_partials(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        acc += x[i];
    }
    tree_reduce(lid, acc);
    if (lid == 0u) {
        var t = scratch[0];
        if (p.accumulate != 0u) {
            t += acc_in[0];
        }
        out[0] = t;
    }
}
