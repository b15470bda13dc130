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

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, hout: u32, wout: u32, cout4: u32,
    kh: u32, kw: u32, stride: u32, pad_top: u32,
    pad_left: u32, scale: f32, _pad0: u32, _pad1: u32,
}

override WG_X: u32 = 64;          // pixel blocks per workgroup (one channel block pair per workgroup row)
override HAS_BIAS: bool = true;
override HAS_CHANNEL_ADD: bool = false;
override HAS_RESIDUAL: bool = false;
// Output maps whose H*W is a multiple of 4: every quad of pixels is one aligned vec4, and the
// by-value store path is compiled out (it doubles compile time on CPU drivers).
override ALIGNED: bool = false;

// x and the packed weights are read as texels (see src/gpu/texels.rs): float i of a buffer is
// component i % 4 of texel i / 4, at (texel % 1024, texel / 1024). A texel fetch costs a fraction
// of a storage-buffer load on CPU drivers, and goes through the texture cache on GPUs.
@group(0) @binding(0) var x: texture_2d<f32>;
@group(0) @binding(1) var wt: texture_2d<f32>;

fn x_at(i: u32) -> f32 {
    return textureLoad(x, vec2<u32>((i >> 2u) & 1023u, i >> 12u), 0)[i & 3u];
}

fn wt_at(i: u32) -> vec4<f32> {
    return textureLoad(wt, vec2<u32>(i & 1023u, i >> 10u), 0);
}
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> chan_add: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> p: Params;

// Four output pixels x four output channels: pixel k's channels are field k.
struct Acc4 { p0: vec4<f32>, p1: vec4<f32>, p2: vec4<f32>, p3: vec4<f32> }

fn fma4(a: Acc4, w: vec4<f32>, xq: vec4<f32>) -> Acc4 {
    return Acc4(fma(w, vec4<f32>(xq.x), a.p0), fma(w, vec4<f32>(xq.y), a.p1),
                fma(w, vec4<f32>(xq.z), a.p2), fma(w, vec4<f32>(xq.w), a.p3));
}

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

// Channel `co` at pixels first .. first + 3: one vec4 store where they are a whole aligned vec4 of
// one image, else value by value. No private arrays: CPU drivers keep a dynamically indexed one in
// memory and walk it lane by lane. The by-value path is kept small (it is inlined 32 times, and
// shader compile time on CPU drivers grows with it).
fn store_channel(v: vec4<f32>, first: u32, co: u32, npix: u32) {
    if (co >= p.cout || first >= npix) { return; }
    let hw_out = p.hout * p.wout;
    let n = first / hw_out;
    let r = first % hw_out;
    let off = (n * p.cout + co) * hw_out + r;
    var add = 0.0;
    if (HAS_BIAS) { add += bias[co]; }
    if (ALIGNED || (first + 3u < npix && r + 3u < hw_out && off % 4u == 0u)) {
        var y = v + vec4<f32>(add);
        if (HAS_CHANNEL_ADD) { y += vec4<f32>(chan_add[n * p.cout + co]); }
        if (HAS_RESIDUAL) { y += vec4<f32>(residual[off], residual[off + 1u], residual[off + 2u], residual[off + 3u]); }
        out[off / 4u] = y * p.scale;
        return;
    }
    for (var k = 0u; k < 4u; k++) {
        let pix = first + k;
        if (pix >= npix) { return; }
        let nk = pix / hw_out;
        let o = (nk * p.cout + co) * hw_out + pix % hw_out;
        var y = v[k] + add;
        if (HAS_CHANNEL_ADD) { y += chan_add[nk * p.cout + co]; }
        if (HAS_RESIDUAL) { y += residual[o]; }
        out[o / 4u][o % 4u] = y * p.scale;
    }
}

fn store4(first: u32, cb: u32, a: Acc4, npix: u32) {
    if (cb >= p.cout4) { return; }
    store_channel(vec4<f32>(a.p0.x, a.p1.x, a.p2.x, a.p3.x), first, cb * 4u, npix);
    store_channel(vec4<f32>(a.p0.y, a.p1.y, a.p2.y, a.p3.y), first, cb * 4u + 1u, npix);
    store_channel(vec4<f32>(a.p0.z, a.p1.z, a.p2.z, a.p3.z), first, cb * 4u + 2u, npix);
    store_channel(vec4<f32>(a.p0.w, a.p1.w, a.p2.w, a.p3.w), first, cb * 4u + 3u, npix);
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
    store4(pix0, cb, a00, npix);
    store4(pix0 + 4u, cb, a10, npix);
    if (cb + 1u < p.cout4) {
        store4(pix0, cb + 1u, a01, npix);
        store4(pix0 + 4u, cb + 1u, a11, npix);
    }
}
