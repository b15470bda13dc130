// Helpers of conv2d's input gradient, which runs on the forward kernel:
//   dx = conv2d(dilate(dy), flip(W)) at stride 1, padded by k - 1 - pad (plus the output
//   padding on the bottom and right), as conv_transpose2d computes it.
// flip_weight: the packed forward weight [KH*KW, Cin, Cout4*4] to the packed weight of that conv,
//   [KH*KW, Cout, Cin4*4], each tap mirrored: W'[ci, co, ky, kx] = W[co, ci, KH-1-ky, KW-1-kx].
// dilate: dy [planes, Ho, Wo] to [planes, (Ho-1)s+1, (Wo-1)s+1] with s-1 zeros between values
//   (stride s > 1 only).
// interleave: a stride-s input gradient by phases (conv2d_backward.rs): one phase's rows and
//   columns [planes, M, N] into every s-th row and column of dx [planes, H, W], from (row0, col0).
// channels_last: the weight gradient's copies of x and dy (see below).

struct Params {
    len: u32,       // outputs
    kh: u32, kw: u32,
    cin: u32,       // the forward's
    cout: u32,      // the forward's
    cout_pad: u32,  // the forward's Cout rounded up to 4
    cin_pad: u32,   // the forward's Cin rounded up to 4
    stride: u32,
    ho: u32, wo: u32, // dy's map (dilate)
    hd: u32, wd: u32, // the dilated map (dilate)
    groups_x: u32,
    scale: f32, // channels_last with SUM
    _pad1: u32, _pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

fn index(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * p.groups_x) * WG + lid;
}

// Grid: x = co in workgroups of WG, y = ci, z = the tap (no divisions): reads contiguous along
// co, writes Cin4 apart. On lavapipe ddpm-cifar10-32's 88 flips took 140-191 ms this way against
// 215 ms with contiguous writes and strided reads (one noisy round each), and 402 ms as a tiled
// transpose through workgroup memory (its barriers). Entries past Cin stay the zeros the buffer
// was made with.
@compute @workgroup_size(WG)
fn flip_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let co = wg.x * WG + lid;
    if (co >= p.cout) { return; }
    let ci = wg.y;
    let tap = wg.z;
    let ky = p.kh - 1u - tap / p.kw;
    let kx = p.kw - 1u - tap % p.kw;
    dst[(tap * p.cout + co) * p.cin_pad + ci] = src[((ky * p.kw + kx) * p.cin + ci) * p.cout_pad + co];
}

@compute @workgroup_size(WG)
fn dilate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = index(wg, lid);
    if (j >= p.len) { return; }
    let x = j % p.wd;
    let y = (j / p.wd) % p.hd;
    let plane = j / (p.wd * p.hd);
    if (x % p.stride != 0u || y % p.stride != 0u) {
        dst[j] = 0.0;
        return;
    }
    dst[j] = src[(plane * p.ho + y / p.stride) * p.wo + x / p.stride];
}

// Fields: len = planes M N, kh = M, kw = N, stride, ho = row0, wo = col0, hd = H, wd = W.
@compute @workgroup_size(WG)
fn interleave(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = index(wg, lid);
    if (j >= p.len) { return; }
    let q = (j / p.kw) % p.kh;
    let plane = j / (p.kw * p.kh);
    let y = p.ho + p.stride * q;
    let x = p.wo + p.stride * (j % p.kw);
    dst[(plane * p.hd + y) * p.wd + x] = src[j];
}

// channels_last: x [N, C, HW] to [N, HW, C_pad] (C_pad = C rounded up to 4, zeros past C), the
// layout the weight gradient reads 4 channels of a pixel from as one texel. Grid: x = the block of
// 4 channels, y = the image; each workgroup walks its plane's pixels WG_PLANE at a time, so a 7x7
// map leaves few lanes idle. With SUM (dy's copy) the workgroup also sums its plane: sums[n C + c]
// = scale * the sum over the pixels, d channel add, per lane in pixel order and then over the
// lanes in order (the same bits every run, no atomics). Fields: cin = C, cin_pad = C_pad, ho = HW.
override SUM: bool = false;
const WG_PLANE: u32 = 64u;
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;
var<workgroup> partial: array<vec4<f32>, WG_PLANE>;

@compute @workgroup_size(WG_PLANE)
fn channels_last(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c0 = wg.x * 4u;
    let n = wg.y;
    // Channels past C read channel C - 1 and are replaced by zero.
    let ok = vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cin);
    let plane = (vec4<u32>(n * p.cin) + min(vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.cin - 1u))) * p.ho;
    var acc = vec4<f32>(0.0);
    for (var pixel = lid; pixel < p.ho; pixel += WG_PLANE) {
        let at = plane + vec4<u32>(pixel);
        let v = select(vec4<f32>(0.0), vec4<f32>(src[at.x], src[at.y], src[at.z], src[at.w]), ok);
        let d = (n * p.ho + pixel) * p.cin_pad + c0;
        dst[d] = v.x;
        dst[d + 1u] = v.y;
        dst[d + 2u] = v.z;
        dst[d + 3u] = v.w;
        acc += v;
    }
    if (!SUM) { return; }
    // One barrier, then one lane sums the partials in order (a tree would cost a barrier a level,
    // and barriers are dear on CPU drivers).
    partial[lid] = acc;
    workgroupBarrier();
    if (lid == 0u) {
        var total = vec4<f32>(0.0);
        for (var k = 0u; k < WG_PLANE; k++) { total += partial[k]; }
        for (var k = 0u; k < 4u; k++) {
            if (c0 + k < p.cin) { sums[n * p.cin + c0 + k] = total[k] * p.scale; }
        }
    }
}
