//! matmul (shaders/matmul.wgsl): batched, strided C = A @ B (+ bias) (SiLU), and `linear` on top of it.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d, groups, split_count, split_scratch, use_subgroups};
pub use crate::kernels::{Launch, Variant};
use crate::{bail_shape, Result};

/// Both kernels read A and B as texels (see `gpu::texels`).
const BINDINGS: &[Binding] =
    &[Binding::Texels, Binding::Texels, Binding::Read, Binding::Write, Binding::Uniform];
static SPEC: KernelSpec = KernelSpec { shader: &crate::shaders::MATMUL, entry: "matmul", bindings: BINDINGS };
/// The same matmul sharing A across a subgroup (matmul_subgroup.wgsl).
static SPEC_SUBGROUP: KernelSpec =
    KernelSpec { shader: &crate::shaders::MATMUL_SUBGROUP, entry: "matmul", bindings: BINDINGS };

/// Split-K's second pass: sums the splits' partial C and applies the epilogue.
static SPEC_REDUCE: KernelSpec = KernelSpec {
    shader: &crate::shaders::MATMUL_REDUCE,
    entry: "matmul_reduce",
    bindings: &[Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    len: u32,
    splits: u32,
    split_len: u32,
    m: u32,
    n: u32,
    groups_x: u32,
    _pad: [u32; 2],
}

/// A split keeps at least this many steps of k.
const MIN_SPLIT_STEPS: usize = 32;

/// How an operand is laid out: element (b, r, c) is at `b * batch + r * row + c * col`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    pub batch: usize,
    pub row: usize,
    pub col: usize,
}

