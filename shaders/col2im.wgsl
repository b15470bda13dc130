// col2im: conv2d's input gradient in the column form (conv2d_backward.rs), where the map is small
// beside the channels. The matmul kernel makes the columns, cols = W^T dy per image: cols [N,
// KH KW Cin, Ho Wo], row (ky KW + kx) Cin + ci (tap outer, as the packed weight's rows), with no
// flipped weight. This sums each input pixel's taps:
//   dx[n, ci, iy, ix] = scale * sum over the taps with iy + pad_top - ky = s oy (and the same
//   for columns), 0 <= oy < Ho, of cols[n, (ky KW + kx) Cin + ci, oy Wo + ox]; taps in order.
// A lane per dx row, walking its columns: divisions per element (CPUs divide lane by lane) made
// this 0.6-0.9 ms of a 1.9 ms input gradient at 8x8 on lavapipe; the stride is a constant for the
// same reason.

struct Params {
    rows: u32, // dx rows, N Cin H
    cin: u32, h: u32, w: u32,
    ho: u32, wo: u32,
    kh: u32, kw: u32,
    pad_top: u32, pad_left: u32,
    scale: f32,
    groups_x: u32,
    _pad0: u32, _pad1: u32, _pad2: u32, _pad3: u32,
}

override STRIDE: u32 = 1u;
const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

fn index(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * p.groups_x) * WG + lid;
}

// The dy row or column that tap k reaches from input row or column i, or -1.
fn reached(i: u32, pad: u32, k: u32, size: u32) -> i32 {
    let t = i32(i + pad) - i32(k);
    if (t < 0 || u32(t) % STRIDE != 0u || u32(t) / STRIDE >= size) {
        return -1;
    }
    return i32(u32(t) / STRIDE);
}

@compute @workgroup_size(WG)
fn col2im(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = index(wg, lid);
    if (j >= p.rows) { return; }
    let iy = j % p.h;
    let ci = (j / p.h) % p.cin;
    let n = j / (p.h * p.cin);
    let plane = p.ho * p.wo;
    for (var ix = 0u; ix < p.w; ix++) {
        var acc = 0.0;
        for (var ky = 0u; ky < p.kh; ky++) {
            let oy = reached(iy, p.pad_top, ky, p.ho);
            if (oy < 0) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ox = reached(ix, p.pad_left, kx, p.wo);
                if (ox < 0) { continue; }
                let row = (n * p.kh * p.kw + ky * p.kw + kx) * p.cin + ci;
                acc += src[row * plane + u32(oy) * p.wo + u32(ox)];
            }
        }
        dst[j * p.w + ix] = acc * p.scale;
    }
}
