// The backward of a row softmax P = softmax(S), in place over dP: for each row,
//   dS[r, j] = scale * P[r, j] (dP[r, j] - sum_k P[r, k] dP[r, k])
// (scale: the factor the scores were made with, so dS is the gradient of the unscaled product).
// One invocation per row, two passes over it; rows split over x and y past the grid limit.

struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    groups_x: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> probs: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn softmax_backward(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = (wg.x + wg.y * p.groups_x) * WG + li;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var d = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        d += probs[base + j] * grad[base + j];
    }
    for (var j = 0u; j < p.cols; j++) {
        grad[base + j] = p.scale * probs[base + j] * (grad[base + j] - d);
    }
}
