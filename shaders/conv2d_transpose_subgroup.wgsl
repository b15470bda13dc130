// conv2d's input gradient at stride 2 in one dispatch (conv2d_backward.rs): conv_transpose2d of
// dy [N, Cin, Hi, Wi] (the forward's output: Params' cin, h, w) into dx [N, Cout, H, W] (the
// forward's input: cout, hout, wout), over the flipped weight [KH*KW, Cin, Cout4] vec4s
// (flip_weight.wgsl, tap mirrored) and the forward's padding:
//   dx[n, c, y, x] = sum over ci, ky, kx with y + pad_top - ky = 2 oy, x + pad_left - kx = 2 ox
//                    of W[ci, c, ky, kx] dy[n, ci, oy, ox].
// The phase form runs this as four small convs and interleaves them into dx; here each lane owns
// 4 consecutive pixels (W % 4 == 0: one vec4 store) in each of two dx rows of one parity, y and
// y + 2, and 32 channels. Both rows take the same tap rows (from dy rows oy and oy + 1), and each
// tap reaches the two pixels of one column parity in each row, from two consecutive dy columns:
// 4 pixels per broadcast weight, as in the forward. On lavapipe the bundled model's 28 -> 14
// input gradient ran in 1.45x the forward's time with one row per lane and the parity picked by a
// branch inside the channel loop, and in 1.15x this way. The cost: 64 vec4 accumulators a lane,
// twice the forward's (GPUs with 255 registers a thread will spill some; not measured on one).
// As conv2d_subgroup.wgsl, lane k < 8 fetches weight block k and subgroupBroadcast shares it.
// Lanes run along (row pair, image, quad) with the row pair outermost, so a subgroup mostly shares
// its rows, and with them which tap rows reach it: a tap row that reaches no lane of the subgroup
// is skipped.

// Params, bindings, texel reads, Acc4/pick and the store epilogue: common/conv2d_io.wgsl.

// Two pixels of one column parity (x0 + par and x0 + par + 2) x four channels, in rows y (a) and
// y + 2 (b).
struct Pair { a0: vec4<f32>, a2: vec4<f32>, b0: vec4<f32>, b2: vec4<f32> }

fn fma_pair(acc: Pair, w: vec4<f32>, d: vec4<f32>) -> Pair {
    return Pair(fma(w, vec4<f32>(d.x), acc.a0), fma(w, vec4<f32>(d.y), acc.a2), fma(w, vec4<f32>(d.z), acc.b0),
                fma(w, vec4<f32>(d.w), acc.b2));
}

fn swap(c: ptr<function, Pair>, d: ptr<function, Pair>) {
    let t = *c;
    *c = *d;
    *d = t;
}

// Row b (take_b) or a of the even pixels e and odd pixels o: pixels x0 .. x0 + 3.
fn row_of(e: Pair, o: Pair, take_b: bool) -> Acc4 {
    return Acc4(select(e.a0, e.b0, take_b), select(o.a0, o.b0, take_b), select(e.a2, e.b2, take_b),
                select(o.a2, o.b2, take_b));
}

