// Helpers of conv2d's input gradient, which runs on the forward kernel:
//   dx = conv2d(dilate(dy), flip(W)) at stride 1, padded by k - 1 - pad (plus the output
//   padding on the bottom and right), as conv_transpose2d computes it (flip: flip_weight.wgsl).
// dilate: dy [planes, Ho, Wo] to [planes, (Ho-1)s+1, (Wo-1)s+1] with s-1 zeros between values
//   (stride s > 1 only).
// interleave: a stride-s input gradient by phases (conv2d_backward.rs): one phase's rows and
//   columns [planes, M, N] into every s-th row and column of dx [planes, H, W], from (row0, col0).

struct Params {
    len: u32,       // outputs
    kh: u32, kw: u32, // interleave
    stride: u32,
    ho: u32, wo: u32, // dy's map (dilate)
    hd: u32, wd: u32, // the dilated map (dilate)
    groups_x: u32,
    _pad0: u32, _pad1: u32, _pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

fn index(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * p.groups_x) * WG + lid;
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

// One lane a phase row, walking its N columns: a division per element (CPUs divide lane by lane)
// made this kernel a third of a stride-2 input gradient on lavapipe.
// Fields: len = planes M, kh = M, kw = N, stride, ho = row0, wo = col0, hd = H, wd = W.
@compute @workgroup_size(WG)
fn interleave(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = index(wg, lid);
    if (j >= p.len) { return; }
    let y = p.ho + p.stride * (j % p.kh);
    var to = ((j / p.kh) * p.hd + y) * p.wd + p.wo;
    var at = j * p.kw;
    for (var m = 0u; m < p.kw; m++) {
        dst[to] = src[at];
        to += p.stride;
        at += 1u;
    }
}
