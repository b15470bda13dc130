// conv2d, NCHW f32, as an implicit GEMM with register blocking.
//
//   out[n, co, oh, ow] = sum_{kh, kw, ci} w[co, ci, kh, kw] * x[n, ci, oh*s + kh - pad_top, ow*s + kw - pad_left]
//
// The weight is repacked once at load time to [KH*KW, Cin, Cout4] vec4s (Cout padded to a multiple of
// 4 with zeros), so 4 output channels are one aligned vec4 load. Each invocation owns 8 consecutive
// output pixels (two quads; pixels run over N*Hout*Wout, so a block may span rows or images) x 8
// output channels (two vec4 blocks): 16 vec4 accumulators in registers. Per input channel and tap it
// loads 2 weight vec4s and 8 input values for 16 vec4 FMAs. Loops run (kh, kw) outside and Cin
// inside, so bounds checks and spatial offsets are computed once per tap. Padding is implicit: taps
// outside the input count as zero, which also gives diffusers' right/bottom-only pad (Downsample2D
// with padding=0) through pad_top = pad_left = 0.
//
// Epilogue, fused: + bias[co], + chan_add[n, co] (time embedding), + residual[n, co, oh, ow], * scale.
// Texel reads: a fetch costs a fraction of a storage-buffer load on CPU drivers.

// Params, bindings, texel reads, Acc4/fma4/pick and the store epilogue: common/conv2d_io.wgsl.

// A pixel quad's geometry: where each image starts, and the top-left input tap of each pixel.
struct Quad { img: vec4<u32>, ih0: vec4<i32>, iw0: vec4<i32> }

fn quad(first: u32, npix: u32) -> Quad {
    // Pixels past the end are clamped to the last one: computed, never stored.
    let pix = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(npix - 1u));
    let hw_out = p.hout * p.wout;
    let r = pix % hw_out;
    return Quad((pix / hw_out) * (p.cin * p.h * p.w),
                vec4<i32>((r / p.wout) * p.stride) - i32(p.pad_top),
                vec4<i32>((r % p.wout) * p.stride) - i32(p.pad_left));
}

// For tap (kh, kw): the input index of each pixel at channel 0, and which taps fall inside the image.
fn tap(q: Quad, kh: u32, kw: u32, ok: ptr<function, vec4<bool>>) -> vec4<u32> {
    let ih = q.ih0 + i32(kh);
    let iw = q.iw0 + i32(kw);
    *ok = (ih >= vec4<i32>(0)) & (ih < vec4<i32>(i32(p.h))) & (iw >= vec4<i32>(0)) & (iw < vec4<i32>(i32(p.w)));
    // Taps outside the image read a valid element and are replaced by zero.
    return select(vec4<u32>(0u), q.img + vec4<u32>(ih * i32(p.w) + iw), *ok);
}

fn load4(idx: vec4<u32>, ok: vec4<bool>) -> vec4<f32> {
    return select(vec4<f32>(0.0), vec4<f32>(x_at(idx.x), x_at(idx.y), x_at(idx.z), x_at(idx.w)), ok);
}

@compute @workgroup_size(WG_X)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let npix = p.n * p.hout * p.wout;
    let pix0 = gid.x * 8u;
    let cb = wid.y * 2u; // first of the two channel blocks
    // Only uniform exits before the loops: after a divergent one, CPU drivers such as lavapipe run
    // every later load lane by lane.
    if (cb >= p.cout4) {
        return;
    }
    // The second channel block may not exist (Cout4 odd): it reads block cb again and is not stored.
    let cb1 = min(cb + 1u, p.cout4 - 1u);
    let q0 = quad(pix0, npix);
    let q1 = quad(pix0 + 4u, npix);
    let hw_in = vec4<u32>(p.h * p.w);
    let zero = Acc4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var a00 = zero; // quad 0, channel block 0
    var a01 = zero; // quad 0, channel block 1
    var a10 = zero;
    var a11 = zero;
    for (var kh = 0u; kh < p.kh; kh++) {
        for (var kw = 0u; kw < p.kw; kw++) {
            var ok0: vec4<bool>;
            var ok1: vec4<bool>;
            var idx0 = tap(q0, kh, kw, &ok0);
            var idx1 = tap(q1, kh, kw, &ok1);
            var widx = (kh * p.kw + kw) * p.cin * p.cout4;
            for (var ci = 0u; ci < p.cin; ci++) {
                let w0 = wt_at(widx + cb);
                let w1 = wt_at(widx + cb1);
                let x0 = load4(idx0, ok0);
                let x1 = load4(idx1, ok1);
                a00 = fma4(a00, w0, x0);
                a01 = fma4(a01, w1, x0);
                a10 = fma4(a10, w0, x1);
                a11 = fma4(a11, w1, x1);
                idx0 += hw_in;
                idx1 += hw_in;
                widx += p.cout4;
            }
        }
    }
    // The epilogue once, in a loop over the (quad, block) pairs (see store4); block cb + 1 only
    // where it exists.
    for (var k = 0u; k < select(2u, 4u, cb + 1u < p.cout4); k++) {
        let second_quad = (k & 1u) == 1u;
        let a = pick(pick(a00, a10, second_quad), pick(a01, a11, second_quad), k >= 2u);
        store4(pix0 + 4u * (k & 1u), cb + k / 2u, a, npix);
    }
}
