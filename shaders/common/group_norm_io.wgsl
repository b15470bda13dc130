// Shared by group_norm.wgsl and group_norm_backward.wgsl (appended to each by src/shaders.rs): the
// parameters, the lanes-per-group overrides and the sum over a group's lanes.

struct Params {
    groups_total: u32, // N * G
    channels: u32,     // C
    hw: u32,           // H * W
    groups: u32,       // G
    eps: f32,
    _pad0: u32, _pad1: u32, _pad2: u32,
}

override WG: u32 = 64u; // invocations per workgroup, a multiple of L
override L: u32 = 64u; // lanes per group: 1, 2, 4, ..., 64

var<workgroup> partial: array<f32, WG>;

// Sum of `v` over the L invocations of a group; each of them gets the result.
fn group_sum(v: f32, lid: u32) -> f32 {
    if (L == 1u) {
        return v;
    }
    partial[lid] = v;
    workgroupBarrier();
    let lane = lid % L;
    for (var stride = L / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[lid - lane];
    workgroupBarrier();
    return total;
}
