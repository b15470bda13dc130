// conv2d's weight gradient, written in the kernel's packed layout [KH*KW, Cin, Cout4*4] (the
// layout of the weight itself, so an optimizer updates both elementwise):
//   dW[co, ci, ky, kx] = scale * sum over (n, oy, ox) of dy[n, co, oy, ox] x[n, ci, oy s + ky - pad_top, ox s + kx - pad_left]
// Each invocation owns one tap x 4 input channels x 4 output channels (16 accumulators) and
// walks the pixels of its split in order: split z of Z sums pixels [z P / Z, (z + 1) P / Z) of the
// P = N Ho Wo and writes its partial at z * packed length, and the split-K reduce pass
// (matmul_reduce.wgsl) sums the splits in order: the batch reduction is the same bits every run,
// no atomics. Splits keep each loop under lavapipe's loop cap on CPU drivers and fill a GPU.
// x and dy are read as texels (see src/gpu/texels.rs).

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, hout: u32, wout: u32, cout4: u32,
    kh: u32, kw: u32, stride: u32, pad_top: u32,
    pad_left: u32, scale: f32, cin4: u32, pixels_per_split: u32,
    groups_x: u32, packed_len: u32, _pad0: u32, _pad1: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var x: texture_2d<f32>;
@group(0) @binding(1) var dy: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: Params;

fn x_at(i: u32) -> f32 {
    return textureLoad(x, vec2<u32>((i >> 2u) & 1023u, i >> 12u), 0)[i & 3u];
}

fn dy_at(i: u32) -> f32 {
    return textureLoad(dy, vec2<u32>((i >> 2u) & 1023u, i >> 12u), 0)[i & 3u];
}

@compute @workgroup_size(WG)
fn conv2d_weight_grad(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // (tap, ci block, co block), co fastest.
    let j = (wg.x + wg.y * p.groups_x) * WG + lid;
    let blocks = p.kh * p.kw * p.cin4 * p.cout4;
    // No exit before the loop (lavapipe runs loads lane by lane after a divergent one): blocks past
    // the end redo the last and skip the store.
    let valid = j < blocks;
    let b = min(j, blocks - 1u);
    let cb = b % p.cout4;
    let ib = (b / p.cout4) % p.cin4;
    let tap = b / (p.cout4 * p.cin4);
    let ky = tap / p.kw;
    let kx = tap % p.kw;
    let co = cb * 4u;
    let ci = ib * 4u;
    // Channels past the end read channel 0 and are zeroed (co) or not stored (ci).
    let co_ok = vec4<u32>(co) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cout);
    let ci_ok = vec4<u32>(ci) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cin);
    let cov = select(vec4<u32>(0u), vec4<u32>(co) + vec4<u32>(0u, 1u, 2u, 3u), co_ok);
    let civ = select(vec4<u32>(0u), vec4<u32>(ci) + vec4<u32>(0u, 1u, 2u, 3u), ci_ok);

    let hw_out = p.hout * p.wout;
    let total = p.n * hw_out;
    let lo = wg.z * p.pixels_per_split;
    let hi = min(total, lo + p.pixels_per_split);
    var a0 = vec4<f32>(0.0); // input channel ci + 0, output channels co .. co + 3
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var q = lo; q < hi; q++) {
        let n = q / hw_out;
        let r = q % hw_out;
        let oy = r / p.wout;
        let ox = r % p.wout;
        let iy = i32(oy * p.stride + ky) - i32(p.pad_top);
        let ix = i32(ox * p.stride + kx) - i32(p.pad_left);
        let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
        let pix = select(0u, u32(iy) * p.w + u32(ix), inside);
        let xb = n * p.cin * p.h * p.w + pix;
        let plane = p.h * p.w;
        let xv = select(vec4<f32>(0.0), vec4<f32>(x_at(xb + civ.x * plane), x_at(xb + civ.y * plane),
                                                  x_at(xb + civ.z * plane), x_at(xb + civ.w * plane)), inside);
        let db = n * p.cout * hw_out + r;
        let g = select(vec4<f32>(0.0), vec4<f32>(dy_at(db + cov.x * hw_out), dy_at(db + cov.y * hw_out),
                                                 dy_at(db + cov.z * hw_out), dy_at(db + cov.w * hw_out)), co_ok);
        a0 = fma(vec4<f32>(xv.x), g, a0);
        a1 = fma(vec4<f32>(xv.y), g, a1);
        a2 = fma(vec4<f32>(xv.z), g, a2);
        a3 = fma(vec4<f32>(xv.w), g, a3);
    }
    if (!valid) {
        return;
    }
    // Row (tap, ci + k) of the packed layout holds Cout4 * 4 values: block cb is one vec4.
    let row0 = (tap * p.cin + ci) * p.cout4 + cb + wg.z * p.packed_len / 4u;
    for (var k = 0u; k < min(4u, p.cin - ci); k++) {
        let v = select(select(a0, a1, k == 1u), select(a2, a3, k == 3u), k >= 2u);
        out[row0 + k * p.cout4] = v * p.scale;
    }
}
