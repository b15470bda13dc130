// Multi-head attention in one kernel with an online softmax: the T x Tk score matrix is never
// stored. q and out are [B, heads * D, T], k and v [B, heads * D, Tk] (channel-major, as a 1x1
// projection of an NCHW feature map writes them; Tk = T for self-attention, the text's tokens for
// cross-attention): element (b, h, d, t) of q sits at ((b * heads + h) * D + d) * T + t. With
// `causal`, query i sees keys 0..=i (CLIP's text model).
//
// One invocation owns one query of one (batch, head): it keeps q and the running output in
// registers (D up to 4 * MAX_D4), walks the keys in blocks of KB, and rescales the running sum once per
// block:  m' = max(m, max_j s_j);  l' = l e^(m - m') + sum_j e^(s_j - m');  o' = o e^(m - m') + sum_j e^(s_j - m') v_j.
// All invocations of a workgroup read the same keys at the same time, so k and v loads are shared.
//
// Long sequences run as several dispatches over ranges of keys (a CPU driver cuts loops short,
// see kernels/attention.rs): each carries (m, l, o) over in `state` [bh, t, D + 2] instead of
// finishing: the first starts from nothing, the last divides by l and writes `out`. One dispatch
// over every key is both.

struct Params {
    bh: u32,     // batch * heads
    d: u32,      // head dim
    t: u32,      // tokens
    scale: f32,  // usually 1 / sqrt(d)
    key_start: u32,
    key_end: u32,
    first: u32,  // 1: start from nothing (else read state)
    last: u32,   // 1: write out (else write state)
    tk: u32,     // key and value tokens
    causal: u32, // 1: query i sees keys up to i
    _pad0: u32, _pad1: u32,
}

const MAX_D4: u32 = 128u;
const KB: u32 = 8u;
override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;

// Four head-dim entries (4 * d4 .. 4 * d4 + 3) of token `tok` of a sequence of `len` tokens;
// entries past D read as zero.
fn load4(src: u32, base: u32, len: u32, d4: u32, tok: u32) -> vec4<f32> {
    let d = vec4<u32>(4u * d4) + vec4<u32>(0u, 1u, 2u, 3u);
    let ok = d < vec4<u32>(p.d);
    let idx = select(vec4<u32>(base + tok), base + d * len + tok, ok);
    var r: vec4<f32>;
    if (src == 0u) {
        r = vec4<f32>(q[idx.x], q[idx.y], q[idx.z], q[idx.w]);
    } else if (src == 1u) {
        r = vec4<f32>(k[idx.x], k[idx.y], k[idx.z], k[idx.w]);
    } else {
        r = vec4<f32>(v[idx.x], v[idx.y], v[idx.z], v[idx.w]);
    }
    return select(vec4<f32>(0.0), r, ok);
}

@compute @workgroup_size(WG)
fn attention(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let bh = gid.y;
    if (i >= p.t || bh >= p.bh) {
        return;
    }
    let base = bh * p.d * p.t;
    let kv = bh * p.d * p.tk;
    let d4n = (p.d + 3u) / 4u;
    // The keys this query sees in this dispatch's range.
    var key_end = p.key_end;
    if (p.causal == 1u) {
        key_end = min(key_end, i + 1u);
    }

    var qv: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    var m = -3.0e38;
    var l = 0.0;
    let st = (bh * p.t + i) * (p.d + 2u);
    if (p.first == 0u) {
        m = state[st];
        l = state[st + 1u];
    }
    for (var d4 = 0u; d4 < d4n; d4++) {
        qv[d4] = load4(0u, base, p.t, d4, i) * p.scale;
        acc[d4] = vec4<f32>(0.0);
        if (p.first == 0u) {
            for (var c = 0u; c < 4u; c++) {
                if (4u * d4 + c < p.d) { acc[d4][c] = state[st + 2u + 4u * d4 + c]; }
            }
        }
    }
    var s: array<f32, KB>;
    for (var j0 = p.key_start; j0 < key_end; j0 += KB) {
        var m_blk = m;
        for (var jj = 0u; jj < KB; jj++) {
            let j = j0 + jj;
            var dot_qk = -3.0e38; // keys past the range get no weight
            if (j < key_end) {
                dot_qk = 0.0;
                for (var d4 = 0u; d4 < d4n; d4++) {
                    dot_qk += dot(qv[d4], load4(1u, kv, p.tk, d4, j));
                }
            }
            s[jj] = dot_qk;
            m_blk = max(m_blk, dot_qk);
        }
        let corr = exp(m - m_blk);
        l *= corr;
        for (var jj = 0u; jj < KB; jj++) {
            s[jj] = select(0.0, exp(s[jj] - m_blk), j0 + jj < key_end);
            l += s[jj];
        }
        for (var d4 = 0u; d4 < d4n; d4++) {
            var o = acc[d4] * corr;
            for (var jj = 0u; jj < KB; jj++) {
                let j = min(j0 + jj, key_end - 1u);
                o = fma(vec4<f32>(s[jj]), load4(2u, kv, p.tk, d4, j), o);
            }
            acc[d4] = o;
        }
        m = m_blk;
    }

    if (p.last == 0u) {
        state[st] = m;
        state[st + 1u] = l;
        for (var d4 = 0u; d4 < d4n; d4++) {
            for (var c = 0u; c < 4u; c++) {
                if (4u * d4 + c < p.d) { state[st + 2u + 4u * d4 + c] = acc[d4][c]; }
            }
        }
        return;
    }
    let inv_l = 1.0 / l;
    for (var d4 = 0u; d4 < d4n; d4++) {
        let o = acc[d4] * inv_l;
        for (var c = 0u; c < 4u; c++) {
            let d = 4u * d4 + c;
            if (d < p.d) { out[base + d * p.t + i] = o[c]; }
        }
    }
}
