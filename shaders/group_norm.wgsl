// GroupNorm over NCHW f32 (optionally fused with SiLU). L invocations share one (image, group) and
// a workgroup holds WG / L of them: L = 64 on GPUs; L = 1 on CPU drivers, where each invocation
// walks its own group and no barrier is needed (lavapipe runs barriers by switching coroutines:
// 36 -> 3 ms on the 8x128x32x32 case going from 64 to 8 lanes per group).
//
// The C/G channels of a group are contiguous in NCHW, so a group is one span of (C/G)*H*W values.
// One pass sums d = x - shift and d^2, a second writes the result. The shift is the mean of 4
// samples per channel, so |mean(d)| is at most a few standard deviations and
// var = E[d^2] - E[d]^2 does not cancel (as it would for a large common offset with shift 0),
// while a large common offset does not eat the digits of the mean either.
//
// x is read as texels (see src/gpu/texels.rs: float i is component i % 4 of texel i / 4, at
// (texel % 1024, texel / 1024)): four values per fetch where H*W is a multiple of 4 (VEC4), since
// storage-buffer loads cost several times more per value on CPU drivers. The passes walk channel
// by channel, so gamma and beta are loaded once per channel.

// Params, the WG and L overrides and group_sum: common/group_norm_io.wgsl.

override SILU: bool = false;

// Binding 0, x: common/group_norm_io.wgsl.
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
// Written as vec4 where whole texels (a vec4 store costs half as much per value as four f32 stores
// on lavapipe), else component by component.
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> p: Params;

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
    let me = slot(wg, nwg, lid);
    let lane = me.lane;
    let valid = me.valid;
    let group = me.group;
    let cg = me.cg;
    let len = me.len;
    let start = me.start;

    let hw4 = p.hw / 4u;
    let st = group_stats(start, cg, len, lane, lid);
    let shift = st.shift;
    let delta = st.delta;
    let rstd = st.rstd;

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
