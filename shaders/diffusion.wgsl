// The diffusion updates: forward noising and one reverse (sampler) step.
//
// add_noise:     x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, with t per batch element, read from a
//                table of (sqrt(abar), sqrt(1 - abar)) indexed by timestep.
// prepare_step:  the UNet's inputs for this step: model_in = model_in_scale * x (diffusers'
//                scale_model_input), repeated once per guidance row ([x; x] for classifier-free
//                guidance's unconditional and conditional rows), and the step's timestep for
//                every batch item.
// guide:         classifier-free guidance on the model output [uncond; cond] (2 len values):
//                  out = uncond + scale (cond - uncond)
//                (diffusers' and DiT's formula), the model output the sampler update reads.
// sampler_step:  one step of DDPM, DDIM, Euler, Euler ancestral or DPM-Solver++(2M), all of one linear
//                form, with coefficients read from a per-step table by the step index held on the
//                device, so a whole chain can be recorded without reading anything back:
//                  saved <- x (save);  X = saved (from_saved) or x
//                  x0   = x0_x * X + x0_m * model_out                       (prediction type)
//                  x0   = clamp(x0, -clip, clip)                            (when clip > 0)
//                  eps  = eps_x * X + eps_m * model_out + eps_x0 * x0      (noise implied by x0)
//                  x   <- next_x0 * x0 + next_x * X + next_eps * eps
//                         + next_prev_x0 * h1 + next_prev2 * h2 + next_prev3 * h3 + noise_scale * z
//                  h1 <- x0, after h3 <- h2, h2 <- h1 where depth is 3     (multistep history,
//                                                                           unless skip_history)
//                It updates x and the history [h1, h2, h3, saved] in place (element i reads and
//                writes only element i of each). PNDM (PLMS) runs on it with x0 = the model output.
// repaint_mix:   RePaint's two updates of x beside a sampler step, from a table of MixRow read by
//                a counter on the device: the join after each step, with the same z the step used,
//                  x <- mask (known_orig orig + known_z z) + (1 - mask) x
//                (mask 1 keeps the original pixel), and each renoising of an undo step,
//                  x <- keep x + fresh z          (use_mask 0)
// advance_step:  step += 1, recorded after each step of a chain.

struct StepCoeffs {
    x0_x: f32, x0_m: f32, clip: f32, eps_x: f32,
    eps_m: f32, eps_x0: f32, next_x0: f32, next_x: f32,
    next_eps: f32, next_prev_x0: f32, noise_scale: f32, model_in_scale: f32,
    timestep: f32, next_prev2: f32, next_prev3: f32, depth: f32,
    skip_history: f32, from_saved: f32, save: f32, _pad0: f32,
}

struct Params {
    len: u32,       // elements in total (prepare_step: of the model input, every copy of x)
    per_item: u32,  // elements per batch item (add_noise); elements of x (prepare_step)
    batch: u32,     // batch items (prepare_step)
    _pad: u32,
}

const WG: u32 = 256u;

fn element(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

// ---- add_noise ----
@group(0) @binding(0) var<storage, read> an_x0: array<f32>;
@group(0) @binding(1) var<storage, read> an_eps: array<f32>;
@group(0) @binding(2) var<storage, read> an_t: array<u32>;
@group(0) @binding(3) var<storage, read> an_table: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> an_out: array<f32>;
@group(0) @binding(5) var<uniform> an_p: Params;

@compute @workgroup_size(WG)
fn add_noise(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= an_p.len) { return; }
    let c = an_table[an_t[i / an_p.per_item]];
    an_out[i] = c.x * an_x0[i] + c.y * an_eps[i];
}

// ---- prepare_step ----
@group(0) @binding(0) var<storage, read> ps_x: array<f32>;
@group(0) @binding(1) var<storage, read> ps_table: array<StepCoeffs>;
@group(0) @binding(2) var<storage, read> ps_step: array<u32>;
@group(0) @binding(3) var<storage, read_write> ps_model_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> ps_timesteps: array<f32>;
@group(0) @binding(5) var<uniform> ps_p: Params;

