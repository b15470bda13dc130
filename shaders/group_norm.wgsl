// GroupNorm over NCHW f32 (optionally fused with SiLU). L invocations share one (image, group) and
// a workgroup holds 64 / L of them: L = 64 on GPUs; L = 1 on CPU drivers, where each invocation
// walks its own group and no barrier is needed (lavapipe runs barriers by switching coroutines:
// 36 -> 3 ms on the 8x128x32x32 case going from 64 to 8 lanes per group).
//
// The C/G channels of a group are contiguous in NCHW, so a group is one span of (C/G)*H*W values.
// Two passes over it (mean, then the mean of squared deviations) keep the variance accurate for large
// H*W where E[x^2] - E[x]^2 would cancel; values are taken relative to the group's first value, so a
// large common offset does not eat the digits of the mean. A third pass writes the result.
//
// x is read as texels (see src/gpu/texels.rs: float i is component i % 4 of texel i / 4, at
// (texel % 1024, texel / 1024)): four values per fetch where H*W is a multiple of 4 (VEC4), since
// storage-buffer loads cost several times more per value on CPU drivers. The passes walk channel
// by channel, so gamma and beta are loaded once per channel.

struct Params {
    groups_total: u32, // N * G
    channels: u32,     // C
    hw: u32,           // H * W
    groups: u32,       // G
    eps: f32,
    _pad0: u32, _pad1: u32, _pad2: u32,
}

const WG: u32 = 64u;
override L: u32 = 64u; // lanes per group: 1, 2, 4, ..., 64
override SILU: bool = false;
override VEC4: bool = false;

@group(0) @binding(0) var x: texture_2d<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
// Written as vec4 where whole texels (a vec4 store costs half as much per value as four f32 stores
// on lavapipe), else component by component.
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> p: Params;

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

fn texel(t: u32) -> vec4<f32> {
    return textureLoad(x, vec2<u32>(t & 1023u, t >> 10u), 0);
}

fn at(i: u32) -> f32 {
    return texel(i >> 2u)[i & 3u];
}

fn activate(y: f32) -> f32 {
    if (SILU) { return y / (1.0 + exp(-y)); }
    return y;
}

@compute @workgroup_size(WG)
fn group_norm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Invocations past the last group redo the last one and skip the stores (no early return:
    // the barriers need every invocation).
    let lane = lid % L;
    let wanted = (wg.x + wg.y * nwg.x) * (WG / L) + lid / L;
    let valid = wanted < p.groups_total;
    let group = min(wanted, p.groups_total - 1u);
    let cg = p.channels / p.groups;
    let len = cg * p.hw;
    let start = group * len;

    // The mean is kept as shift + delta: with a large common offset, shift + delta would round
    // away digits of delta, while (x - shift) - delta keeps them.
    let shift = at(start);
    let hw4 = p.hw / 4u;
    var s = 0.0;
    if (VEC4) {
        var s4 = vec4<f32>(0.0);
        for (var t = lane; t < len / 4u; t += L) {
            s4 += texel(start / 4u + t) - shift;
        }
        s = (s4.x + s4.y) + (s4.z + s4.w);
    } else {
        for (var i = lane; i < len; i += L) {
            s += at(start + i) - shift;
        }
    }
    let delta = group_sum(s, lid) / f32(len);

    var ss = 0.0;
    if (VEC4) {
        var ss4 = vec4<f32>(0.0);
        for (var t = lane; t < len / 4u; t += L) {
            let d = (texel(start / 4u + t) - shift) - delta;
            ss4 += d * d;
        }
        ss = (ss4.x + ss4.y) + (ss4.z + ss4.w);
    } else {
        for (var i = lane; i < len; i += L) {
            let d = (at(start + i) - shift) - delta;
            ss += d * d;
        }
    }
    let rstd = inverseSqrt(group_sum(ss, lid) / f32(len) + p.eps);

    let c0 = (group % p.groups) * cg;
    for (var ci = 0u; ci < select(0u, cg, valid); ci++) {
        // y = ((x - shift) - delta) * a + beta, with a = rstd * gamma for this channel.
        let a = rstd * gamma[c0 + ci];
        let b = beta[c0 + ci];
        let cstart = start + ci * p.hw;
        if (VEC4) {
            for (var t = lane; t < hw4; t += L) {
                let y = ((texel(cstart / 4u + t) - shift) - delta) * a + b;
                out[cstart / 4u + t] = vec4<f32>(activate(y.x), activate(y.y), activate(y.z), activate(y.w));
            }
        } else {
            for (var i = lane; i < p.hw; i += L) {
                let o = cstart + i;
                out[o / 4u][o % 4u] = activate(((at(o) - shift) - delta) * a + b);
            }
        }
    }
}
