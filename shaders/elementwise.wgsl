// Elementwise kernels, one invocation per output element: SiLU, add, accumulate, affine (alpha x + beta) and
// nearest 2x upsampling, all NCHW f32 (channel concatenation is buffer copies: elementwise.rs).
// They share one binding layout (src0, src1, dst, params); unary kernels leave src1 unused.

struct Params {
    len: u32,    // output elements
    mode: u32,   // gaussian_sample: 1 takes the mean (the posterior's mode)
    oh: u32,     // upsample: output height
    ow: u32,     // upsample: output width
    h: u32,      // upsample: input height; gaussian_sample: latent channels
    w: u32,      // upsample: input width; gaussian_sample: pixels a channel
    alpha: f32,  // affine: factor; gaussian_sample: scaling factor
    beta: f32,   // affine: offset; gaussian_sample: shift
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> src0: array<f32>;
@group(0) @binding(1) var<storage, read> src1: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// Linear element index over a grid that may be split across x and y (see gpu::grid).
fn element(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn silu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    let v = src0[i];
    dst[i] = v / (1.0 + exp(-v));
}

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = src0[i] + src1[i];
}

// dst += src0: a micro-batch's gradients added into the step's.
@compute @workgroup_size(WG)
fn accumulate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = dst[i] + src0[i];
}

@compute @workgroup_size(WG)
fn affine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = fma(src0[i], p.alpha, p.beta);
}

// Nearest-neighbour upsampling of each (n, c) plane from h x w to oh x ow, as PyTorch's
// F.interpolate(mode="nearest"): dst[y, x] = src[y h / oh, x w / ow] (floors); 2x is y / 2.
@compute @workgroup_size(WG)
fn upsample_nearest2x(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let plane = i / (p.oh * p.ow);
    dst[i] = src0[(plane * p.h + oy * p.h / p.oh) * p.w + ox * p.w / p.ow];
}

// Backward of SiLU: dst = dy * sigmoid(x) (1 + x (1 - sigmoid(x))), src0 = x, src1 = dy.
@compute @workgroup_size(WG)
fn silu_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    let x = src0[i];
    let s = 1.0 / (1.0 + exp(-x));
    dst[i] = src1[i] * (s * (1.0 + x * (1.0 - s)));
}

// Backward of nearest 2x upsampling: each input pixel sums its 2x2 block of dy (src0 = dy
// [planes, 2H, 2W]); len counts the input pixels, h and w are the input's.
@compute @workgroup_size(WG)
fn upsample_nearest2x_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let plane = i / (p.h * p.w);
    let top = (plane * 2u * p.h + 2u * y) * 2u * p.w + 2u * x;
    let below = top + 2u * p.w;
    dst[i] = (src0[top] + src0[top + 1u]) + (src0[below] + src0[below + 1u]);
}

// Gradient of the mean squared error: dst = alpha * (src0 - src1), alpha = f32(2 / numel) from the
// host (as PyTorch's mse_loss backward computes it: the difference first, then one product).
@compute @workgroup_size(WG)
fn mse_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = p.alpha * (src0[i] - src1[i]);
}

// An AutoencoderKL posterior's latents, scaled as pipelines scale them: src0 holds the moments
// [B, 2L, HW] (mean, then log-variance), src1 standard-normal eps [B, L, HW]:
//   dst = (mean + exp(0.5 clamp(logvar, -30, 20)) eps - shift) * scale     (mode: eps = 0)
@compute @workgroup_size(WG)
fn gaussian_sample(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    let per = p.h * p.w;
    let m = (i / per) * 2u * per + i % per;
    var x = src0[m];
    if (p.mode == 0u) {
        let sigma = exp(0.5 * clamp(src0[m + per], -30.0, 20.0));
        x = x + sigma * src1[i];
    }
    dst[i] = (x - p.beta) * p.alpha;
}

// A batch's gradient from its shares' (src0 [shares, len], the shares in batch order), summed
// in the one order every run uses: dst = ((s0 + s1) + s2) + ..., the additions `accumulate`
// makes when one process sums the shares as it computes them, so any split of the shares over
// processes gives the same bits. h = the number of shares.
@compute @workgroup_size(WG)
fn sum_shares(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    var acc = src0[i];
    for (var s = 1u; s < p.h; s++) {
        acc = acc + src0[s * p.len + i];
    }
    dst[i] = acc;
}

// erf in f32: XLA's and Eigen's rational approximation on [-4, 4] (|error| < 4e-7; erf is 1
// within f32 rounding outside), as WGSL has no erf.
fn erf_f32(v: f32) -> f32 {
    let x = clamp(v, -4.0, 4.0);
    let x2 = x * x;
    var n = x2 * -2.72614225801306e-10 + 2.77068142495902e-08;
    n = n * x2 - 2.10102402082508e-06;
    n = n * x2 - 5.69250639462346e-05;
    n = n * x2 - 7.34990630326855e-04;
    n = n * x2 - 2.95459980854025e-03;
    n = n * x2 - 1.60960333262415e-02;
    var d = x2 * -1.45660718464996e-05 - 2.13374055278905e-04;
    d = d * x2 - 1.68282697438203e-03;
    d = d * x2 - 7.37332916720468e-03;
    d = d * x2 - 1.42647390514189e-02;
    return x * n / d;
}

// GELU as configured: mode 0 the exact one, x/2 (1 + erf(x/sqrt 2)) (PyTorch's default,
// transformers' "gelu"); mode 1 CLIP's quick_gelu, x sigmoid(1.702 x).
fn gelu_of(v: f32, mode: u32) -> f32 {
    if (mode == 1u) {
        return v / (1.0 + exp(-1.702 * v));
    }
    return 0.5 * v * (1.0 + erf_f32(v * 0.7071067811865476));
}

@compute @workgroup_size(WG)
fn gelu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = gelu_of(src0[i], p.mode);
}

// GEGLU (diffusers' feed-forward): src0 [N, 2C, HW] holds the values, then the gates, along the
// channels; dst [N, C, HW] = value * gelu(gate). h = C * HW, the elements of one half.
@compute @workgroup_size(WG)
fn geglu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= p.len) { return; }
    let v = (i / p.h) * 2u * p.h + i % p.h;
    dst[i] = src0[v] * gelu_of(src0[v + p.h], p.mode);
}
