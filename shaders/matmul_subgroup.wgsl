// Batched strided matmul C[b] = A[b] @ B[b] (+ bias) (then SiLU), sharing A across a subgroup.
// Used where the adapter has subgroups of at least 8 lanes; matmul.wgsl is the portable kernel (same
// params, bindings and semantics).
//
// Every lane of a subgroup works on the same 32 rows of C for its own 4 columns. Per k, lane j < 8
// loads A's 4 values for row block j and subgroupBroadcast hands them to every lane, so each lane
// loads 4 values of A and 4 of B for 8 x 16 FMAs (matmul.wgsl: 8 loads for 16 FMAs). Loads are what
// costs most on CPU drivers (lavapipe runs each one lane by lane).
//
// With VEC_K, k and every stride are multiples of 4 and each operand is contiguous along k or
// along its other dimension, so four steps of k come from four texels of A (contiguous along k,
// p.k_contig bit 0: one per row; else one per step, holding the lane's 4 rows) and four of B (bit
// 1: one per column, as in a Linear's W^T; else one per step): 8 texels per lane for 512 FMAs,
// done block by block (steps4). The layout is a uniform, not an override constant, so composed
// attention's two products share one pipeline (one compile on a cold first call), for at most 4%
// of run time (A/B, measured while the bias mode was a uniform too).
// (wgpu 30 takes subgroup builtins without an `enable` directive, with the SUBGROUP feature on.)

// Params, bindings, texel reads and the store epilogue: common/matmul_io.wgsl.

override VEC_K: bool = false;

// Four rows x four columns: row r's columns are field r.
struct Acc4 { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> }

fn fma4(acc: Acc4, av: vec4<f32>, bv: vec4<f32>) -> Acc4 {
    return Acc4(fma(vec4<f32>(av.x), bv, acc.r0), fma(vec4<f32>(av.y), bv, acc.r1),
                fma(vec4<f32>(av.z), bv, acc.r2), fma(vec4<f32>(av.w), bv, acc.r3));
}

// Four steps of k for this lane's 4 rows (or columns): step s is field s, one value per row.
struct Steps4 { s0: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>, s3: vec4<f32> }

// Four texels, each 4 steps of k for one row (column): transposed into steps.
fn by_step(t0: vec4<f32>, t1: vec4<f32>, t2: vec4<f32>, t3: vec4<f32>) -> Steps4 {
    return Steps4(vec4<f32>(t0.x, t1.x, t2.x, t3.x), vec4<f32>(t0.y, t1.y, t2.y, t3.y),
                  vec4<f32>(t0.z, t1.z, t2.z, t3.z), vec4<f32>(t0.w, t1.w, t2.w, t3.w));
}

// Four texels as steps of k: transposed where each holds one row's (column's) 4 steps, as they
// are where each holds one step's 4 rows (columns). The flag is uniform: selects, not branches.
fn as_steps(t0: vec4<f32>, t1: vec4<f32>, t2: vec4<f32>, t3: vec4<f32>, k_contig: bool) -> Steps4 {
    let tr = by_step(t0, t1, t2, t3);
    return Steps4(select(t0, tr.s0, k_contig), select(t1, tr.s1, k_contig), select(t2, tr.s2, k_contig),
                  select(t3, tr.s3, k_contig));
}

struct Acc32 { c0: Acc4, c1: Acc4, c2: Acc4, c3: Acc4, c4: Acc4, c5: Acc4, c6: Acc4, c7: Acc4 }

