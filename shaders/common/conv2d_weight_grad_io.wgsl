// Shared by conv2d_weight_grad.wgsl and conv2d_weight_grad_subgroup.wgsl (appended to each by
// src/shaders.rs): the parameters, bindings, texel reads and accumulator block of conv2d's weight
// gradient. Fields past rows_per_split: groups_x and splits are the portable kernel's.

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, hout: u32, wout: u32, cout4: u32,
    kh: u32, kw: u32, stride: u32, pad_top: u32,
    pad_left: u32, scale: f32, cin4: u32, rows_per_split: u32,
    groups_x: u32, packed_len: u32, splits: u32, _pad1: u32,
}

@group(0) @binding(0) var x: texture_2d<f32>;
@group(0) @binding(1) var dy: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: Params;

// Texel t (4 channels of one pixel) of a channels-last copy (see src/gpu/texels.rs).
fn texel(t: texture_2d<f32>, i: u32) -> vec4<f32> {
    return textureLoad(t, vec2<u32>(i & 1023u, i >> 10u), 0);
}

// Four input channels (the components of xv) x one block of four output channels.
struct Acc4 { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }

fn outer(acc: Acc4, xv: vec4<f32>, g: vec4<f32>) -> Acc4 {
    return Acc4(fma(vec4<f32>(xv.x), g, acc.a), fma(vec4<f32>(xv.y), g, acc.b),
                fma(vec4<f32>(xv.z), g, acc.c), fma(vec4<f32>(xv.w), g, acc.d));
}

fn row_of(acc: Acc4, k: u32) -> vec4<f32> {
    return select(select(acc.a, acc.b, k == 1u), select(acc.c, acc.d, k == 3u), k >= 2u);
}

// Output row (n, oy) at tap row ky: the input row it reads (its first pixel), and whether that
// row is inside the image (padding rows read as zeros).
struct InputRow { ok: bool, first: u32 }

fn input_row(n: u32, oy: u32, ky: u32) -> InputRow {
    let iy = i32(oy * p.stride + ky) - i32(p.pad_top);
    return InputRow(iy >= 0 && iy < i32(p.h), (n * p.h + u32(max(iy, 0))) * p.w);
}

// The output row after (n, oy), images in order.
fn next_row(at: vec2<u32>) -> vec2<u32> {
    if (at.y + 1u == p.hout) {
        return vec2<u32>(at.x + 1u, 0u);
    }
    return vec2<u32>(at.x, at.y + 1u);
}
