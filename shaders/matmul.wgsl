// Batched matmul with register blocking: C[b] = A[b] @ B[b] (+ bias) (then SiLU).
//
// A and B are read through (batch, row, column) strides, so a transposed operand (a PyTorch Linear
// weight [out, in] used as B = W^T) needs no copy. C is dense [batch, M, N]. Each invocation owns a
// 4x4 block of C: per k it loads 4 values of A and 4 of B and does 4 vec4 FMAs.

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_bs: u32, a_rs: u32, a_cs: u32, _pad0: u32,
    b_bs: u32, b_rs: u32, b_cs: u32, _pad1: u32,
}

override WG_X: u32 = 16;     // column blocks per workgroup
override WG_Y: u32 = 4;      // row blocks per workgroup
override BIAS_MODE: u32 = 0u; // 0: none, 1: bias[n] per column, 2: bias[m] per row
override SILU: bool = false;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

fn epilogue(v: f32, row: u32, col: u32) -> f32 {
    var r = v;
    if (BIAS_MODE == 1u) { r += bias[col]; }
    if (BIAS_MODE == 2u) { r += bias[row]; }
    if (SILU) { r = r / (1.0 + exp(-r)); }
    return r;
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col0 = gid.x * 4u;
    let row0 = gid.y * 4u;
    let batch = gid.z;
    // No exit before the loop (after a divergent one, CPU drivers run every load lane by lane):
    // rows and columns past the edge are clamped for loading and skipped when storing.
    let rows = min(vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u));
    let cols = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    var ai = batch * p.a_bs + rows * p.a_rs;
    var bi = batch * p.b_bs + cols * p.b_cs;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let av = vec4<f32>(a[ai.x], a[ai.y], a[ai.z], a[ai.w]);
        let bv = vec4<f32>(b[bi.x], b[bi.y], b[bi.z], b[bi.w]);
        acc0 = fma(vec4<f32>(av.x), bv, acc0);
        acc1 = fma(vec4<f32>(av.y), bv, acc1);
        acc2 = fma(vec4<f32>(av.z), bv, acc2);
        acc3 = fma(vec4<f32>(av.w), bv, acc3);
        ai += vec4<u32>(p.a_cs);
        bi += vec4<u32>(p.b_rs);
    }

    if (col0 >= p.n || row0 >= p.m || batch >= p.batch) {
        return;
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    let out0 = batch * p.m * p.n;
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + i;
        if (row >= p.m) { break; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + j;
            if (col < p.n) { c[out0 + row * p.n + col] = epilogue(accs[i][j], row, col); }
        }
    }
}
