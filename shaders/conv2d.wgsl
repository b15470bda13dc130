// conv2d, NCHW f32, as an implicit GEMM with register blocking.
//
//   out[n, co, oh, ow] = sum_{kh, kw, ci} w[co, ci, kh, kw] * x[n, ci, oh*s + kh - pad_top, ow*s + kw - pad_left]
//
// The weight is repacked once at load time to [KH*KW, Cin, Cout4] vec4s (Cout padded to a multiple of
// 4 with zeros), so the 4 output channels of a block are one aligned vec4 load. Each invocation owns a
// 4x4 block: 4 output channels x 4 consecutive output pixels (pixels run over N*Hout*Wout, so a block
// may span rows or images). Loops run (kh, kw) outside and Cin inside, so bounds checks and spatial
// offsets are computed once per tap and the inner loop is 4 loads, 1 vec4 load and 4 vec4 FMAs.
// Padding is implicit: taps outside the input read nothing and count as zero, which also gives
// diffusers' right/bottom-only pad (Downsample2D with padding=0) through pad_top = pad_left = 0.
//
// Epilogue, fused: + bias[co], + chan_add[n, co] (time embedding), + residual[n, co, oh, ow], * scale.

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, hout: u32, wout: u32, cout4: u32,
    kh: u32, kw: u32, stride: u32, pad_top: u32,
    pad_left: u32, scale: f32, _pad0: u32, _pad1: u32,
}

override WG_X: u32 = 16;          // pixel blocks per workgroup
override WG_Y: u32 = 4;           // channel blocks per workgroup
override HAS_BIAS: bool = true;
override HAS_CHANNEL_ADD: bool = false;
override HAS_RESIDUAL: bool = false;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> chan_add: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

fn store(pix: u32, co: u32, acc: f32) {
    let hw_out = p.hout * p.wout;
    let n = pix / hw_out;
    let off = (n * p.cout + co) * hw_out + pix % hw_out;
    var v = acc;
    if (HAS_BIAS) { v += bias[co]; }
    if (HAS_CHANNEL_ADD) { v += chan_add[n * p.cout + co]; }
    if (HAS_RESIDUAL) { v += residual[off]; }
    out[off] = v * p.scale;
}

@compute @workgroup_size(WG_X, WG_Y)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hw_out = p.hout * p.wout;
    let npix = p.n * hw_out;
    let pix0 = gid.x * 4u;
    let cb = gid.y;
    if (pix0 >= npix || cb >= p.cout4) {
        return;
    }
    // The 4 pixels of this block (clamped to the last one; their results are not stored).
    let pix = min(vec4<u32>(pix0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(npix - 1u));
    let n = pix / hw_out;
    let r = pix % hw_out;
    let ih0 = vec4<i32>((r / p.wout) * p.stride) - i32(p.pad_top);
    let iw0 = vec4<i32>((r % p.wout) * p.stride) - i32(p.pad_left);
    let hw_in = p.h * p.w;
    let img = n * (p.cin * hw_in);
    let h = i32(p.h);
    let w = i32(p.w);

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kh = 0u; kh < p.kh; kh++) {
        let ih = ih0 + i32(kh);
        let row_ok = (ih >= vec4<i32>(0)) & (ih < vec4<i32>(h));
        for (var kw = 0u; kw < p.kw; kw++) {
            let iw = iw0 + i32(kw);
            let ok = row_ok & (iw >= vec4<i32>(0)) & (iw < vec4<i32>(w));
            // Taps outside the image read a valid element and are replaced by zero.
            var idx = select(vec4<u32>(0u), img + vec4<u32>(ih * w + iw), ok);
            var widx = ((kh * p.kw + kw) * p.cin) * p.cout4 + cb;
            for (var ci = 0u; ci < p.cin; ci++) {
                let wv = wt[widx];
                let xv = select(vec4<f32>(0.0), vec4<f32>(x[idx.x], x[idx.y], x[idx.z], x[idx.w]), ok);
                acc0 = fma(wv, vec4<f32>(xv.x), acc0);
                acc1 = fma(wv, vec4<f32>(xv.y), acc1);
                acc2 = fma(wv, vec4<f32>(xv.z), acc2);
                acc3 = fma(wv, vec4<f32>(xv.w), acc3);
                idx += vec4<u32>(hw_in);
                widx += p.cout4;
            }
        }
    }

    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var j = 0u; j < 4u; j++) {
        let pj = pix0 + j;
        if (pj >= npix) { break; }
        for (var c = 0u; c < 4u; c++) {
            let co = cb * 4u + c;
            if (co < p.cout) { store(pj, co, accs[j][c]); }
        }
    }
}
