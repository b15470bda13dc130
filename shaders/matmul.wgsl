// Batched matmul with register blocking: C[b] = A[b] @ B[b] (+ bias) (then SiLU).
//
// Each invocation owns a 4x4 block of C: per k it loads 4 values of A and 4 of B and does 4 vec4
// FMAs.

// Params, bindings, texel reads and the store epilogue: common/matmul_io.wgsl.

override WG_Y: u32 = 4;      // row blocks per workgroup

@compute @workgroup_size(WG_X, WG_Y)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col0 = gid.x * 4u;
    let row0 = gid.y * 4u;
    var batch = gid.z;
    // The steps of k this invocation sums: all, or its split's (see SPLIT).
    var k_lo = 0u;
    var k_hi = p.k;
    if (SPLIT) {
        let split = gid.z / p.batch;
        batch = gid.z % p.batch;
        k_lo = split * p.split_k;
        k_hi = min(p.k, k_lo + p.split_k);
        out_base = split * ((p.batch * p.m * p.n + 3u) / 4u * 4u);
    }
    // No exit before the loop (after a divergent one, CPU drivers run every load lane by lane):
    // rows and columns past the edge are clamped for loading and skipped when storing.
    let rows = min(vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u));
    let cols = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    var ai = batch * p.a_bs + rows * p.a_rs + vec4<u32>(k_lo * p.a_cs);
    var bi = batch * p.b_bs + cols * p.b_cs + vec4<u32>(k_lo * p.b_rs);

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = k_lo; kk < k_hi; kk++) {
        let av = vec4<f32>(a_at(ai.x), a_at(ai.y), a_at(ai.z), a_at(ai.w));
        let bv = vec4<f32>(b_at(bi.x), b_at(bi.y), b_at(bi.z), b_at(bi.w));
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
    let out0 = batch * p.m * p.n;
    load_col_terms(cols, batch);
    // The epilogue once, in a loop over the rows that exist (see store_row).
    for (var i = 0u; i < min(4u, p.m - row0); i++) {
        store_row(row_of(acc0, acc1, acc2, acc3, i), row0 + i, col0, out0);
    }
}