@compute @workgroup_size(WG_X)
fn conv2d_transpose(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(subgroup_invocation_id) lane: u32) {
    let quads = p.wout / 4u;
    // Row pair r holds rows y = 4 (r / 2) + r % 2 and y + 2; past an H that is not a multiple of 4
    // they are not stored.
    let pairs = (p.hout + 3u) / 4u * 2u;
    let nquads = pairs * p.n * quads;
    // Every lane stays to the end (the broadcasts need the whole subgroup); lanes past the end
    // redo the last quad and do not store.
    let q = min(gid.x, nquads - 1u);
    let x0 = (q % quads) * 4u;
    let n = (q / quads) % p.n;
    let pair = q / (quads * p.n);
    let y = (pair / 2u) * 4u + (pair & 1u);
    let first = (n * p.hout + y) * p.wout + x0;
    let cb0 = wid.y * 8u;
    let my_block = min(cb0 + (lane & 7u), p.cout4 - 1u);
    let plane = vec4<u32>(p.h * p.w);
    let img = n * p.cin * p.h * p.w;
    let zero = Pair(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    // Block k's pixels of the column parity the taps now reach (c) and of the other (d): a tap's
    // parity picks which accumulators it updates, and a branch on it inside the channel loop made
    // CPU drivers run both sides. So the taps run by parity, and c and d swap between the two.
    var c0 = zero;
    var c1 = zero;
    var c2 = zero;
    var c3 = zero;
    var c4 = zero;
    var c5 = zero;
    var c6 = zero;
    var c7 = zero;
    var d0 = zero;
    var d1 = zero;
    var d2 = zero;
    var d3 = zero;
    var d4 = zero;
    var d5 = zero;
    var d6 = zero;
    var d7 = zero;
    for (var ky = 0u; ky < p.kh; ky++) {
        // Row y's dy row oy, row y + 2's oy + 1 (when the tap row reaches them: ty even).
        let ty = i32(y + p.pad_top) - i32(ky);
        let oy = ty / 2;
        let even = (ty & 1) == 0;
        let ok_a = even && oy >= 0 && oy < i32(p.h);
        let ok_b = even && oy + 1 >= 0 && oy + 1 < i32(p.h);
        if (!subgroupAny(ok_a || ok_b)) {
            continue;
        }
        let at_a = img + u32(max(oy, 0)) * p.w;
        let at_b = img + u32(max(oy + 1, 0)) * p.w;
        // Even pixels (par 0) first: c holds them here, and again after the second swap.
        for (var par = 0u; par < 2u; par++) {
            // The taps that reach pixels x0 + par and x0 + par + 2 (kx + pad_left has their
            // parity), from dy columns ox and ox + 1.
            for (var kx = (par + p.pad_left) & 1u; kx < p.kw; kx += 2u) {
                let tx = i32(x0 + par + p.pad_left) - i32(kx);
                let ox = tx / 2;
                let ok0 = tx >= 0 && ox < i32(p.w);
                let ok1 = tx + 2 >= 0 && ox + 1 < i32(p.w);
                let ok = vec4<bool>(ok_a && ok0, ok_a && ok1, ok_b && ok0, ok_b && ok1);
                let col0 = u32(max(ox, 0));
                let col1 = u32(max(ox + 1, 0));
                var idx = select(vec4<u32>(0u), vec4<u32>(at_a + col0, at_a + col1, at_b + col0, at_b + col1), ok);
                let mirrored = (p.kh - 1u - ky) * p.kw + (p.kw - 1u - kx);
                var widx = mirrored * p.cin * p.cout4 + my_block;
                for (var ci = 0u; ci < p.cin; ci++) {
                    let mine = wt_at(widx);
                    let dv = select(vec4<f32>(0.0), vec4<f32>(x_at(idx.x), x_at(idx.y), x_at(idx.z), x_at(idx.w)), ok);
                    c0 = fma_pair(c0, subgroupBroadcast(mine, 0u), dv);
                    c1 = fma_pair(c1, subgroupBroadcast(mine, 1u), dv);
                    c2 = fma_pair(c2, subgroupBroadcast(mine, 2u), dv);
                    c3 = fma_pair(c3, subgroupBroadcast(mine, 3u), dv);
                    c4 = fma_pair(c4, subgroupBroadcast(mine, 4u), dv);
                    c5 = fma_pair(c5, subgroupBroadcast(mine, 5u), dv);
                    c6 = fma_pair(c6, subgroupBroadcast(mine, 6u), dv);
                    c7 = fma_pair(c7, subgroupBroadcast(mine, 7u), dv);
                    idx += plane;
                    widx += p.cout4;
                }
            }
            swap(&c0, &d0);
            swap(&c1, &d1);
            swap(&c2, &d2);
            swap(&c3, &d3);
            swap(&c4, &d4);
            swap(&c5, &d5);
            swap(&c6, &d6);
            swap(&c7, &d7);
        }
    }
    if (gid.x >= nquads) {
        return;
    }
    // One store_blocks call for both rows (a second copy of the epilogue would add to the
    // shader's compile time on CPU drivers: see store4). c: even pixels, d: odd.
    let npix = p.n * p.hout * p.wout;
    for (var row = 0u; row < 2u; row++) {
        if (y + 2u * row >= p.hout) {
            return;
        }
        let b = row == 1u;
        store_blocks(first + 2u * row * p.wout, cb0, npix, row_of(c0, d0, b), row_of(c1, d1, b), row_of(c2, d2, b),
                     row_of(c3, d3, b), row_of(c4, d4, b), row_of(c5, d5, b), row_of(c6, d6, b), row_of(c7, d7, b));
    }
}
