// conv2d, NCHW f32: the implicit GEMM of conv2d.wgsl, sharing weights across a subgroup.
// Used where the adapter has subgroups of at least 8 lanes and the layer has at least 32 output
// channels; conv2d.wgsl is the portable kernel and the reference layout (same params, same
// bindings, same repacked [KH*KW, Cin, Cout4] weights, same fused epilogue).
//
// Every lane of a subgroup works on the same 32 output channels (8 vec4 blocks) for its own 4
// pixels. Per input channel and tap, lane k < 8 loads weight block k once and
// subgroupBroadcast hands it to every lane: each lane loads 4 input values and one weight vec4 for
// 32 vec4 FMAs, four times the FMAs per loaded value of conv2d.wgsl. With ROWS4 (stride 1, rows
// whole texels) the 4 input values come as one texel or two instead of 4 scalar fetches. Loads are what costs most on
// CPU drivers (lavapipe runs each one lane by lane), and on GPUs the broadcast replaces redundant
// cache traffic.

// (wgpu 30 takes subgroup builtins without an `enable` directive, with the SUBGROUP feature on.)

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, hout: u32, wout: u32, cout4: u32,
    kh: u32, kw: u32, stride: u32, pad_top: u32,
    pad_left: u32, scale: f32, _pad0: u32, _pad1: u32,
}

override WG_X: u32 = 64;
override HAS_BIAS: bool = true;
override HAS_CHANNEL_ADD: bool = false;
override HAS_RESIDUAL: bool = false;
// Output maps whose H*W is a multiple of 4: every quad of pixels is one aligned vec4, and the
// by-value store path is compiled out (it doubles compile time on CPU drivers).
override ALIGNED: bool = false;
// Stride 1 with input and output rows whole texels (W % 4 == 0): a lane's 4 pixels read 4
// consecutive input values per tap, one texel or two (not 4 scalar fetches).
override ROWS4: bool = false;

// x and the packed weights are read as texels (see src/gpu/texels.rs): float i of a buffer is
// component i % 4 of texel i / 4, at (texel % 1024, texel / 1024).
@group(0) @binding(0) var x: texture_2d<f32>;
@group(0) @binding(1) var wt: texture_2d<f32>;

fn x_at(i: u32) -> f32 {
    return textureLoad(x, vec2<u32>((i >> 2u) & 1023u, i >> 12u), 0)[i & 3u];
}

fn x_texel(t: i32) -> vec4<f32> {
    let u = u32(max(t, 0));
    return textureLoad(x, vec2<u32>(u & 1023u, u >> 10u), 0);
}

// Values s .. s + 3 of the 8 in t0, t1 (s uniform across the subgroup).
fn window(t0: vec4<f32>, t1: vec4<f32>, s: u32) -> vec4<f32> {
    if (s == 1u) { return vec4<f32>(t0.yzw, t1.x); }
    if (s == 2u) { return vec4<f32>(t0.zw, t1.xy); }
    return vec4<f32>(t0.w, t1.xyz);
}

fn wt_at(i: u32) -> vec4<f32> {
    return textureLoad(wt, vec2<u32>(i & 1023u, i >> 10u), 0);
}
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> chan_add: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> p: Params;

struct Acc4 { p0: vec4<f32>, p1: vec4<f32>, p2: vec4<f32>, p3: vec4<f32> }

fn fma4(a: Acc4, w: vec4<f32>, xq: vec4<f32>) -> Acc4 {
    return Acc4(fma(w, vec4<f32>(xq.x), a.p0), fma(w, vec4<f32>(xq.y), a.p1),
                fma(w, vec4<f32>(xq.z), a.p2), fma(w, vec4<f32>(xq.w), a.p3));
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
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(subgroup_invocation_id) lane: u32) {
    let hw_out = p.hout * p.wout;
    let npix = p.n * hw_out;
    let pix0 = gid.x * 4u;
    let cb0 = wid.y * 8u;
    // Every lane stays to the end: the broadcasts need the whole subgroup, and a divergent exit
    // would make CPU drivers run later loads lane by lane. Pixels past the end are clamped.
    let pix = min(vec4<u32>(pix0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(npix - 1u));
    let r = pix % hw_out;
    let img = (pix / hw_out) * (p.cin * p.h * p.w);
    let ih0 = vec4<i32>((r / p.wout) * p.stride) - i32(p.pad_top);
    let iw0 = vec4<i32>((r % p.wout) * p.stride) - i32(p.pad_left);
    let hw_in = vec4<u32>(p.h * p.w);
    // The weight block this lane fetches for the subgroup (clamped: blocks past Cout4 are not stored).
    let my_block = min(cb0 + (lane & 7u), p.cout4 - 1u);
    let zero = Acc4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var a0 = zero;
    var a1 = zero;
    var a2 = zero;
    var a3 = zero;
    var a4 = zero;
    var a5 = zero;
    var a6 = zero;
    var a7 = zero;
    for (var kh = 0u; kh < p.kh; kh++) {
        for (var kw = 0u; kw < p.kw; kw++) {
            let ih = ih0 + i32(kh);
            let iw = iw0 + i32(kw);
            let ok = (ih >= vec4<i32>(0)) & (ih < vec4<i32>(i32(p.h))) & (iw >= vec4<i32>(0)) & (iw < vec4<i32>(i32(p.w)));
            var idx = select(vec4<u32>(0u), img + vec4<u32>(ih * i32(p.w) + iw), ok);
            var widx = (kh * p.kw + kw) * p.cin * p.cout4 + my_block;
            // ROWS4: the 4 inputs start at the first lane pixel's column; `shift` is where they
            // start within a texel (the same for every lane), t their first texel.
            let first = img.x + u32(max(ih.x, 0)) * p.w;
            let start = iw.x;
            let shift = u32(start & 3);
            var t = (i32(first) + start - i32(shift)) / 4;
            for (var ci = 0u; ci < p.cin; ci++) {
                let mine = wt_at(widx);
                var xv: vec4<f32>;
                if (ROWS4) {
                    let t0 = x_texel(t);
                    xv = t0;
                    if (shift != 0u) { xv = window(t0, x_texel(t + 1), shift); }
                    t += i32(hw_in.x / 4u);
                } else {
                    xv = vec4<f32>(x_at(idx.x), x_at(idx.y), x_at(idx.z), x_at(idx.w));
                }
                let xq = select(vec4<f32>(0.0), xv, ok);
                a0 = fma4(a0, subgroupBroadcast(mine, 0u), xq);
                a1 = fma4(a1, subgroupBroadcast(mine, 1u), xq);
                a2 = fma4(a2, subgroupBroadcast(mine, 2u), xq);
                a3 = fma4(a3, subgroupBroadcast(mine, 3u), xq);
                a4 = fma4(a4, subgroupBroadcast(mine, 4u), xq);
                a5 = fma4(a5, subgroupBroadcast(mine, 5u), xq);
                a6 = fma4(a6, subgroupBroadcast(mine, 6u), xq);
                a7 = fma4(a7, subgroupBroadcast(mine, 7u), xq);
                idx += hw_in;
                widx += p.cout4;
            }
        }
    }
    store4(pix0, cb0, a0, npix);
    store4(pix0, cb0 + 1u, a1, npix);
    store4(pix0, cb0 + 2u, a2, npix);
    store4(pix0, cb0 + 3u, a3, npix);
    store4(pix0, cb0 + 4u, a4, npix);
    store4(pix0, cb0 + 5u, a5, npix);
    store4(pix0, cb0 + 6u, a6, npix);
    store4(pix0, cb0 + 7u, a7, npix);
}
