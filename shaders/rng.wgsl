// Standard normal noise from a counter-based RNG: Philox4x32-10 (Salmon et al., SC'11) + Box-Muller.
//
// Element e of stream s is a pure function of (seed, s, substream, e): counter = (e / 4, stream_base + s,
// substream + step[0], 0), key = seed. Each invocation makes 4 normals from one Philox block, so the
// numbers never depend on the dispatch shape. `step` lives on the device so a chain can advance it.
//
// timesteps: training's t, uniform in [0, T) for image i of a batch: the first word of the Philox
// block (i, stream_base, substream + step[0], 1) modulo T (a bias of T / 2^32, far below any
// count a run makes), written as an index (u32) and as the f32 the embedding takes. The last
// counter word (1) keeps these blocks apart from the normals' (0).

struct Params {
    seed_lo: u32,
    seed_hi: u32,
    stream_base: u32,
    substream: u32,
    per_stream: u32, // elements per stream
    streams: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;
// timesteps only: the indices (out holds their f32 values).
@group(0) @binding(3) var<storage, read_write> out_index: array<u32>;

// (high, low) 32-bit halves of the 64-bit product a * b, from 16-bit pieces.
fn mul_hi_lo(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        let p0 = mul_hi_lo(0xD2511F53u, c.x);
        let p1 = mul_hi_lo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
        k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// Uniform in (0, 1), never 0, from the top 24 bits.
fn uniform01(bits: u32) -> f32 {
    return (f32(bits >> 8u) + 0.5) * (1.0 / 16777216.0);
}

@compute @workgroup_size(WG)
fn normal(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let quads = (p.per_stream + 3u) / 4u;
    let id = (wg.x + wg.y * nwg.x) * WG + lid;
    if (id >= quads * p.streams) { return; }
    let s = id / quads;
    let q = id % quads;
    let bits = philox4x32_10(
        vec4<u32>(q, p.stream_base + s, p.substream + step[0], 0u),
        vec2<u32>(p.seed_lo, p.seed_hi),
    );
    // Box-Muller on (u0, u1) and (u2, u3); angles in (-pi, pi) where sin and cos are accurate.
    let r01 = sqrt(-2.0 * log(uniform01(bits.x)));
    let r23 = sqrt(-2.0 * log(uniform01(bits.z)));
    let a01 = 3.14159265358979 * (2.0 * uniform01(bits.y) - 1.0);
    let a23 = 3.14159265358979 * (2.0 * uniform01(bits.w) - 1.0);
    let z = vec4<f32>(r01 * cos(a01), r01 * sin(a01), r23 * cos(a23), r23 * sin(a23));
    let base = s * p.per_stream + 4u * q;
    for (var j = 0u; j < 4u; j++) {
        if (4u * q + j < p.per_stream) { out[base + j] = z[j]; }
    }
}

// One invocation per image: p.streams images, p.per_stream = T.
@compute @workgroup_size(WG)
fn timesteps(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.streams) { return; }
    let bits = philox4x32_10(
        vec4<u32>(i, p.stream_base, p.substream + step[0], 1u),
        vec2<u32>(p.seed_lo, p.seed_hi),
    );
    let t = bits.x % p.per_stream;
    out_index[i] = t;
    out[i] = f32(t);
}
