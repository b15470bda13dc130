// The optimizer's elementwise updates, as PyTorch's single-tensor AdamW (torch/optim/adam.py, the
// CPU default) and diffusers' EMAModel compute them (../shared/TRAINING.md sections 1 and 3), in
// their order of operations. Per-step scalars (the learning rate's schedule, bias corrections,
// the EMA's decay) come from a table row picked by a step counter on the device, so many steps
// run per submission. One invocation per element; a 1-D grid spilled into y.
//
// adamw, with g = grad * clip (the clipping coefficient, 1 without clipping):
//   p = p * decay;  m = fma(1 - b1, g - m, m);  v = v * b2;  v = fma((1 - b2) g, g, v)
//   p = p + (neg_step * m) / (sqrt(v) / bc2_sqrt + eps)
// ema: shadow = shadow - (1 - d) (shadow - p)

struct Params {
    len: u32, groups_x: u32, one_minus_beta1: f32, beta2: f32,
    one_minus_beta2: f32, eps: f32, _pad0: u32, _pad1: u32,
}

// One optimizer step's scalars (src/kernels/optim.rs: StepRow).
struct StepRow {
    decay: f32,      // f32(1 - lr wd)
    neg_step: f32,   // f32(-lr / (1 - b1^t))
    bc2_sqrt: f32,   // f32(sqrt(1 - b2^t))
    ema_one_minus_decay: f32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> m1: array<f32>;
@group(0) @binding(3) var<storage, read_write> m2: array<f32>;
@group(0) @binding(4) var<storage, read> rows: array<StepRow>;
// [0]: the step counter (the row to use), [1]: the clipping coefficient's bits.
@group(0) @binding(5) var<storage, read> state: array<u32>;
@group(0) @binding(6) var<uniform> p: Params;

fn element(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * p.groups_x) * WG + lid;
}

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, lid);
    if (i >= p.len) { return; }
    let r = rows[state[0]];
    let g = grad[i] * bitcast<f32>(state[1]);
    let x = param[i] * r.decay;
    let m = fma(p.one_minus_beta1, g - m1[i], m1[i]);
    let v = fma(p.one_minus_beta2 * g, g, m2[i] * p.beta2);
    m1[i] = m;
    m2[i] = v;
    param[i] = x + (r.neg_step * m) / (sqrt(v) / r.bc2_sqrt + p.eps);
}

// The EMA of the weights: m1 is the shadow, grad the freshly updated weights (param and m2 unused).
@compute @workgroup_size(WG)
fn ema(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, lid);
    if (i >= p.len) { return; }
    let r = rows[state[0]];
    let s = m1[i];
    m1[i] = s - r.ema_one_minus_decay * (s - grad[i]);
}
