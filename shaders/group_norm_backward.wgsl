// The backward of GroupNorm (+ fused SiLU) over NCHW f32, given x and dy = d loss / d output:
//   x^ = (x - mean) rstd per (image, group);  z = x^ gamma + beta;  y = z or SiLU(z)
//   dz = dy, or dy sigmoid(z) (1 + z (1 - sigmoid(z))) with SiLU;  g = dz gamma
//   dx = rstd (g - mean_grp(g) - x^ mean_grp(g x^))
// and, per (image, channel), the partial sums sum(dz x^) and sum(dz) that
// group_norm_param_grads.wgsl reduces over the batch into d gamma and d beta (in a fixed order: no
// atomics). As the forward, L invocations share one (image, group), WG / L groups a workgroup;
// statistics are recomputed by the forward's own group_stats (common/group_norm_io.wgsl), not
// saved, and x^ = ((x - shift) - delta) rstd as there: x - (shift + delta) would round the mean to
// f32 first, and on a large common offset that error, times rstd, shifts every x^ (d gamma was
// off by 2e-4 at mean 100, spread 0.01).

// Params, the WG and L overrides and group_sum: common/group_norm_io.wgsl.

override SILU: bool = false;

// Binding 0, x: common/group_norm_io.wgsl.
@group(0) @binding(1) var dy: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
// [N, C, 2]: sum(dz x^), sum(dz) of each (image, channel).
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

fn dy_at(i: u32) -> f32 {
    return textureLoad(dy, vec2<u32>((i >> 2u) & 1023u, i >> 12u), 0)[i & 3u];
}

// d loss / d z at one element, from x^ and this channel's gamma and beta.
fn dz_at(i: u32, xhat: f32, a: f32, b: f32) -> f32 {
    let g = dy_at(i);
    if (SILU) {
        let z = xhat * a + b;
        let s = 1.0 / (1.0 + exp(-z));
        return g * (s * (1.0 + z * (1.0 - s)));
    }
    return g;
}

@compute @workgroup_size(WG)
fn group_norm_backward(
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
    let c0 = (group % p.groups) * cg;
    let image = group / p.groups;

    // Statistics as the forward computes them.
    let st = group_stats(start, cg, len, lane, lid);
    let shift = st.shift;
    let delta = st.delta;
    let rstd = st.rstd;

    // Sums over the group of g = dz gamma and g x^, and per channel of dz x^ and dz.
    var g1 = 0.0;
    var g2 = 0.0;
    for (var ci = 0u; ci < cg; ci++) {
        let a = gamma[c0 + ci];
        let b = beta[c0 + ci];
        let cstart = start + ci * p.hw;
        var dzx = 0.0;
        var dzs = 0.0;
        for (var i = lane; i < p.hw; i += L) {
            let xhat = ((at(cstart + i) - shift) - delta) * rstd;
            let dz = dz_at(cstart + i, xhat, a, b);
            dzx += dz * xhat;
            dzs += dz;
        }
        let cx = group_sum(dzx, lid);
        let cs = group_sum(dzs, lid);
        g1 += a * cs;
        g2 += a * cx;
        if (valid && lane == 0u) {
            let o = (image * p.channels + c0 + ci) * 2u;
            partials[o] = cx;
            partials[o + 1u] = cs;
        }
    }
    let m1 = g1 / f32(len);
    let m2 = g2 / f32(len);
    for (var ci = 0u; ci < select(0u, cg, valid); ci++) {
        let a = gamma[c0 + ci];
        let b = beta[c0 + ci];
        let cstart = start + ci * p.hw;
        for (var i = lane; i < p.hw; i += L) {
            let xhat = ((at(cstart + i) - shift) - delta) * rstd;
            let g = dz_at(cstart + i, xhat, a, b) * a;
            dx[cstart + i] = rstd * (g - m1 - xhat * m2);
        }
    }
}
