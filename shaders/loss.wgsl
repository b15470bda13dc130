// The mean squared error of a prediction, as a deterministic two-pass sum: pass 1 (SQUARE_DIFF)
// has each workgroup sum (pred - target)^2 over its own contiguous range into one partial, pass 2
// (one workgroup) sums the partials and scales by 1 / numel. Every sum runs in a fixed order (per
// invocation, then a tree over the workgroup), so the loss is the same bits on every run: no
// atomics.

struct Params {
    len: u32,            // values summed
    per_invocation: u32, // values each invocation sums (strided by WG, so loads are coalesced)
    groups_x: u32,       // workgroups along x, for a grid split over x and y
    scale: f32,          // applied to each workgroup's sum
}

const WG: u32 = 256u;
override SQUARE_DIFF: bool = true;

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
            if (SQUARE_DIFF) {
                let d = a[i] - b[i];
                acc += d * d;
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
        out[group] = part[0] * p.scale;
    }
}
