// Shared by matmul.wgsl and matmul_subgroup.wgsl (appended to each by src/shaders.rs): the
// parameters, bindings, texel reads and fused store epilogue of the matmul family.
//
// A and B are read through (batch, row, column) strides, so a transposed operand (a PyTorch Linear
// weight [out, in] used as B = W^T) needs no copy. C is dense [batch, M, N]. A and B are read as
// texels (see src/gpu/texels.rs: float i is component i % 4 of texel i / 4, at
// (texel % 1024, texel / 1024)): a texel fetch costs a fraction of a storage-buffer load on CPU
// drivers, and goes through the texture cache on GPUs.

// k_contig (the subgroup kernel's four-steps-per-texel path: bit 0 A contiguous along k, bit 1 B)
// is a uniform, not an override constant, so that matmuls differing only in it share one pipeline
// (composed attention's two products do): a cold first call compiles it once.
struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_bs: u32, a_rs: u32, a_cs: u32, split_k: u32, // split_k: steps of k per split (SPLIT)
    b_bs: u32, b_rs: u32, b_cs: u32, k_contig: u32,
}

override WG_X: u32 = 16;      // column blocks (4 columns each) per workgroup
// 0: none, 1: + bias[n] per column, 2: + bias[m] per row, 3: * bias[batch, n] per column
// (composed attention: the scores' scale, then the softmax normalisation, 1 / sum per query).
// An override: as a uniform, every mode's code is compiled into every matmul (~11% more compile
// time, measured).
override BIAS_MODE: u32 = 0u;
override SILU: bool = false;
// Split-K (portable kernel): workgroup z = split * batch + batch entry sums steps
// [split * split_k, (split + 1) * split_k) of k only, and writes its partial C (no epilogue: the
// launcher switches it off) at split * round4(batch * M * N); matmul_reduce.wgsl sums the splits
// and applies the epilogue. For GPUs, where few rows (a time-embedding Linear has one) leave too
// few invocations to hide the k loop's latency.
override SPLIT: bool = false;
var<private> out_base: u32 = 0u;
// N a multiple of 4: every row of a block is one aligned vec4, and the by-value store path is
// compiled out.
override ALIGNED: bool = false;

@group(0) @binding(0) var a: texture_2d<f32>;
@group(0) @binding(1) var b: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
// C is written a vec4 at a time where a row's 4 columns are a whole aligned vec4, else by component.
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> p: Params;

fn a_texel(t: u32) -> vec4<f32> { return textureLoad(a, vec2<u32>(t & 1023u, t >> 10u), 0); }
fn b_texel(t: u32) -> vec4<f32> { return textureLoad(b, vec2<u32>(t & 1023u, t >> 10u), 0); }
fn a_at(i: u32) -> f32 { return a_texel(i >> 2u)[i & 3u]; }
fn b_at(i: u32) -> f32 { return b_texel(i >> 2u)[i & 3u]; }

// The bias (mode 1) or scale (mode 3) of this invocation's 4 columns, loaded once by the kernel
// (a storage load per output value would cost more than the stores on CPU drivers).
var<private> col_terms: vec4<f32>;

fn load_col_terms(cols: vec4<u32>, batch: u32) {
    let mode = BIAS_MODE;
    if (mode == 1u || mode == 3u) {
        let base = select(0u, batch * p.n, mode == 3u);
        col_terms = vec4<f32>(bias[base + cols.x], bias[base + cols.y], bias[base + cols.z], bias[base + cols.w]);
    }
}

// Bias, scale and SiLU for one row's 4 columns.
fn epilogue(v: vec4<f32>, row: u32) -> vec4<f32> {
    let mode = BIAS_MODE;
    var r = v;
    if (mode == 1u) { r += col_terms; }
    if (mode == 2u) { r += vec4<f32>(bias[row]); }
    if (mode == 3u) { r *= col_terms; }
    if (SILU) { r = r / (1.0 + exp(-r)); }
    return r;
}

// Row i (0..3, uniform: a few selects) of a 4x4 block held as four row vectors.
fn row_of(r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>, i: u32) -> vec4<f32> {
    return select(select(r0, r1, i == 1u), select(r2, r3, i == 3u), i >= 2u);
}

// One row of a 4x4 block. The kernels call it from a loop over their rows: one copy of the store
// code, not one per row. Shader compile time on CPU drivers grows with every memory access in the
// code, and the epilogue inlined 32 times was about half of a kernel's cold first call. No private
// arrays: CPU drivers keep a dynamically indexed one in memory and walk it lane by lane.
fn store_row(v: vec4<f32>, row: u32, col0: u32, out0: u32) {
    let o = out0 + row * p.n + col0;
    let y = epilogue(v, row);
    if (ALIGNED || (col0 + 3u < p.n && o % 4u == 0u)) {
        c[(out_base + o) / 4u] = y;
        return;
    }
    for (var j = 0u; j < min(4u, p.n - col0); j++) {
        c[(out_base + o + j) / 4u][(out_base + o + j) % 4u] = y[j];
    }
}
