// The optimizer's elementwise updates, as PyTorch's single-tensor AdamW (torch/optim/adam.py, the
// CPU default) and diffusers' EMAModel compute them (../shared/TRAINING.md sections 1 and 3), in
// their order of operations. Per-step scalars (the learning rate's schedule, bias corrections,
// the EMA's decay) come from a table row picked by a step counter on the device, so many steps
// run per submission. Each invocation updates PER elements, WG apart (so loads stay coalesced
// and a CPU driver runs a quarter of the workgroups); a 1-D grid spilled into y.
//
// adamw, with g = grad * clip (the clipping coefficient, 1 without clipping):
//   p = p * decay;  m = fma(1 - b1, g - m, m);  v = v * b2;  v = fma((1 - b2) g, g, v)
//   p = p + (neg_step lr_scale * m) / (sqrt(v) / bc2_sqrt + eps)    (lr_scale 1: exactly PyTorch's)
// then, with EMA, the EMA of the weights on the fresh p: shadow = shadow - (1 - d) (shadow - p)

struct Params {
    len: u32, groups_x: u32, one_minus_beta1: f32, beta2: f32,
    one_minus_beta2: f32, eps: f32,
    lr_scale: f32,  // this weight's learning rate over the run's (1: the same)
    _pad1: u32,
}

// One optimizer step's scalars (src/kernels/optim.rs: StepRow).
struct StepRow {
    decay: f32,      // f32(1 - lr wd)
    neg_step: f32,   // f32(-lr / (1 - b1^t))
    bc2_sqrt: f32,   // f32(sqrt(1 - b2^t))
    ema_one_minus_decay: f32,
}

const WG: u32 = 256u;
const PER: u32 = 4u;
override EMA: bool = false;

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> m1: array<f32>;
@group(0) @binding(3) var<storage, read_write> m2: array<f32>;
@group(0) @binding(4) var<storage, read> rows: array<StepRow>;
// [0]: the step counter (the row to use), [1]: the clipping coefficient's bits.
@group(0) @binding(5) var<storage, read> state: array<u32>;
@group(0) @binding(6) var<uniform> p: Params;
// The EMA's shadow of the weights (EMA only).
@group(0) @binding(7) var<storage, read_write> shadow: array<f32>;

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = (wg.x + wg.y * p.groups_x) * WG * PER + lid;
    let r = rows[state[0]];
    let clip = bitcast<f32>(state[1]);
    for (var k = 0u; k < PER; k++) {
        let i = first + k * WG;
        if (i >= p.len) { return; }
        let g = grad[i] * clip;
        let x = param[i] * r.decay;
        let m = fma(p.one_minus_beta1, g - m1[i], m1[i]);
        let v = fma(p.one_minus_beta2 * g, g, m2[i] * p.beta2);
        m1[i] = m;
        m2[i] = v;
        let updated = x + (r.neg_step * p.lr_scale * m) / (sqrt(v) / r.bc2_sqrt + p.eps);
        param[i] = updated;
        if (EMA) {
            let s = shadow[i];
            shadow[i] = s - r.ema_one_minus_decay * (s - updated);
        }
    }
}
