// GroupNorm over NCHW f32 (optionally fused with SiLU), one workgroup per (image, group).
//
// The C/G channels of a group are contiguous in NCHW, so a group is one span of (C/G)*H*W values.
// Two passes over it (mean, then the mean of squared deviations) keep the variance accurate for large
// H*W where E[x^2] - E[x]^2 would cancel; values are taken relative to the group's first value, so a
// large common offset does not eat the digits of the mean. A third pass writes the result.

struct Params {
    groups_total: u32, // N * G
    channels: u32,     // C
    hw: u32,           // H * W
    groups: u32,       // G
    eps: f32,
    _pad0: u32, _pad1: u32, _pad2: u32,
}

const WG: u32 = 64u;
override SILU: bool = false;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG>;

// Sum of `v` over the workgroup; every invocation gets the result.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn group_norm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = wg.x + wg.y * nwg.x;
    if (group >= p.groups_total) {
        return; // uniform across the workgroup
    }
    let cg = p.channels / p.groups;
    let len = cg * p.hw;
    let start = group * len;

    // The mean is kept as shift + delta: with a large common offset, shift + delta would round
    // away digits of delta, while (x - shift) - delta keeps them.
    let shift = x[start];
    var s = 0.0;
    for (var i = lid; i < len; i += WG) {
        s += x[start + i] - shift;
    }
    let delta = workgroup_sum(s, lid) / f32(len);

    var ss = 0.0;
    for (var i = lid; i < len; i += WG) {
        let d = (x[start + i] - shift) - delta;
        ss += d * d;
    }
    let rstd = inverseSqrt(workgroup_sum(ss, lid) / f32(len) + p.eps);

    let c0 = (group % p.groups) * cg;
    for (var i = lid; i < len; i += WG) {
        let c = c0 + i / p.hw;
        var y = ((x[start + i] - shift) - delta) * rstd * gamma[c] + beta[c];
        if (SILU) { y = y / (1.0 + exp(-y)); }
        out[start + i] = y;
    }
}
