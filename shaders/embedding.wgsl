// Sinusoidal timestep embedding as diffusers' get_timestep_embedding computes it:
//   f_k = exp(-ln(max_period) * k / (half - freq_shift)),  arg = t * f_k,
//   emb = [sin(arg), cos(arg)]  (or [cos, sin] with flip_sin_to_cos), zero-padded when dim is odd.
// The frequencies come from the host, rounded to f32 exactly as PyTorch rounds them, so only t * f_k
// is computed here (one correctly rounded multiply, as in PyTorch). Arguments reach ~1000 rad, where
// a GPU's sin/cos may be loose (Vulkan allows 2^-11 absolute error even inside [-pi, pi]), so sin
// and cos are evaluated here: Cody-Waite reduction by pi/2 and minimax polynomials on [-pi/4, pi/4].

struct Params {
    batch: u32,
    dim: u32,
    half_dim: u32,
    flip: u32,   // 1: [cos, sin]
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> timesteps: array<f32>;
@group(0) @binding(1) var<storage, read> freqs: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// (sin x, cos x) to ~1 ulp for |x| up to ~1e4.
fn sincos(x: f32) -> vec2<f32> {
    let q = round(x * 0.63661977236758134); // 2 / pi
    // pi/2 split so that q * PIO2_A and q * PIO2_B are exact for |q| < 2^12.
    var r = fma(-q, 1.5703125, x);
    r = fma(-q, 4.837512969970703125e-4, r);
    r = fma(-q, 7.549789948768648e-8, r);
    let z = r * r;
    let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
    let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
    let quadrant = u32(i32(q) & 3);
    switch quadrant {
        case 0u: { return vec2<f32>(s, c); }
        case 1u: { return vec2<f32>(c, -s); }
        case 2u: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}

@compute @workgroup_size(WG)
fn timestep_embedding(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    // The grid may be split over x and y (see gpu::grid).
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= p.batch * p.dim) { return; }
    let b = i / p.dim;
    let j = i % p.dim;
    if (j >= 2u * p.half_dim) {
        out[i] = 0.0; // odd dim: diffusers pads one zero column
        return;
    }
    let first_half = j < p.half_dim;
    let k = select(j - p.half_dim, j, first_half);
    let sc = sincos(timesteps[b] * freqs[k]);
    // Without flip: first half sin, second half cos. With flip: swapped.
    out[i] = select(sc.y, sc.x, first_half != (p.flip == 1u));
}

// ---- Class embedding lookup (nn.Embedding) and its backward ----
// lookup:          out[b, j] = table[label[b], j], labels as f32 class ids (the graph's inputs are
//                  f32; ids are exact to 2^24), clamped into the table (callers check the range).
// lookup_backward: d_table[r, j] = sum over b with label[b] = r of dy[b, j], one invocation per
//                  (r, j) walking the batch in order, so the sum is deterministic (no atomics).

struct LookupParams {
    batch: u32,
    dim: u32,
    rows: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> lk_labels: array<f32>;
@group(0) @binding(1) var<storage, read> lk_in: array<f32>;      // table (lookup) or dy (backward)
@group(0) @binding(2) var<storage, read_write> lk_out: array<f32>;
@group(0) @binding(3) var<uniform> lk: LookupParams;

fn row_of(b: u32) -> u32 {
    return min(u32(max(lk_labels[b], 0.0)), lk.rows - 1u);
}

@compute @workgroup_size(WG)
fn lookup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= lk.batch * lk.dim) { return; }
    let b = i / lk.dim;
    let j = i % lk.dim;
    lk_out[i] = lk_in[row_of(b) * lk.dim + j];
}

@compute @workgroup_size(WG)
fn lookup_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= lk.rows * lk.dim) { return; }
    let r = i / lk.dim;
    let j = i % lk.dim;
    var sum = 0.0;
    for (var b = 0u; b < lk.batch; b++) {
        if (row_of(b) == r) {
            sum += lk_in[b * lk.dim + j];
        }
    }
    lk_out[i] = sum;
}

// ---- A text model's token embedding (CLIP's embeddings module) ----
// out [B, D, T] (channel-major: the engine's [N, C, 1, T] layout of a sequence) =
//   table[ids[b, t], d] + positions[t, d], ids as f32 token ids (exact to 2^24).
// A vocabulary larger than a storage binding comes in row ranges, one dispatch each: a dispatch
// writes the tokens whose id falls in its rows [row_start, row_start + rows) and leaves the rest.

struct TokenParams {
    batch: u32,
    tokens: u32,
    dim: u32,
    row_start: u32,
    rows: u32,
    vocab: u32,
    _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<storage, read> te_ids: array<f32>;
@group(0) @binding(1) var<storage, read> te_table: array<f32>;
@group(0) @binding(2) var<storage, read> te_positions: array<f32>;
@group(0) @binding(3) var<storage, read_write> te_out: array<f32>;
@group(0) @binding(4) var<uniform> te: TokenParams;

@compute @workgroup_size(WG)
fn token_embedding(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= te.batch * te.dim * te.tokens) { return; }
    let t = i % te.tokens;
    let d = (i / te.tokens) % te.dim;
    let b = i / (te.tokens * te.dim);
    // Ids past the vocabulary take its last row (the caller checks them on the host).
    let id = min(u32(max(te_ids[b * te.tokens + t], 0.0)), te.vocab - 1u);
    if (id < te.row_start || id >= te.row_start + te.rows) { return; }
    te_out[i] = te_table[(id - te.row_start) * te.dim + d] + te_positions[t * te.dim + d];
}
