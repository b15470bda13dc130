// Batched strided matmul C[b] = A[b] @ B[b] (+ bias) (then SiLU), sharing A across a subgroup.
// Used where the adapter has subgroups of at least 8 lanes; matmul.wgsl is the portable kernel (same
// params, bindings and semantics).
//
// Every lane of a subgroup works on the same 32 rows of C for its own 4 columns. Per k, lane j < 8
// loads A's 4 values for row block j and subgroupBroadcast hands them to every lane, so each lane
// loads 4 values of A and 4 of B for 8 x 16 FMAs (matmul.wgsl: 8 loads for 16 FMAs). Loads are what
// costs most on CPU drivers (lavapipe runs each one lane by lane).
// (wgpu 30 takes subgroup builtins without an `enable` directive, with the SUBGROUP feature on.)

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_bs: u32, a_rs: u32, a_cs: u32, _pad0: u32,
    b_bs: u32, b_rs: u32, b_cs: u32, _pad1: u32,
}

override WG_X: u32 = 64;      // column quads per workgroup
override BIAS_MODE: u32 = 0u; // 0: none, 1: bias[n] per column, 2: bias[m] per row
override SILU: bool = false;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

// Four rows x four columns: row r's columns are field r.
struct Acc4 { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> }

fn fma4(acc: Acc4, av: vec4<f32>, bv: vec4<f32>) -> Acc4 {
    return Acc4(fma(vec4<f32>(av.x), bv, acc.r0), fma(vec4<f32>(av.y), bv, acc.r1),
                fma(vec4<f32>(av.z), bv, acc.r2), fma(vec4<f32>(av.w), bv, acc.r3));
}

fn epilogue(v: f32, row: u32, col: u32) -> f32 {
    var r = v;
    if (BIAS_MODE == 1u) { r += bias[col]; }
    if (BIAS_MODE == 2u) { r += bias[row]; }
    if (SILU) { r = r / (1.0 + exp(-r)); }
    return r;
}

fn store4(acc: Acc4, row0: u32, col0: u32, out0: u32) {
    let rows = array<vec4<f32>, 4>(acc.r0, acc.r1, acc.r2, acc.r3);
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + i;
        if (row >= p.m) { return; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + j;
            if (col < p.n) { c[out0 + row * p.n + col] = epilogue(rows[i][j], row, col); }
        }
    }
}

@compute @workgroup_size(WG_X)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(subgroup_invocation_id) lane: u32) {
    let col0 = gid.x * 4u;
    let row_base = wid.y * 32u;
    let batch = wid.z;
    // No exits before the loop: the broadcasts need the whole subgroup. Past the edge, rows and
    // columns are clamped for loading and skipped when storing.
    let cols = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    let my_rows = min(vec4<u32>(row_base + 4u * (lane & 7u)) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u));
    var ai = batch * p.a_bs + my_rows * p.a_rs;
    var bi = batch * p.b_bs + cols * p.b_cs;
    let zero = Acc4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var c0 = zero;
    var c1 = zero;
    var c2 = zero;
    var c3 = zero;
    var c4 = zero;
    var c5 = zero;
    var c6 = zero;
    var c7 = zero;
    for (var kk = 0u; kk < p.k; kk++) {
        let mine = vec4<f32>(a[ai.x], a[ai.y], a[ai.z], a[ai.w]);
        let bv = vec4<f32>(b[bi.x], b[bi.y], b[bi.z], b[bi.w]);
        c0 = fma4(c0, subgroupBroadcast(mine, 0u), bv);
        c1 = fma4(c1, subgroupBroadcast(mine, 1u), bv);
        c2 = fma4(c2, subgroupBroadcast(mine, 2u), bv);
        c3 = fma4(c3, subgroupBroadcast(mine, 3u), bv);
        c4 = fma4(c4, subgroupBroadcast(mine, 4u), bv);
        c5 = fma4(c5, subgroupBroadcast(mine, 5u), bv);
        c6 = fma4(c6, subgroupBroadcast(mine, 6u), bv);
        c7 = fma4(c7, subgroupBroadcast(mine, 7u), bv);
        ai += vec4<u32>(p.a_cs);
        bi += vec4<u32>(p.b_rs);
    }
    if (batch >= p.batch || col0 >= p.n) {
        return;
    }
    let out0 = batch * p.m * p.n;
    store4(c0, row_base, col0, out0);
    store4(c1, row_base + 4u, col0, out0);
    store4(c2, row_base + 8u, col0, out0);
    store4(c3, row_base + 12u, col0, out0);
    store4(c4, row_base + 16u, col0, out0);
    store4(c5, row_base + 20u, col0, out0);
    store4(c6, row_base + 24u, col0, out0);
    store4(c7, row_base + 28u, col0, out0);
}
