// conv2d's weight gradient, written in the kernel's packed layout [KH*KW, Cin, Cout4*4] (the
// layout of the weight itself, so an optimizer updates both elementwise):
//   dW[co, ci, ky, kx] = scale * sum over (n, oy, ox) of dy[n, co, oy, ox] x[n, ci, oy s + ky - pad_top, ox s + kx - pad_left]
// An implicit GEMM with k = the N Ho Wo pixels, over channels-last copies of x and dy
// ([pixel, C4] vec4s, channels padded with zeros: channels_last.wgsl), so 4 channels of one pixel
// are one texel. Each invocation owns one tap x 8 input channels x 8 output channels (16 vec4
// accumulators) and per pixel loads 2 x texels and 2 dy texels for 16 vec4 FMAs.
// Split z of Z sums output rows [z R / Z, (z + 1) R / Z) of the R = N Ho in order, pixel by
// pixel, and writes its partial at z * packed length; the split-K reduce (matmul_reduce.wgsl)
// sums the splits in order: the batch reduction is the same bits every run, no atomics. Splits
// keep each loop under lavapipe's loop cap on CPU drivers and fill the device.
// conv2d_weight_grad_subgroup.wgsl is the same sum with dy shared across a subgroup.

// Params, bindings, texel reads, Acc4/outer/row_of: common/conv2d_weight_grad_io.wgsl.

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn conv2d_weight_grad(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Invocation j: split j / blocks, block (tap, pair of ci blocks, pair of co blocks) j % blocks,
    // co fastest. Splits and blocks share one index so that only the last workgroup has idle lanes
    // (a 32-channel conv has 144 blocks: per split, three workgroups of 64 would idle a quarter).
    let cpairs = (p.cout4 + 1u) / 2u;
    let ipairs = (p.cin4 + 1u) / 2u;
    let j = (wg.x + wg.y * p.groups_x) * WG + lid;
    let blocks = p.kh * p.kw * ipairs * cpairs;
    // No exit before the loop (lavapipe runs loads lane by lane after a divergent one):
    // invocations past the end redo the last and skip the store.
    let valid = j < blocks * p.splits;
    let jj = min(j, blocks * p.splits - 1u);
    let split = jj / blocks;
    let b = jj % blocks;
    let cb = (b % cpairs) * 2u;
    let ib = ((b / cpairs) % ipairs) * 2u;
    let tap = b / (cpairs * ipairs);
    let ky = tap / p.kw;
    let kx = tap % p.kw;
    // A second block past the end reads the first again and is not stored.
    let cb1 = min(cb + 1u, p.cout4 - 1u);
    let ib1 = min(ib + 1u, p.cin4 - 1u);

    // The split's output rows (n, oy), each walked along ox: the row's bounds once, then one
    // column check and index increments per pixel. Every lane runs rows_per_split rows, so that
    // lanes of two splits loop alike; rows past the last (the last split's) add zeros.
    let lo = split * p.rows_per_split;
    let hi = min(p.n * p.hout, lo + p.rows_per_split);
    var at = vec2<u32>(lo / p.hout, lo % p.hout); // (n, oy)
    let zero = Acc4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var a00 = zero; // ci block ib, co block cb
    var a01 = zero; // ci block ib, co block cb + 1
    var a10 = zero;
    var a11 = zero;
    for (var r = 0u; r < p.rows_per_split; r++) {
        let row = lo + r;
        let input = input_row(at.x, at.y, ky);
        let row_ok = row < hi && input.ok;
        let x_row = input.first;
        var ix = i32(kx) - i32(p.pad_left);
        var g_at = min(row, hi - 1u) * p.wout * p.cout4;
        for (var ox = 0u; ox < p.wout; ox++) {
            let inside = row_ok && ix >= 0 && ix < i32(p.w);
            let xt = select(0u, (x_row + u32(ix)) * p.cin4, inside);
            let x0 = select(vec4<f32>(0.0), texel(x, xt + ib), inside);
            let x1 = select(vec4<f32>(0.0), texel(x, xt + ib1), inside);
            let g0 = texel(dy, g_at + cb);
            let g1 = texel(dy, g_at + cb1);
            a00 = outer(a00, x0, g0);
            a01 = outer(a01, x0, g1);
            a10 = outer(a10, x1, g0);
            a11 = outer(a11, x1, g1);
            ix += i32(p.stride);
            g_at += p.cout4;
        }
        at = next_row(at);
    }
    if (!valid) {
        return;
    }
    // Row (tap, ci) of the packed layout holds Cout4 vec4s; only real input channels are stored.
    let base = split * p.packed_len / 4u;
    for (var k = 0u; k < 8u; k++) {
        let ci = ib * 4u + k;
        let second_ci = k >= 4u;
        if (ci >= p.cin || (second_ci && ib + 1u >= p.cin4)) {
            break;
        }
        let row = base + (tap * p.cin + ci) * p.cout4;
        let v0 = select(row_of(a00, k & 3u), row_of(a10, k & 3u), second_ci);
        let v1 = select(row_of(a01, k & 3u), row_of(a11, k & 3u), second_ci);
        out[row + cb] = v0 * p.scale;
        if (cb + 1u < p.cout4) {
            out[row + cb + 1u] = v1 * p.scale;
        }
    }
}
