// Split-K conv2d, second pass: sums the partial outputs of the input-channel splits (written by
// conv2d_subgroup.wgsl with SPLIT) and applies the fused epilogue once:
//   out[i] = (sum_s partials[s * split_len + i] + bias[co] + chan_add[n, co] + residual[i]) * scale

struct Params {
    len: u32,       // output floats
    splits: u32,
    split_len: u32, // floats between two splits' partial outputs
    hw: u32,        // output pixels per channel
    cout: u32,
    groups_x: u32,  // workgroups along x, for launches split over x and y
    scale: f32,
    _pad: u32,
}

override HAS_BIAS: bool = true;
override HAS_CHANNEL_ADD: bool = false;
override HAS_RESIDUAL: bool = false;
const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read> chan_add: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn conv2d_reduce(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * WG + li;
    if (i >= p.len) {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += partials[s * p.split_len + i];
    }
    let co = (i / p.hw) % p.cout;
    if (HAS_BIAS) { sum += bias[co]; }
    if (HAS_CHANNEL_ADD) { sum += chan_add[(i / (p.hw * p.cout)) * p.cout + co]; }
    if (HAS_RESIDUAL) { sum += residual[i]; }
    out[i] = sum * p.scale;
}
