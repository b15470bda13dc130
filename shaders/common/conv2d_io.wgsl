// Shared by conv2d.wgsl and conv2d_subgroup.wgsl (appended to each by src/shaders.rs): the
// parameters, bindings, texel reads, accumulator block and fused store epilogue of the conv2d
// family. Epilogue: + bias[co], + chan_add[n, co] (time embedding), + residual[n, co, oh, ow],
// * scale.

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, hout: u32, wout: u32, cout4: u32,
    kh: u32, kw: u32, stride: u32, pad_top: u32,
    // Split-K (subgroup kernel, SPLIT): input channels per split, and the floats between two
    // splits' partial outputs.
    pad_left: u32, scale: f32, split_chans: u32, split_len: u32,
}

override WG_X: u32 = 64;          // invocations per workgroup, along pixels
override HAS_BIAS: bool = true;
override HAS_CHANNEL_ADD: bool = false;
override HAS_RESIDUAL: bool = false;
// Output maps whose H*W is a multiple of 4: every quad of pixels is one aligned vec4, and the
// by-value store path is compiled out.
override ALIGNED: bool = false;
// Split-K: workgroup z sums input channels [z * split_chans, (z + 1) * split_chans) only, and
// writes its partial output (no epilogue: the launcher switches it off) at z * split_len; the
// reduce kernel (conv2d_reduce.wgsl) sums the splits and applies the epilogue. For GPUs, where a
// small map leaves too few invocations to hide the loop's latency.
override SPLIT: bool = false;
var<private> out_base: u32 = 0u;

// x and the packed weights are read as texels (see src/gpu/texels.rs): float i of a buffer is
// component i % 4 of texel i / 4, at (texel % 1024, texel / 1024). A texel fetch costs a fraction
// of a storage-buffer load on CPU drivers, and goes through the texture cache on GPUs.
@group(0) @binding(0) var x: texture_2d<f32>;
@group(0) @binding(1) var wt: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> chan_add: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> p: Params;

fn x_at(i: u32) -> f32 {
    return textureLoad(x, vec2<u32>((i >> 2u) & 1023u, i >> 12u), 0)[i & 3u];
}

fn wt_at(i: u32) -> vec4<f32> {
    return textureLoad(wt, vec2<u32>(i & 1023u, i >> 10u), 0);
}

// Four output pixels x four output channels: pixel k's channels are field k.
struct Acc4 { p0: vec4<f32>, p1: vec4<f32>, p2: vec4<f32>, p3: vec4<f32> }

fn fma4(a: Acc4, w: vec4<f32>, xq: vec4<f32>) -> Acc4 {
    return Acc4(fma(w, vec4<f32>(xq.x), a.p0), fma(w, vec4<f32>(xq.y), a.p1),
                fma(w, vec4<f32>(xq.z), a.p2), fma(w, vec4<f32>(xq.w), a.p3));
}

// Channel `co` at pixels first .. first + 3: one vec4 store where they are a whole aligned vec4 of
// one image, else value by value. No private arrays: CPU drivers keep a dynamically indexed one in
// memory and walk it lane by lane.
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
        out[(out_base + off) / 4u] = y * p.scale;
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
        out[(out_base + o) / 4u][(out_base + o) % 4u] = y * p.scale;
    }
}

// Channel block cb (channels 4cb .. 4cb + 3) at pixels first .. first + 3. The kernels call it
// from a loop over their blocks, and it loops over the channels: one copy of the store code, not
// one per output channel. Shader compile time on CPU drivers grows with every memory access in
// the code, and this epilogue inlined 32 times was two thirds of a kernel's cold first call. The
// loop counts depend on the uniform Cout (so they are not unrolled), and picking a block or a
// channel with a uniform index is a few selects.
fn store4(first: u32, cb: u32, a: Acc4, npix: u32) {
    let chans = min(4u, p.cout - min(cb * 4u, p.cout));
    for (var c = 0u; c < chans; c++) {
        store_channel(vec4<f32>(a.p0[c], a.p1[c], a.p2[c], a.p3[c]), first, cb * 4u + c, npix);
    }
}

// b where take_b, else a (take_b uniform: a select, not a branch).
fn pick(a: Acc4, b: Acc4, take_b: bool) -> Acc4 {
    return Acc4(select(a.p0, b.p0, take_b), select(a.p1, b.p1, take_b), select(a.p2, b.p2, take_b),
                select(a.p3, b.p3, take_b));
}

// The subgroup kernels' epilogue: blocks cb0 .. cb0 + 7 (those that exist) at pixels first ..
// first + 3, once, in a loop over the blocks (see store4).
fn store_blocks(first: u32, cb0: u32, npix: u32, a0: Acc4, a1: Acc4, a2: Acc4, a3: Acc4, a4: Acc4,
                a5: Acc4, a6: Acc4, a7: Acc4) {
    for (var j = 0u; j < min(8u, p.cout4 - cb0); j++) {
        var a = pick(a0, a1, j == 1u);
        a = pick(a, a2, j == 2u);
        a = pick(a, a3, j == 3u);
        a = pick(a, a4, j == 4u);
        a = pick(a, a5, j == 5u);
        a = pick(a, a6, j == 6u);
        a = pick(a, a7, j == 7u);
        store4(first, cb0 + j, a, npix);
    }
}
