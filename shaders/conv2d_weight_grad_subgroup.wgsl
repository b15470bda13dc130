// conv2d's weight gradient sharing dy across a subgroup: the sum of conv2d_weight_grad.wgsl (same
// params, bindings, channels-last copies, splits and packed output) laid out as
// conv2d_subgroup.wgsl lays out the forward. Used where the adapter has subgroups of at least 8
// lanes and the layer has at least 32 output channels.
//
// A workgroup works on one split (z) and 32 output channels (8 vec4 blocks, y); each lane on its
// own (tap, 4 input channels). Per pixel, lane k < 8 of each subgroup loads dy block k and
// subgroupBroadcast hands it to every lane: each lane loads one x texel and one dy texel for 32
// vec4 FMAs, four times the FMAs per load of the portable kernel (loads are what costs most on
// CPU drivers; on GPUs the broadcast replaces redundant cache traffic). WG is a multiple of 8
// chosen by the launcher.

// (wgpu 30 takes subgroup builtins without an `enable` directive, with the SUBGROUP feature on.)

// Params, bindings, texel reads, Acc4/outer/row_of: common/conv2d_weight_grad_io.wgsl.

override WG: u32 = 64u;

fn pick(a: Acc4, b: Acc4, second: bool) -> Acc4 {
    return Acc4(select(a.a, b.a, second), select(a.b, b.b, second), select(a.c, b.c, second),
                select(a.d, b.d, second));
}

@compute @workgroup_size(WG)
fn conv2d_weight_grad(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // Lane j of the workgroup row: (tap, ci block), ci fastest.
    let lanes = p.kh * p.kw * p.cin4;
    let j = wg.x * WG + lid;
    // Every lane stays to the end: the broadcasts need the whole subgroup, and a divergent exit
    // would make CPU drivers run later loads lane by lane. Lanes past the end redo the last and
    // skip the store.
    let valid = j < lanes;
    let b = min(j, lanes - 1u);
    let ib = b % p.cin4;
    let tap = b / p.cin4;
    let ky = tap / p.kw;
    let kx = tap % p.kw;
    let cb0 = wg.y * 8u;
    // The dy block this lane fetches for the subgroup (clamped: blocks past Cout4 are not stored).
    let my_block = min(cb0 + (lane & 7u), p.cout4 - 1u);

    // The split's output rows (n, oy), each walked along ox, as in the portable kernel.
    let lo = wg.z * p.rows_per_split;
    let hi = min(p.n * p.hout, lo + p.rows_per_split);
    var at = vec2<u32>(lo / p.hout, lo % p.hout); // (n, oy)
    let zero = Acc4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var a0 = zero; // the lane's 4 input channels x co block cb0
    var a1 = zero;
    var a2 = zero;
    var a3 = zero;
    var a4 = zero;
    var a5 = zero;
    var a6 = zero;
    var a7 = zero;
    for (var row = lo; row < hi; row++) {
        let input = input_row(at.x, at.y, ky);
        let row_ok = input.ok;
        let x_row = input.first;
        var ix = i32(kx) - i32(p.pad_left);
        var g_at = row * p.wout * p.cout4 + my_block;
        for (var ox = 0u; ox < p.wout; ox++) {
            let inside = row_ok && ix >= 0 && ix < i32(p.w);
            let xt = select(0u, (x_row + u32(ix)) * p.cin4 + ib, inside);
            let xv = select(vec4<f32>(0.0), texel(x, xt), inside);
            let mine = texel(dy, g_at);
            a0 = outer(a0, xv, subgroupBroadcast(mine, 0u));
            a1 = outer(a1, xv, subgroupBroadcast(mine, 1u));
            a2 = outer(a2, xv, subgroupBroadcast(mine, 2u));
            a3 = outer(a3, xv, subgroupBroadcast(mine, 3u));
            a4 = outer(a4, xv, subgroupBroadcast(mine, 4u));
            a5 = outer(a5, xv, subgroupBroadcast(mine, 5u));
            a6 = outer(a6, xv, subgroupBroadcast(mine, 6u));
            a7 = outer(a7, xv, subgroupBroadcast(mine, 7u));
            ix += i32(p.stride);
            g_at += p.cout4;
        }
        at = next_row(at);
    }
    if (!valid) {
        return;
    }
    // Rows (tap, ci) of the packed layout hold Cout4 vec4s; only real channels are stored.
    let base = wg.z * p.packed_len / 4u;
    let blocks = min(8u, p.cout4 - cb0);
    for (var k = 0u; k < 4u; k++) {
        let ci = ib * 4u + k;
        if (ci >= p.cin) {
            break;
        }
        let row = base + (tap * p.cin + ci) * p.cout4 + cb0;
        for (var m = 0u; m < blocks; m++) {
            var a = pick(a0, a1, m == 1u);
            a = pick(a, a2, m == 2u);
            a = pick(a, a3, m == 3u);
            a = pick(a, a4, m == 4u);
            a = pick(a, a5, m == 5u);
            a = pick(a, a6, m == 6u);
            a = pick(a, a7, m == 7u);
            out[row + m] = row_of(a, k) * p.scale;
        }
    }
}
