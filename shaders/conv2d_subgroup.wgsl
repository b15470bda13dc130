// conv2d, NCHW f32: the implicit GEMM of conv2d.wgsl, sharing weights across a subgroup.
// Used where the adapter has subgroups of at least 8 lanes and the layer has at least 32 output
// channels; conv2d.wgsl is the portable kernel and the reference layout (same params, same
// bindings, same repacked [KH*KW, Cin, Cout4] weights, same fused epilogue).
//
// Every lane of a subgroup works on the same 32 output channels (8 vec4 blocks) for its own 4
// pixels. Per input channel and tap, lane k < 8 loads weight block k once and
// subgroupBroadcast hands it to every lane: each lane loads 4 input values and one weight vec4 for
// 32 vec4 FMAs, four times the FMAs per loaded value of conv2d.wgsl. With ROWS4 (stride 1, rows
// whole texels) the 4 input values come as one texel or two instead of 4 scalar fetches. Loads
// are what costs most on CPU drivers (lavapipe runs each one lane by lane), and on GPUs the
// broadcast replaces redundant cache traffic.

// (wgpu 30 takes subgroup builtins without an `enable` directive, with the SUBGROUP feature on.)

// Params, bindings, texel reads, Acc4/fma4/pick and the store epilogue: common/conv2d_io.wgsl.

// Stride 1 with input and output rows whole texels (W % 4 == 0): a lane's 4 pixels read 4
// consecutive input values per tap, one texel or two (not 4 scalar fetches).
override ROWS4: bool = false;

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
    // The input channels this invocation sums: all, or its split's (see SPLIT).
    var c_lo = 0u;
    var c_hi = p.cin;
    if (SPLIT) {
        c_lo = wid.z * p.split_chans;
        c_hi = min(p.cin, c_lo + p.split_chans);
        out_base = wid.z * p.split_len;
    }
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
            var idx = select(vec4<u32>(0u), img + vec4<u32>(ih * i32(p.w) + iw), ok) + c_lo * hw_in;
            var widx = ((kh * p.kw + kw) * p.cin + c_lo) * p.cout4 + my_block;
            // ROWS4: the 4 inputs start at the first lane pixel's column; `shift` is where they
            // start within a texel (the same for every lane), t their first texel.
            let first = img.x + u32(max(ih.x, 0)) * p.w;
            let start = iw.x;
            let shift = u32(start & 3);
            var t = (i32(first) + start - i32(shift)) / 4 + i32(c_lo * (hw_in.x / 4u));
            for (var ci = c_lo; ci < c_hi; ci++) {
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
    store_blocks(pix0, cb0, npix, a0, a1, a2, a3, a4, a5, a6, a7);
}