@compute @workgroup_size(WG)
fn prepare_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    let c = ps_table[ps_step[0]];
    if (i < ps_p.batch) {
        ps_timesteps[i] = c.timestep;
    }
    if (i < ps_p.len) {
        ps_model_in[i] = c.model_in_scale * ps_x[i % ps_p.per_item];
    }
}

// ---- guide ----
struct GuideParams {
    len: u32,     // elements of one half (the guided output)
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> gd_model: array<f32>;
@group(0) @binding(1) var<storage, read_write> gd_out: array<f32>;
@group(0) @binding(2) var<uniform> gd_p: GuideParams;

@compute @workgroup_size(WG)
fn guide(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= gd_p.len) { return; }
    let uncond = gd_model[i];
    gd_out[i] = uncond + gd_p.scale * (gd_model[gd_p.len + i] - uncond);
}

// ---- sampler_step ----
@group(0) @binding(0) var<storage, read_write> st_x: array<f32>;
@group(0) @binding(1) var<storage, read> st_model: array<f32>;
@group(0) @binding(2) var<storage, read> st_noise: array<f32>;
@group(0) @binding(3) var<storage, read> st_table: array<StepCoeffs>;
@group(0) @binding(4) var<storage, read> st_step: array<u32>;
@group(0) @binding(5) var<storage, read_write> st_history: array<f32>;
@group(0) @binding(6) var<uniform> st_p: Params;

@compute @workgroup_size(WG)
fn sampler_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= st_p.len) { return; }
    let c = st_table[st_step[0]];
    let n = st_p.len;
    var x = st_x[i];
    if (c.save != 0.0) {
        st_history[3u * n + i] = x;
    }
    if (c.from_saved != 0.0) {
        x = st_history[3u * n + i];
    }
    let m = st_model[i];
    var x0 = c.x0_x * x + c.x0_m * m;
    if (c.clip > 0.0) {
        x0 = clamp(x0, -c.clip, c.clip);
    }
    let eps = c.eps_x * x + c.eps_m * m + c.eps_x0 * x0;
    var next = c.next_x0 * x0 + c.next_x * x + c.next_eps * eps;
    if (c.next_prev_x0 != 0.0) {
        next += c.next_prev_x0 * st_history[i];
    }
    if (c.next_prev2 != 0.0) {
        next += c.next_prev2 * st_history[n + i];
    }
    if (c.next_prev3 != 0.0) {
        next += c.next_prev3 * st_history[2u * n + i];
    }
    if (c.noise_scale != 0.0) {
        next += c.noise_scale * st_noise[i];
    }
    st_x[i] = next;
    if (c.skip_history == 0.0) {
        if (c.depth == 3.0) {
            st_history[2u * n + i] = st_history[n + i];
            st_history[n + i] = st_history[i];
        }
        st_history[i] = x0;
    }
}

// ---- repaint_mix ----
struct MixRow {
    known_orig: f32, known_z: f32, keep: f32, fresh: f32,
    use_mask: f32, _pad0: f32, _pad1: f32, _pad2: f32,
}

@group(0) @binding(0) var<storage, read_write> rm_x: array<f32>;
@group(0) @binding(1) var<storage, read> rm_orig: array<f32>;
@group(0) @binding(2) var<storage, read> rm_mask: array<f32>;
@group(0) @binding(3) var<storage, read> rm_noise: array<f32>;
@group(0) @binding(4) var<storage, read> rm_table: array<MixRow>;
@group(0) @binding(5) var<storage, read> rm_step: array<u32>;
@group(0) @binding(6) var<uniform> rm_p: Params;

@compute @workgroup_size(WG)
fn repaint_mix(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = element(wg, nwg, lid);
    if (i >= rm_p.len) { return; }
    let c = rm_table[rm_step[0]];
    let z = rm_noise[i];
    let x = c.keep * rm_x[i] + c.fresh * z;
    if (c.use_mask != 0.0) {
        let m = rm_mask[i];
        rm_x[i] = m * (c.known_orig * rm_orig[i] + c.known_z * z) + (1.0 - m) * x;
    } else {
        rm_x[i] = x;
    }
}

// ---- advance_step ----
@group(0) @binding(0) var<storage, read_write> step_counter: array<u32>;

@compute @workgroup_size(1)
fn advance_step() {
    step_counter[0] += 1u;
}
