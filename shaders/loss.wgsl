// Deterministic two-pass sums: the mean squared error of a prediction, and a gradient's sum of
// squares (for clipping by global norm). Pass 1 has each workgroup sum its own contiguous range
// into one partial ((a - b)^2 for the loss, a^2 for the norm), pass 2 (one workgroup, MODE 0) sums
// the partials, scales them (1 / numel for the loss) and writes out[out_index]. Every sum runs in a
// fixed order (per invocation, then a tree over the workgroup), so the result is the same bits on
// every run: no atomics. clip_coefficient turns the per-tensor sums of squares into
// clip_grad_norm_'s coefficient.

struct Params {
    len: u32,            // values summed
    per_invocation: u32, // values each invocation sums (strided by WG, so loads are coalesced)
    groups_x: u32,       // workgroups along x, for a grid split over x and y
    scale: f32,          // applied to each workgroup's sum (clip_coefficient: max_norm)
    out_index: u32,      // where workgroup 0 writes (workgroup g writes out_index + g)
    _pad0: u32, _pad1: u32, _pad2: u32,
}

const WG: u32 = 256u;
// 0: sum a; 1: sum (a - b)^2; 2: sum a^2.
override MODE: u32 = 1u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> part: array<f32, WG>;

@compute @workgroup_size(WG)
fn reduce_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wg.x + wg.y * p.groups_x;
    let base = group * WG * p.per_invocation;
    var acc = 0.0;
    for (var k = 0u; k < p.per_invocation; k++) {
        let i = base + k * WG + lid;
        if (i < p.len) {
            if (MODE == 1u) {
                let d = a[i] - b[i];
                acc += d * d;
            } else if (MODE == 2u) {
                acc += a[i] * a[i];
            } else {
                acc += a[i];
            }
        }
    }
    part[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            part[lid] += part[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[p.out_index + group] = part[0] * p.scale;
    }
}

// clip_grad_norm_ over len tensors whose sums of squares are a[0..len]: each tensor's norm
// rounded to f32, the total the norm of those norms, summed in order; out[1] = min(1, max_norm *
// (1 / (total + 1e-6))), the coefficient every gradient is multiplied by, and out[2] = the total
// (out is the optimizer's state: out[0], the step counter, is left alone).
@compute @workgroup_size(1)
fn clip_coefficient() {
    var total = 0.0;
    for (var t = 0u; t < p.len; t++) {
        let norm = sqrt(a[t]);
        total += norm * norm;
    }
    total = sqrt(total);
    out[1] = min(1.0, p.scale * (1.0 / (total + 1e-6)));
    out[2] = total;
}