// One step of k: the subgroup's 32 rows of A (4 per lane, shared by broadcast) times 4 columns of B.
fn step(acc: Acc32, mine: vec4<f32>, bv: vec4<f32>) -> Acc32 {
    return Acc32(fma4(acc.c0, subgroupBroadcast(mine, 0u), bv), fma4(acc.c1, subgroupBroadcast(mine, 1u), bv),
                 fma4(acc.c2, subgroupBroadcast(mine, 2u), bv), fma4(acc.c3, subgroupBroadcast(mine, 3u), bv),
                 fma4(acc.c4, subgroupBroadcast(mine, 4u), bv), fma4(acc.c5, subgroupBroadcast(mine, 5u), bv),
                 fma4(acc.c6, subgroupBroadcast(mine, 6u), bv), fma4(acc.c7, subgroupBroadcast(mine, 7u), bv));
}

// Four steps of k for one 4x4 block (a: the block's 4 rows at each step): each accumulator row
// takes its 4 FMAs one after the other. On CPU drivers the 32 accumulator vectors do not fit in
// registers, so each is loaded and stored around its FMAs; block by block that is once per 4 steps
// instead of once per step (matmul 1.2-1.3x faster than step by step, measured A/B).
fn steps4(acc: Acc4, a: Steps4, b: Steps4) -> Acc4 {
    return Acc4(
        fma(vec4<f32>(a.s3.x), b.s3, fma(vec4<f32>(a.s2.x), b.s2, fma(vec4<f32>(a.s1.x), b.s1, fma(vec4<f32>(a.s0.x), b.s0, acc.r0)))),
        fma(vec4<f32>(a.s3.y), b.s3, fma(vec4<f32>(a.s2.y), b.s2, fma(vec4<f32>(a.s1.y), b.s1, fma(vec4<f32>(a.s0.y), b.s0, acc.r1)))),
        fma(vec4<f32>(a.s3.z), b.s3, fma(vec4<f32>(a.s2.z), b.s2, fma(vec4<f32>(a.s1.z), b.s1, fma(vec4<f32>(a.s0.z), b.s0, acc.r2)))),
        fma(vec4<f32>(a.s3.w), b.s3, fma(vec4<f32>(a.s2.w), b.s2, fma(vec4<f32>(a.s1.w), b.s1, fma(vec4<f32>(a.s0.w), b.s0, acc.r3)))));
}

// b where take_b, else a (take_b uniform: a select, not a branch).
fn pick(a: Acc4, b: Acc4, take_b: bool) -> Acc4 {
    return Acc4(select(a.r0, b.r0, take_b), select(a.r1, b.r1, take_b), select(a.r2, b.r2, take_b),
                select(a.r3, b.r3, take_b));
}