impl Strides {
    /// A dense row-major [batch, rows, cols] operand.
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Self { batch: rows * cols, row: cols, col: 1 }
    }
    /// The transpose of a dense row-major [batch, cols, rows] operand (e.g. a Linear weight as W^T).
    pub fn transposed(rows: usize, cols: usize) -> Self {
        Self { batch: rows * cols, row: 1, col: rows }
    }
    /// The same operand for every batch entry.
    pub fn broadcast(self) -> Self {
        Self { batch: 0, ..self }
    }
    fn max_index(&self, batch: usize, rows: usize, cols: usize) -> usize {
        (batch - 1) * self.batch + (rows - 1) * self.row + (cols - 1) * self.col
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bias {
    None,
    /// bias[n], one per output column (a Linear layer's bias).
    PerColumn,
    /// bias[m], one per output row.
    PerRow,
    /// Multiplies by scale[batch, n], one per batch entry and output column (composed attention
    /// normalises its softmax this way).
    ColumnScale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Strides,
    pub b: Strides,
    pub bias: Bias,
    pub silu: bool,
}

impl MatmulShape {
    pub fn flops(&self) -> u64 {
        2 * (self.batch * self.m * self.n * self.k) as u64
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_bs: u32,
    a_rs: u32,
    a_cs: u32,
    split_k: u32,
    b_bs: u32,
    b_rs: u32,
    b_cs: u32,
    k_contig: u32,
}

const WG_X: usize = 16;
const WG_Y: usize = 4;

/// C [batch, M, N] = A [batch, M, K] @ B [batch, K, N] (+ bias) (then SiLU), operands via strides,
/// launched as `launch` says: one dispatch, or two for split-K.
pub fn matmul(
    ctx: &Context,
    launch: Launch,
    s: &MatmulShape,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    c: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let splits = match launch {
        Launch::Auto => auto_splits(ctx, s)?,
        Launch::One(variant) => return Ok(vec![one(ctx, variant, s, a, b, bias, c, None)?]),
        Launch::Split(n) => return split_k(ctx, s, a, b, bias, c, n),
    };
    match splits {
        n if n > 1 => split_k(ctx, s, a, b, bias, c, n),
        _ => Ok(vec![one(ctx, Variant::Auto, s, a, b, bias, c, None)?]),
    }
}

/// How many k splits `Launch::Auto` uses: 1 on CPU drivers and where the subgroup kernel runs
/// (32 rows or more); on GPUs, enough to keep a large GPU busy on few-row products (a
/// time-embedding Linear has one row), each split keeping MIN_SPLIT_STEPS steps of k (see
/// `split_count`).
pub fn auto_splits(ctx: &Context, s: &MatmulShape) -> Result<usize> {
    if ctx.is_cpu() || use_subgroups(ctx, Variant::Auto, s.m >= 32, "matmul")? {
        return Ok(1);
    }
    let invocations = s.n.div_ceil(4) * s.m.div_ceil(4) * s.batch;
    Ok(split_count(invocations, s.k, MIN_SPLIT_STEPS))
}

/// matmul as split-K on the portable kernel: each split sums a range of k into a shared scratch
/// buffer, then matmul_reduce.wgsl sums the ranges and applies the epilogue.
fn split_k(
    ctx: &Context,
    s: &MatmulShape,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    c: &wgpu::Buffer,
    splits: usize,
) -> Result<Vec<Dispatch>> {
    if s.batch == 0 || s.m == 0 || s.n == 0 || s.k == 0 {
        bail_shape!("matmul: empty shape {s:?}");
    }
    let bias_mode = check_bias(s, bias)?;
    let c_len = s.batch * s.m * s.n;
    check_len("matmul", "C", c, c_len)?;
    let split_k = s.k.div_ceil(splits.clamp(1, s.k));
    let splits = s.k.div_ceil(split_k);
    let split_len = c_len.div_ceil(4) * 4;
    let scratch_floats = splits * split_len;
    let scratch = split_scratch(ctx, "matmul", scratch_floats)?;
    let partial = MatmulShape { bias: Bias::None, silu: false, ..*s };
    let first = one(ctx, Variant::Portable, &partial, a, b, None, &scratch, Some((splits, split_k)))?;
    let reduce =
        reduce_splits(ctx, &scratch, splits, split_len, c_len, (s.m, s.n), bias_mode, s.silu, bias, c)?;
    Ok(vec![first, reduce])
}

/// Split-K's second pass (matmul_reduce.wgsl): out[i] = epilogue(sum over the `splits` partials
/// `scratch[k * split_len + i]`, in order), for i < len; `mn` and the bias mode as in the matmul
/// (mode 0 and no SiLU: a plain ordered sum, which conv2d's weight gradient uses too).
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce_splits(
    ctx: &Context,
    scratch: &wgpu::Buffer,
    splits: usize,
    split_len: usize,
    len: usize,
    mn: (usize, usize),
    bias_mode: u32,
    silu: bool,
    bias: Option<&wgpu::Buffer>,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    let workgroups = grid_1d(ctx, len, 256);
    let params = ctx.uniform(&ReduceParams {
        len: len as u32,
        splits: splits as u32,
        split_len: split_len as u32,
        m: mn.0 as u32,
        n: mn.1.max(1) as u32,
        groups_x: workgroups[0],
        _pad: [0; 2],
    });
    ctx.dispatch(
        &SPEC_REDUCE,
        &[("BIAS_MODE", bias_mode as f64), ("SILU", silu as u8 as f64)],
        &[scratch, bias.unwrap_or(&ctx.dummy), out, &params],
        workgroups,
        Cost { flops: (splits * len) as u64, bytes: 4 * (splits * len + len) as u64 },
    )
}

/// The bias mode the kernels take (0 none, 1 per column, 2 per row, 3 column scale), its buffer
/// checked.
fn check_bias(s: &MatmulShape, bias: Option<&wgpu::Buffer>) -> Result<u32> {
    Ok(match (s.bias, bias) {
        (Bias::None, _) => 0,
        (Bias::PerColumn, Some(buf)) => check_len("matmul", "bias", buf, s.n).map(|_| 1)?,
        (Bias::PerRow, Some(buf)) => check_len("matmul", "bias", buf, s.m).map(|_| 2)?,
        (Bias::ColumnScale, Some(buf)) => {
            check_len("matmul", "column scale", buf, s.batch * s.n).map(|_| 3)?
        }
        (_, None) => bail_shape!("matmul: {:?} bias asked for but no bias buffer given", s.bias),
    })
}

/// One matmul dispatch of `variant`; `split`: (splits, steps of k per split) for split-K's first
/// pass.
#[allow(clippy::too_many_arguments)]
fn one(
    ctx: &Context,
    variant: Variant,
    s: &MatmulShape,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    c: &wgpu::Buffer,
    split: Option<(usize, usize)>,
) -> Result<Dispatch> {
    if s.batch == 0 || s.m == 0 || s.n == 0 || s.k == 0 {
        bail_shape!("matmul: empty shape {s:?}");
    }
    // Values of A and B the strides reach (the kernel reads them as texels).
    let (a_len, b_len) = (s.a.max_index(s.batch, s.m, s.k) + 1, s.b.max_index(s.batch, s.k, s.n) + 1);
    check_len("matmul", "A", a, a_len)?;
    check_len("matmul", "B", b, b_len)?;
    // Split-K's first pass writes each split's partial C, rounded up to whole vec4s, one after another.
    let c_len = s.batch * s.m * s.n;
    check_len("matmul", "C", c, split.map_or(c_len, |(splits, _)| splits * c_len.div_ceil(4) * 4))?;
    let bias_mode = check_bias(s, bias)?;
    // The subgroup kernel: 4 columns x 32 rows per invocation, a workgroup row of up to 64
    // invocations over columns per 32 rows. The portable one: 4x4 per invocation, 16x4 workgroups.
    let subgroups = use_subgroups(ctx, variant, s.m >= 32, "matmul")?;
    // Four steps of k per texel (subgroup kernel): k and every stride a multiple of 4, each operand
    // contiguous along k or along its other dimension.
    let a_k_contig = s.a.col == 1 && s.a.row.is_multiple_of(4) && s.a.batch.is_multiple_of(4);
    let a_m_contig = s.a.row == 1 && s.a.col.is_multiple_of(4) && s.a.batch.is_multiple_of(4);
    let b_k_contig = s.b.row == 1 && s.b.col.is_multiple_of(4) && s.b.batch.is_multiple_of(4);
    let b_n_contig = s.b.col == 1 && s.b.row.is_multiple_of(4) && s.b.batch.is_multiple_of(4);
    let vec_k = s.k.is_multiple_of(4) && (a_k_contig || a_m_contig) && (b_k_contig || b_n_contig);
    let params = ctx.uniform(&Params {
        m: s.m as u32,
        n: s.n as u32,
        k: s.k as u32,
        batch: s.batch as u32,
        a_bs: s.a.batch as u32,
        a_rs: s.a.row as u32,
        a_cs: s.a.col as u32,
        split_k: split.map_or(0, |(_, k)| k as u32),
        b_bs: s.b.batch as u32,
        b_rs: s.b.row as u32,
        b_cs: s.b.col as u32,
        k_contig: a_k_contig as u32 | (b_k_contig as u32) << 1,
    });
    // Few rows (a time-embedding MLP has one per image): fewer row blocks per workgroup, since
    // blocks past the last row still run the loop.
    let wg_y = s.m.div_ceil(4).next_power_of_two().min(WG_Y);
    let (spec, wg_x, workgroups) = if subgroups {
        let wg_x = s.n.div_ceil(4).next_power_of_two().clamp(8, 64);
        (&SPEC_SUBGROUP, wg_x, [groups(s.n, 4 * wg_x), groups(s.m, 32), s.batch as u32])
    } else {
        let z = s.batch * split.map_or(1, |(splits, _)| splits);
        (&SPEC, WG_X, [groups(s.n, 4 * WG_X), groups(s.m, 4 * wg_y), z as u32])
    };
    let mut overrides = vec![
        ("WG_X", wg_x as f64),
        ("BIAS_MODE", bias_mode as f64),
        ("SILU", s.silu as u8 as f64),
        ("ALIGNED", s.n.is_multiple_of(4) as u8 as f64),
    ];
    if subgroups {
        if split.is_some() {
            bail_shape!("matmul: split-K runs on the portable kernel");
        }
        overrides.push(("VEC_K", vec_k as u8 as f64));
    } else {
        overrides.push(("WG_Y", wg_y as f64));
        overrides.push(("SPLIT", split.is_some() as u8 as f64));
    }
    let bytes = 4 * (s.batch * (s.m * s.k + s.k * s.n + s.m * s.n)) as u64;
    ctx.dispatch_texels(
        spec,
        &overrides,
        &[a, b, bias.unwrap_or(&ctx.dummy), c, &params],
        &[a_len, b_len],
        workgroups,
        Cost { flops: s.flops(), bytes },
    )
}

#[allow(clippy::too_many_arguments)]
/// A PyTorch Linear: y [rows, out] = x [rows, in] @ W^T + b (then SiLU), W stored [out, in].
pub fn linear(
    ctx: &Context,
    rows: usize,
    in_features: usize,
    out_features: usize,
    silu: bool,
    x: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let shape = MatmulShape {
        batch: 1,
        m: rows,
        n: out_features,
        k: in_features,
        a: Strides::row_major(rows, in_features),
        b: Strides::transposed(in_features, out_features),
        bias: if bias.is_some() { Bias::PerColumn } else { Bias::None },
        silu,
    };
    matmul(ctx, Launch::Auto, &shape, x, weight, bias, y)
}

/// The buffers of a Linear's backward: what it reads and the gradients it writes.
pub struct LinearGrads<'a> {
    /// The layer's input [rows, in] and weight [out, in], as the forward read them.
    pub x: &'a wgpu::Buffer,
    pub weight: &'a wgpu::Buffer,
    /// d loss / d y [rows, out], before any fused SiLU (the caller applies SiLU's backward first).
    pub dy: &'a wgpu::Buffer,
    /// Written: dX [rows, in], dW [out, in], db [out] (each optional).
    pub dx: Option<&'a wgpu::Buffer>,
    pub dw: Option<&'a wgpu::Buffer>,
    pub db: Option<&'a wgpu::Buffer>,
}

/// The backward of `linear` as matmuls over strided views: dX = dY W, dW = dY^T X, db = 1^T dY
/// (a row of ones times dY: the column sums, in a fixed order, so batch reductions are the same
/// bits every run).
pub fn linear_backward(
    ctx: &Context,
    rows: usize,
    in_features: usize,
    out_features: usize,
    g: &LinearGrads,
) -> Result<Vec<Dispatch>> {
    let (r, fin, fout) = (rows, in_features, out_features);
    let plain = |m, n, k, a, b| MatmulShape { batch: 1, m, n, k, a, b, bias: Bias::None, silu: false };
    let mut out = vec![];
    if let Some(dx) = g.dx {
        let s = plain(r, fin, fout, Strides::row_major(r, fout), Strides::row_major(fout, fin));
        out.extend(matmul(ctx, Launch::Auto, &s, g.dy, g.weight, None, dx)?);
    }
    if let Some(dw) = g.dw {
        let s = plain(fout, fin, r, Strides::transposed(fout, r), Strides::row_major(r, fin));
        out.extend(matmul(ctx, Launch::Auto, &s, g.dy, g.x, None, dw)?);
    }
    if let Some(db) = g.db {
        let ones = ctx.constant_buffer("linear backward: ones", r, 1.0);
        let s = plain(1, fout, r, Strides::row_major(1, r), Strides::row_major(r, fout));
        out.extend(matmul(ctx, Launch::Auto, &s, &ones, g.dy, None, db)?);
    }
    Ok(out)
}

/// Plain reference of `linear_backward`: (dX, dW, db) in f64.
pub fn reference_linear_backward(
    rows: usize,
    fin: usize,
    fout: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; rows * fin];
    let mut dw = vec![0.0f32; fout * fin];
    let mut db = vec![0.0f32; fout];
    for r in 0..rows {
        for i in 0..fin {
            dx[r * fin + i] =
                (0..fout).map(|o| dy[r * fout + o] as f64 * w[o * fin + i] as f64).sum::<f64>() as f32;
        }
    }
    for o in 0..fout {
        for i in 0..fin {
            dw[o * fin + i] =
                (0..rows).map(|r| dy[r * fout + o] as f64 * x[r * fin + i] as f64).sum::<f64>() as f32;
        }
        db[o] = (0..rows).map(|r| dy[r * fout + o] as f64).sum::<f64>() as f32;
    }
    (dx, dw, db)
}

/// Plain reference of `matmul` over the same strided operands.
pub fn reference(s: &MatmulShape, a: &[f32], b: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let mut c = vec![0.0f32; s.batch * s.m * s.n];
    for bi in 0..s.batch {
        for i in 0..s.m {
            for j in 0..s.n {
                let mut acc = 0.0f64;
                for kk in 0..s.k {
                    let av = a[bi * s.a.batch + i * s.a.row + kk * s.a.col] as f64;
                    let bv = b[bi * s.b.batch + kk * s.b.row + j * s.b.col] as f64;
                    acc += av * bv;
                }
                acc += match (s.bias, bias) {
                    (Bias::PerColumn, Some(v)) => v[j] as f64,
                    (Bias::PerRow, Some(v)) => v[i] as f64,
                    _ => 0.0,
                };
                if let (Bias::ColumnScale, Some(v)) = (s.bias, bias) {
                    acc *= v[bi * s.n + j] as f64;
                }
                if s.silu {
                    acc /= 1.0 + (-acc).exp();
                }
                c[(bi * s.m + i) * s.n + j] = acc as f32;
            }
        }
    }
    c
}
