// Shared by group_norm.wgsl and group_norm_backward.wgsl (appended to each by src/shaders.rs): the
// parameters, the lanes-per-group overrides, the input x read as texels, the sum over a group's
// lanes, and a group's statistics, so that the backward normalises exactly as the forward did.

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

// H * W a multiple of 4: the statistics pass reads whole texels.
override VEC4: bool = false;

// x is read as texels (see src/gpu/texels.rs: float i is component i % 4 of texel i / 4, at
// (texel % 1024, texel / 1024)).
@group(0) @binding(0) var x: texture_2d<f32>;

var<workgroup> partial: array<f32, WG>;

fn texel(t: u32) -> vec4<f32> {
    return textureLoad(x, vec2<u32>(t & 1023u, t >> 10u), 0);
}

fn at(i: u32) -> f32 {
    return texel(i >> 2u)[i & 3u];
}

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

// A group's statistics: x^ = ((x - shift) - delta) * rstd. The shift is the mean of 4 samples per
// channel, a quarter of the channel apart; delta the mean of x - shift (so a large common offset
// neither cancels the variance nor eats the digits of the mean).
struct Stats { shift: f32, delta: f32, rstd: f32 }

// The statistics of the group of `len` values at `start` (`cg` channels), from the L lanes of
// the group, each `lane` summing every L-th value; every lane gets them.
fn group_stats(start: u32, cg: u32, len: u32, lane: u32, lid: u32) -> Stats {
    var samples = 0.0;
    for (var ci = 0u; ci < cg; ci++) {
        for (var q = 0u; q < 4u; q++) {
            samples += at(start + ci * p.hw + q * (p.hw / 4u));
        }
    }
    let shift = samples / f32(4u * cg);
    var s = 0.0;
    var ss = 0.0;
    if (VEC4) {
        var s4 = vec4<f32>(0.0);
        var ss4 = vec4<f32>(0.0);
        for (var t = lane; t < len / 4u; t += L) {
            let d = texel(start / 4u + t) - shift;
            s4 += d;
            ss4 += d * d;
        }
        s = (s4.x + s4.y) + (s4.z + s4.w);
        ss = (ss4.x + ss4.y) + (ss4.z + ss4.w);
    } else {
        for (var i = lane; i < len; i += L) {
            let d = at(start + i) - shift;
            s += d;
            ss += d * d;
        }
    }
    let delta = group_sum(s, lid) / f32(len);
    let variance = max(group_sum(ss, lid) / f32(len) - delta * delta, 0.0);
    return Stats(shift, delta, inverseSqrt(variance + p.eps));
}

// Which (image, group) an invocation serves: L lanes per group, WG / L groups per workgroup over a
// grid split across x and y. Invocations past the last group redo the last one and skip their
// stores (no early return: the barriers need every invocation).
struct Slot { lane: u32, valid: bool, group: u32, cg: u32, len: u32, start: u32 }

fn slot(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Slot {
    let wanted = (wg.x + wg.y * nwg.x) * (WG / L) + lid / L;
    let group = min(wanted, p.groups_total - 1u);
    let cg = p.channels / p.groups;
    let len = cg * p.hw;
    return Slot(lid % L, wanted < p.groups_total, group, cg, len, group * len);
}
