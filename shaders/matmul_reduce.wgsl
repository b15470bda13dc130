// Split-K matmul, second pass: sums the partial C of the k splits (written by matmul.wgsl with
// SPLIT) and applies the fused epilogue once: bias (per column, per row, or a per-column scale of
// each batch entry) then SiLU, as common/matmul_io.wgsl's epilogue does.

struct Params {
    len: u32,       // floats of C
    splits: u32,
    split_len: u32, // floats between two splits' partial C
    m: u32,
    n: u32,
    groups_x: u32,  // workgroups along x, for launches split over x and y
    _pad0: u32,
    _pad1: u32,
}

override BIAS_MODE: u32 = 0u;
override SILU: bool = false;
const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn matmul_reduce(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * WG + li;
    if (i >= p.len) {
        return;
    }
    var r = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        r += partials[s * p.split_len + i];
    }
    let col = i % p.n;
    if (BIAS_MODE == 1u) { r += bias[col]; }
    if (BIAS_MODE == 2u) { r += bias[(i / p.n) % p.m]; }
    if (BIAS_MODE == 3u) { r *= bias[(i / (p.m * p.n)) * p.n + col]; }
    if (SILU) { r = r / (1.0 + exp(-r)); }
    out[i] = r;
}
