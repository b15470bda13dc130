// VQModel's quantizer (diffusers' VectorQuantizer, legacy): each latent pixel z (D values, NCHW so
// stride H * W) goes to its nearest codebook entry e_j, with the squared distance written as
// torch.cdist computes it for many rows, |z|^2 - 2 z.e_j + |e_j|^2; ties go to the first code.
// The output is z + (e_j - z), as diffusers' straight-through estimator computes it (not e_j's
// bits exactly), and the chosen j as f32. One invocation a pixel; the grid may spill into y.

struct Params {
    pixels: u32,  // B * H * W
    plane: u32,   // H * W
    dim: u32,     // D
    codes: u32,   // codebook entries
}

const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> z: array<f32>;
@group(0) @binding(1) var<storage, read> codebook: array<f32>;  // [codes, D]
@group(0) @binding(2) var<storage, read_write> quantized: array<f32>;
@group(0) @binding(3) var<storage, read_write> indices: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn quantize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= p.pixels) { return; }
    let b = i / p.plane;
    let s = i % p.plane;
    let base = b * p.dim * p.plane + s;
    var zz = 0.0;
    for (var d = 0u; d < p.dim; d++) {
        let v = z[base + d * p.plane];
        zz += v * v;
    }
    var best = 0u;
    var best_dist = 0.0;
    for (var j = 0u; j < p.codes; j++) {
        var dot = 0.0;
        var ee = 0.0;
        for (var d = 0u; d < p.dim; d++) {
            let e = codebook[j * p.dim + d];
            dot += z[base + d * p.plane] * e;
            ee += e * e;
        }
        let dist = -2.0 * dot + zz + ee;
        if (j == 0u || dist < best_dist) {
            best = j;
            best_dist = dist;
        }
    }
    for (var d = 0u; d < p.dim; d++) {
        let v = z[base + d * p.plane];
        quantized[base + d * p.plane] = v + (codebook[best * p.dim + d] - v);
    }
    indices[i] = f32(best);
}
