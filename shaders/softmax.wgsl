// Row softmax with a scale: out[r, j] = exp(scale * x[r, j] - m_r) / sum_j exp(scale * x[r, j] - m_r),
// m_r the row's maximum. The middle step of composed attention (scores -> probabilities).
//
// One invocation per row, three passes over it (max, sum, write). Without NORMALIZE two: max,
// then exp(scale * x - m) written and summed, with 1 / sum stored per row in inv_sum (composed
// attention applies it in the next matmul's epilogue). x is read as texels (see
// src/gpu/texels.rs: float i is component i % 4 of texel i / 4, at (texel % 1024, texel / 1024)),
// four values per fetch when rows are whole texels (VEC4).

struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    groups_x: u32, // workgroups along x, for launches split over x and y
    causal_period: u32, // 0: every column; q: row r keeps columns 0..=(r % q), the rest written 0
    _pad0: u32, _pad1: u32, _pad2: u32,
}

override VEC4: bool = false;
override NORMALIZE: bool = true;
const WG: u32 = 64u;

@group(0) @binding(0) var x: texture_2d<f32>;
// Written a vec4 at a time with VEC4, else by component.
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> inv_sum: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

fn texel(t: u32) -> vec4<f32> {
    return textureLoad(x, vec2<u32>(t & 1023u, t >> 10u), 0);
}

fn at(i: u32) -> f32 {
    return texel(i >> 2u)[i & 3u];
}

@compute @workgroup_size(WG)
fn softmax(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = (wg.x + wg.y * p.groups_x) * WG + li;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var m = -3.0e38;
    var total = 0.0;
    if (VEC4) {
        let t0 = base / 4u;
        let n4 = p.cols / 4u;
        var m4 = vec4<f32>(-3.0e38);
        for (var t = 0u; t < n4; t++) {
            m4 = max(m4, texel(t0 + t) * p.scale);
        }
        m = max(max(m4.x, m4.y), max(m4.z, m4.w));
        var s4 = vec4<f32>(0.0);
        if (!NORMALIZE) {
            for (var t = 0u; t < n4; t++) {
                let e = exp(texel(t0 + t) * p.scale - m);
                out[t0 + t] = e;
                s4 += e;
            }
            inv_sum[row] = 1.0 / (s4.x + s4.y + s4.z + s4.w);
            return;
        }
        for (var t = 0u; t < n4; t++) {
            s4 += exp(texel(t0 + t) * p.scale - m);
        }
        let inv = 1.0 / (s4.x + s4.y + s4.z + s4.w);
        for (var t = 0u; t < n4; t++) {
            out[t0 + t] = exp(texel(t0 + t) * p.scale - m) * inv;
        }
        return;
    }
    // The columns in play: all, or up to the row's own query under a causal mask (VEC4 is off
    // then); the others are written 0.
    var keep = p.cols;
    if (p.causal_period > 0u) {
        keep = row % p.causal_period + 1u;
    }
    for (var j = 0u; j < keep; j++) {
        m = max(m, at(base + j) * p.scale);
    }
    for (var j = keep; j < p.cols; j++) {
        let o = base + j;
        out[o / 4u][o % 4u] = 0.0;
    }
    if (!NORMALIZE) {
        for (var j = 0u; j < keep; j++) {
            let o = base + j;
            let e = exp(at(o) * p.scale - m);
            out[o / 4u][o % 4u] = e;
            total += e;
        }
        inv_sum[row] = 1.0 / total;
        return;
    }
    for (var j = 0u; j < keep; j++) {
        total += exp(at(base + j) * p.scale - m);
    }
    let inv = 1.0 / total;
    for (var j = 0u; j < keep; j++) {
        let o = base + j;
        out[o / 4u][o % 4u] = exp(at(o) * p.scale - m) * inv;
    }
}