// The rows of a 4x4 block that exist, from a loop: one copy of the store code (see store_row).
fn store4(acc: Acc4, row0: u32, col0: u32, out0: u32) {
    for (var i = 0u; i < min(4u, p.m - row0); i++) {
        store_row(row_of(acc.r0, acc.r1, acc.r2, acc.r3, i), row0 + i, col0, out0);
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
    var acc = Acc32(zero, zero, zero, zero, zero, zero, zero, zero);
    var kk = 0u;
    if (VEC_K) {
        // Texel indices of the lane's 4 rows (columns) at k = 0.
        let at = ai >> vec4<u32>(2u);
        let bt = bi >> vec4<u32>(2u);
        let a_contig = (p.k_contig & 1u) != 0u;
        let b_contig = (p.k_contig & 2u) != 0u;
        var t = 0u;
        for (; kk < p.k; kk += 4u) {
            // A k-contiguous operand: texel i is row (column) i's 4 steps, one texel further per
            // 4 steps. Otherwise texel i is step i's 4 rows (columns), 4 k strides further per 4
            // steps (a k stride is stride / 4 texels).
            let i4 = vec4<u32>(0u, 1u, 2u, 3u);
            let ta = select(vec4<u32>(at.x + t * p.a_cs) + i4 * (p.a_cs >> 2u), at + vec4<u32>(t), a_contig);
            let tb = select(vec4<u32>(bt.x + t * p.b_rs) + i4 * (p.b_rs >> 2u), bt + vec4<u32>(t), b_contig);
            let av = as_steps(a_texel(ta.x), a_texel(ta.y), a_texel(ta.z), a_texel(ta.w), a_contig);
            let bv = as_steps(b_texel(tb.x), b_texel(tb.y), b_texel(tb.z), b_texel(tb.w), b_contig);
            // Row block j's 4 rows at each step, from lane j (the lane index must be a constant).
            let r0 = Steps4(subgroupBroadcast(av.s0, 0u), subgroupBroadcast(av.s1, 0u), subgroupBroadcast(av.s2, 0u), subgroupBroadcast(av.s3, 0u));
            let r1 = Steps4(subgroupBroadcast(av.s0, 1u), subgroupBroadcast(av.s1, 1u), subgroupBroadcast(av.s2, 1u), subgroupBroadcast(av.s3, 1u));
            let r2 = Steps4(subgroupBroadcast(av.s0, 2u), subgroupBroadcast(av.s1, 2u), subgroupBroadcast(av.s2, 2u), subgroupBroadcast(av.s3, 2u));
            let r3 = Steps4(subgroupBroadcast(av.s0, 3u), subgroupBroadcast(av.s1, 3u), subgroupBroadcast(av.s2, 3u), subgroupBroadcast(av.s3, 3u));
            let r4 = Steps4(subgroupBroadcast(av.s0, 4u), subgroupBroadcast(av.s1, 4u), subgroupBroadcast(av.s2, 4u), subgroupBroadcast(av.s3, 4u));
            let r5 = Steps4(subgroupBroadcast(av.s0, 5u), subgroupBroadcast(av.s1, 5u), subgroupBroadcast(av.s2, 5u), subgroupBroadcast(av.s3, 5u));
            let r6 = Steps4(subgroupBroadcast(av.s0, 6u), subgroupBroadcast(av.s1, 6u), subgroupBroadcast(av.s2, 6u), subgroupBroadcast(av.s3, 6u));
            let r7 = Steps4(subgroupBroadcast(av.s0, 7u), subgroupBroadcast(av.s1, 7u), subgroupBroadcast(av.s2, 7u), subgroupBroadcast(av.s3, 7u));
            acc = Acc32(steps4(acc.c0, r0, bv), steps4(acc.c1, r1, bv), steps4(acc.c2, r2, bv), steps4(acc.c3, r3, bv),
                        steps4(acc.c4, r4, bv), steps4(acc.c5, r5, bv), steps4(acc.c6, r6, bv), steps4(acc.c7, r7, bv));
            t += 1u;
        }
    } else {
        // One step of k at a time, a texel fetch per value. (Not also a tail of the loop above:
        // VEC_K needs k % 4 == 0, and one copy of the step less halves compile time on CPU drivers.)
        for (; kk < p.k; kk++) {
            let mine = vec4<f32>(a_at(ai.x), a_at(ai.y), a_at(ai.z), a_at(ai.w));
            let bv = vec4<f32>(b_at(bi.x), b_at(bi.y), b_at(bi.z), b_at(bi.w));
            acc = step(acc, mine, bv);
            ai += vec4<u32>(p.a_cs);
            bi += vec4<u32>(p.b_rs);
        }
    }
    if (batch >= p.batch || col0 >= p.n) {
        return;
    }
    let out0 = batch * p.m * p.n;
    load_col_terms(cols, batch);
    // The epilogue once, in a loop over the row blocks that exist (see store_row).
    for (var j = 0u; j < min(8u, (p.m - row_base + 3u) / 4u); j++) {
        var a = pick(acc.c0, acc.c1, j == 1u);
        a = pick(a, acc.c2, j == 2u);
        a = pick(a, acc.c3, j == 3u);
        a = pick(a, acc.c4, j == 4u);
        a = pick(a, acc.c5, j == 5u);
        a = pick(a, acc.c6, j == 6u);
        a = pick(a, acc.c7, j == 7u);
        store4(a, row_base + 4u * j, col0, out0);
    }
}
