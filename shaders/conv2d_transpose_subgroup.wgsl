// conv2d's input gradient at stride 2 in one dispatch (conv2d_backward.rs): conv_transpose2d of
// dy [N, Cin, Hi, Wi] (the forward's output: Params' cin, h, w) into dx [N, Cout, H, W] (the
// forward's input: cout, hout, wout), over the flipped weight [KH*KW, Cin, Cout4] vec4s
// (flip_weight.wgsl, tap mirrored) and the forward's padding:
//   dx[n, c, y, x] = sum over ci, ky, kx with y + pad_top - ky = 2 oy, x + pad_left - kx = 2 ox
//                    of W[ci, c, ky, kx] dy[n, ci, oy, ox].
// The phase form runs this as four small convs and interleaves them into dx; here each lane owns
// 4 consecutive pixels of one dx row (W % 4 == 0: one vec4 store) and 32 channels, and each tap
// reaches two of them (the pixels of one column parity) from two consecutive dy columns.
// As conv2d_subgroup.wgsl, lane k < 8 fetches weight block k and subgroupBroadcast shares it.
// Lanes run along (row, image, quad) with the dx row outermost, so a subgroup mostly shares its
// row, and with it which row taps reach it: a tap row that reaches no lane of the subgroup is
// skipped.

// Params, bindings, texel reads, Acc4/pick and the store epilogue: common/conv2d_io.wgsl.

// a + w d.x at pixel `first` (0 or 1) and + w d.y at first + 2.
fn fma_pair(a: Acc4, w: vec4<f32>, d: vec2<f32>, odd: bool) -> Acc4 {
    if (odd) {
        return Acc4(a.p0, fma(w, vec4<f32>(d.x), a.p1), a.p2, fma(w, vec4<f32>(d.y), a.p3));
    }
    return Acc4(fma(w, vec4<f32>(d.x), a.p0), a.p1, fma(w, vec4<f32>(d.y), a.p2), a.p3);
}

@compute @workgroup_size(WG_X)
fn conv2d_transpose(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(subgroup_invocation_id) lane: u32) {
    let quads = p.wout / 4u;
    let nquads = p.hout * p.n * quads;
    // Every lane stays to the end (the broadcasts need the whole subgroup); lanes past the end
    // redo the last quad and do not store.
    let q = min(gid.x, nquads - 1u);
    let x0 = (q % quads) * 4u;
    let n = (q / quads) % p.n;
    let y = q / (quads * p.n);
    let first = (n * p.hout + y) * p.wout + x0;
    let cb0 = wid.y * 8u;
    let my_block = min(cb0 + (lane & 7u), p.cout4 - 1u);
    let plane = p.h * p.w;
    let img = n * p.cin * plane;
    let zero = Acc4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var a0 = zero;
    var a1 = zero;
    var a2 = zero;
    var a3 = zero;
    var a4 = zero;
    var a5 = zero;
    var a6 = zero;
    var a7 = zero;
    for (var ky = 0u; ky < p.kh; ky++) {
        let ty = i32(y + p.pad_top) - i32(ky);
        let row_ok = ty >= 0 && (ty & 1) == 0 && ty / 2 < i32(p.h);
        if (!subgroupAny(row_ok)) {
            continue;
        }
        let oy = u32(max(ty, 0)) / 2u;
        for (var kx = 0u; kx < p.kw; kx++) {
            // The lane's pixels this tap reaches: x0 + j with j + pad_left - kx even (the same
            // parity for every lane), j = odd and odd + 2, from dy columns ox and ox + 1.
            let odd = ((kx + p.pad_left) & 1u) == 1u;
            let tx = i32(x0 + u32(odd) + p.pad_left) - i32(kx);
            let ox = tx / 2;
            let ok0 = row_ok && tx >= 0 && ox < i32(p.w);
            let ok1 = row_ok && tx + 2 >= 0 && ox + 1 < i32(p.w);
            let at = img + oy * p.w;
            var i0 = select(0u, at + u32(max(ox, 0)), ok0);
            var i1 = select(0u, at + u32(ox + 1), ok1);
            let mirrored = (p.kh - 1u - ky) * p.kw + (p.kw - 1u - kx);
            var widx = mirrored * p.cin * p.cout4 + my_block;
            for (var ci = 0u; ci < p.cin; ci++) {
                let mine = wt_at(widx);
                let d = vec2<f32>(select(0.0, x_at(i0), ok0), select(0.0, x_at(i1), ok1));
                a0 = fma_pair(a0, subgroupBroadcast(mine, 0u), d, odd);
                a1 = fma_pair(a1, subgroupBroadcast(mine, 1u), d, odd);
                a2 = fma_pair(a2, subgroupBroadcast(mine, 2u), d, odd);
                a3 = fma_pair(a3, subgroupBroadcast(mine, 3u), d, odd);
                a4 = fma_pair(a4, subgroupBroadcast(mine, 4u), d, odd);
                a5 = fma_pair(a5, subgroupBroadcast(mine, 5u), d, odd);
                a6 = fma_pair(a6, subgroupBroadcast(mine, 6u), d, odd);
                a7 = fma_pair(a7, subgroupBroadcast(mine, 7u), d, odd);
                i0 += plane;
                i1 += plane;
                widx += p.cout4;
            }
        }
    }
    if (gid.x >= nquads) {
        return;
    }
    store_blocks(first, cb0, p.n * p.hout * p.wout, a0, a1, a2, a3, a4, a5, a6, a7);
}
