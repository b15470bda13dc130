// LayerNorm over the channels of each pixel (token) of an NCHW tensor: PyTorch's nn.LayerNorm(C)
// on the [N, HW, C] view transformers and diffusers' transformer blocks take, without moving the
// data. One invocation a token; neighbouring invocations read neighbouring tokens of one channel,
// so every load of a warp is one contiguous run. Two passes (mean, then the squared deviations)
// in f32, as PyTorch's CPU kernel and cuDNN give within rounding.

struct Params {
    tokens: u32, // N * HW
    c: u32,
    hw: u32,
    eps: f32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn layer_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let token = (wg.x + wg.y * nwg.x) * WG + lid;
    if (token >= p.tokens) { return; }
    let n = token / p.hw;
    let base = n * p.c * p.hw + token % p.hw;
    var sum = 0.0;
    for (var k = 0u; k < p.c; k++) {
        sum += x[base + k * p.hw];
    }
    let mean = sum / f32(p.c);
    var sq = 0.0;
    for (var k = 0u; k < p.c; k++) {
        let d = x[base + k * p.hw] - mean;
        sq += d * d;
    }
    let rstd = inverseSqrt(sq / f32(p.c) + p.eps);
    for (var k = 0u; k < p.c; k++) {
        let i = base + k * p.hw;
        y[i] = (x[i] - mean) * rstd * gamma[k] + beta[k];
    }
}
