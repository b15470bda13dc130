//! Multi-head self-attention and its reference, two ways:
//! - composed: scores = Q^T K (matmul), softmax (softmax.wgsl), out = V P^T (matmul), with the
//!   T x T scores in a scratch buffer. The matmul kernels are the fastest code here, so this is the
//!   default wherever the scores fit a binding.
//! - by head groups: the composed path over a few (batch, head) pairs at a time, their q, k and v
//!   copied into shared scratch and their output copied back, where the whole score matrix is too
//!   large but one head's fits (a 512x512 Stable Diffusion image's 4096-token self-attention:
//!   64 MiB of scores a head, 1 GiB for a guided step's 16).
//! - fused (shaders/attention.wgsl): an online softmax that never stores the scores; the fallback
//!   where even one head's scores do not fit a binding.

use crate::gpu::{Binding, Context, CopyOp, Cost, Dispatch, KernelSpec};
use crate::kernels::matmul::{self, Bias, MatmulShape, Strides};
use crate::kernels::{check_len, groups, softmax};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::ATTENTION,
    entry: "attention",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Write,
        Binding::Uniform,
        Binding::Write,
    ],
};

/// The largest head dimension the kernel keeps in registers (4 * MAX_D4 in the shader).
pub const MAX_HEAD_DIM: usize = 512;
/// Keys the fused kernel takes a block at a time (KB in the shader).
const KEY_BLOCK: usize = 8;
const WG: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Query tokens (H * W of the feature map).
    pub tokens: usize,
    /// Key and value tokens: `tokens` for self-attention, the text's for cross-attention.
    pub kv_tokens: usize,
    /// Query i sees keys 0..=i only (CLIP's text model; self-attention).
    pub causal: bool,
    /// Usually 1 / sqrt(head_dim).
    pub scale: f32,
}

impl AttentionShape {
    /// Self-attention over `tokens`, scaled by 1 / sqrt(head_dim).
    pub fn self_attention(batch: usize, heads: usize, head_dim: usize, tokens: usize) -> Self {
        Self {
            batch,
            heads,
            head_dim,
            tokens,
            kv_tokens: tokens,
            causal: false,
            scale: 1.0 / (head_dim as f32).sqrt(),
        }
    }
    /// Values in q and the output.
    pub fn len(&self) -> usize {
        self.batch * self.heads * self.head_dim * self.tokens
    }
    /// Values in k and v.
    pub fn kv_len(&self) -> usize {
        self.batch * self.heads * self.head_dim * self.kv_tokens
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0 || self.kv_len() == 0
    }
    pub fn flops(&self) -> u64 {
        // q k^T and p v, 2 flops per multiply-add each.
        4 * (self.batch * self.heads * self.tokens * self.kv_tokens * self.head_dim) as u64
    }
    /// Whether the two token counts and the mask agree: a causal mask needs queries and keys
    /// of one sequence.
    fn check(&self) -> Result<()> {
        if self.is_empty() {
            bail_shape!("attention: empty shape {self:?}");
        }
        if self.causal && self.kv_tokens != self.tokens {
            bail_shape!("attention: a causal mask over {} queries and {} keys", self.tokens, self.kv_tokens);
        }
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    bh: u32,
    d: u32,
    t: u32,
    scale: f32,
    key_start: u32,
    key_end: u32,
    first: u32,
    last: u32,
    tk: u32,
    causal: u32,
    _pad: [u32; 2],
}

/// Largest score matrix the composed path allocates; longer sequences take the fused kernel (a
/// 512x512 image's 4096-token autoencoder attention, 64 MiB of scores an image, among them).
const MAX_SCORES_BYTES: u64 = 16 << 20;

/// Largest score matrix of one head group: shared by every attention op (one scratch buffer per
/// size), so a whole UNet's attention holds it once.
const MAX_GROUP_SCORES_BYTES: u64 = 64 << 20;

/// Loop iterations one invocation of the fused kernel may run on a CPU driver: lavapipe stops a
/// shader's loops after 65535 iterations in all, silently (see group_norm.rs).
const CPU_LOOP_LIMIT: usize = 60_000;

impl AttentionShape {
    fn scores_len(&self) -> usize {
        self.batch * self.heads * self.tokens * self.kv_tokens
    }
}

/// out = softmax(q k^T * scale) v per (batch, head): q and out [B, heads * D, T], k and v
/// [B, heads * D, Tk]. Composed where the scores fit, else composed by head groups where one
/// head's fit, else fused.
pub fn attention(
    ctx: &Context,
    s: &AttentionShape,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let scores_bytes = 4 * s.scores_len() as u64;
    let limit = ctx.max_binding_bytes().min(MAX_SCORES_BYTES);
    if scores_bytes <= limit && ctx.fits_texels(s.scores_len()) {
        attention_composed(ctx, s, q, k, v, out)
    } else if let Some(group) = heads_per_group(ctx, s) {
        attention_by_head_groups(ctx, s, group, q, k, v, out)
    } else {
        attention_fused(ctx, s, q, k, v, out)
    }
}

/// The scratch `attention` will take for `s` on this device, for memory plans made before any
/// buffer exists: bytes the launch owns (the composed path's scores, sums and scale column, or the
/// fused kernel's running state), and shared buffers by (role, bytes) as `Context::shared_scratch`
/// keys them (the head groups'), which every op of a graph holds once.
pub fn planned_scratch(ctx: &Context, s: &AttentionShape) -> (u64, Vec<(&'static str, u64)>) {
    let limit = ctx.max_binding_bytes().min(MAX_SCORES_BYTES);
    if 4 * s.scores_len() as u64 <= limit && ctx.fits_texels(s.scores_len()) {
        let (scores, sums) = composed_scratch_floats(s);
        return (scratch_bytes(scores) + scratch_bytes(sums) + scale_bytes(s), vec![]);
    }
    if let Some(group) = heads_per_group(ctx, s) {
        let scales = scale_bytes(&AttentionShape { batch: group, heads: 1, ..*s });
        let all = group_scratch_floats(s, group);
        // One group runs on the op's own buffers: only its scores and sums are scratch.
        let used = if group == s.batch * s.heads { &all[4..] } else { &all[..] };
        return (scales, used.iter().map(|&(role, n)| (role, ctx.shared_scratch_bytes(n))).collect());
    }
    let state = if fused_key_chunk(ctx, s) < s.kv_tokens { fused_state_floats(s) } else { 0 };
    (scratch_bytes(state), vec![])
}

/// The composed path's scores and softmax sums, in floats.
fn composed_scratch_floats(s: &AttentionShape) -> (usize, usize) {
    (s.scores_len(), s.batch * s.heads * s.tokens)
}

/// Bytes of a buffer `Context::scratch_buffer` makes for `floats` f32 (whole 16-byte texels).
fn scratch_bytes(floats: usize) -> u64 {
    (4 * floats as u64).div_ceil(16).max(1) * 16
}

/// Bytes of the composed path's scale column (`constant_buffer` rounds to whole texels).
fn scale_bytes(s: &AttentionShape) -> u64 {
    16 * (s.batch * s.heads * s.kv_tokens).max(1).div_ceil(4) as u64
}

/// A head group's shared scratch, by role, in floats: its q, k, v and output, scores and sums.
fn group_scratch_floats(s: &AttentionShape, group: usize) -> [(&'static str, usize); 6] {
    let (d, t, tk) = (s.head_dim, s.tokens, s.kv_tokens);
    [
        ("attention group: q", group * d * t),
        ("attention group: k", group * d * tk),
        ("attention group: v", group * d * tk),
        ("attention group: output", group * d * t),
        ("attention group: scores", group * t * tk),
        ("attention group: softmax sums", group * t),
    ]
}

/// The most (batch, head) pairs whose scores fit one group's scratch, if one pair's do.
fn heads_per_group(ctx: &Context, s: &AttentionShape) -> Option<usize> {
    let per_head = 4 * (s.tokens * s.kv_tokens) as u64;
    let limit = ctx.max_binding_bytes().min(MAX_GROUP_SCORES_BYTES);
    let group = ((limit / per_head.max(1)) as usize).min(s.batch * s.heads);
    (group > 0 && ctx.fits_texels(group * s.tokens * s.kv_tokens)).then_some(group)
}

/// The composed path over `group` (batch, head) pairs at a time: a pair's q, k and v are
/// contiguous ([B * heads, D, T]), so each group is one copy of each into shared scratch, three
/// dispatches there, and one copy of its output back. The scores' scratch is a group's, shared
/// by every attention op.
pub fn attention_by_head_groups(
    ctx: &Context,
    s: &AttentionShape,
    group: usize,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    check_lengths(s, q, k, v, out)?;
    let bh = s.batch * s.heads;
    if group == 0 || group > bh {
        bail_shape!("attention: groups of {group} of {bh} heads");
    }
    let (d, t, tk) = (s.head_dim, s.tokens, s.kv_tokens);
    // The scale column of a whole group, read by every group (the last may be shorter).
    let scales = ctx.constant_buffer("attention scale", group * tk, s.scale);
    if group == bh {
        // One group: the op's own buffers, only the scores and sums in shared scratch.
        let [.., (scores_role, scores), (sums_role, sums)] = group_scratch_floats(s, group);
        let scratch = Scratch {
            q: q.clone(),
            k: k.clone(),
            v: v.clone(),
            out: out.clone(),
            scores: ctx.shared_scratch(scores_role, scores),
            inv_sums: ctx.shared_scratch(sums_role, sums),
            scales,
        };
        return composed(ctx, s, q, k, v, out, &scratch);
    }
    let [q_s, k_s, v_s, out_s, scores_s, sums_s] =
        group_scratch_floats(s, group).map(|(r, n)| ctx.shared_scratch(r, n));
    let scratch = Scratch { q: q_s, k: k_s, v: v_s, out: out_s, scores: scores_s, inv_sums: sums_s, scales };
    let mut list = vec![];
    for first in (0..bh).step_by(group) {
        let n = group.min(bh - first);
        let part = AttentionShape { batch: n, heads: 1, ..*s };
        let (qo, kvo) = ((first * d * t * 4) as u64, (first * d * tk * 4) as u64);
        let (q_bytes, kv_bytes) = ((n * d * t * 4) as u64, (n * d * tk * 4) as u64);
        let mut three = composed(ctx, &part, &scratch.q, &scratch.k, &scratch.v, &scratch.out, &scratch)?;
        // The group's inputs land before its first kernel reads them (ahead of its texel copies).
        let inputs = [
            CopyOp::buffer(q, qo, &scratch.q, 0, q_bytes),
            CopyOp::buffer(k, kvo, &scratch.k, 0, kv_bytes),
            CopyOp::buffer(v, kvo, &scratch.v, 0, kv_bytes),
        ];
        three[0].copies.splice(0..0, inputs);
        list.extend(three);
        list.push(Dispatch::copies_only(
            "attention.gather",
            vec![CopyOp::buffer(&scratch.out, 0, out, qo, q_bytes)],
            Cost { flops: 0, bytes: 2 * q_bytes },
        ));
    }
    Ok(list)
}

/// Where a composed attention keeps its scores and softmax sums (and, by head groups, its
/// inputs and output).
struct Scratch {
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    out: wgpu::Buffer,
    scores: wgpu::Buffer,
    inv_sums: wgpu::Buffer,
    /// The scale per key column, [pairs, Tk].
    scales: wgpu::Buffer,
}

fn check_lengths(
    s: &AttentionShape,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<()> {
    s.check()?;
    for (what, buf, len) in
        [("q", q, s.len()), ("k", k, s.kv_len()), ("v", v, s.kv_len()), ("output", out, s.len())]
    {
        check_len("attention", what, buf, len)?;
    }
    Ok(())
}

/// The composed path: three dispatches over a scratch buffer for the scores (kept alive by the
/// dispatches' bind groups).
pub fn attention_composed(
    ctx: &Context,
    s: &AttentionShape,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    check_lengths(s, q, k, v, out)?;
    let (scores, sums) = composed_scratch_floats(s);
    let scratch = Scratch {
        q: q.clone(),
        k: k.clone(),
        v: v.clone(),
        out: out.clone(),
        scores: ctx.scratch_buffer("attention scores", scores),
        inv_sums: ctx.scratch_buffer("attention softmax sums", sums),
        scales: ctx.constant_buffer("attention scale", s.batch * s.heads * s.kv_tokens, s.scale),
    };
    composed(ctx, s, q, k, v, out, &scratch)
}

/// The composed path's three dispatches, scores and sums in `scratch`.
fn composed(
    ctx: &Context,
    s: &AttentionShape,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
    scratch: &Scratch,
) -> Result<Vec<Dispatch>> {
    let (bh, d, t, tk) = (s.batch * s.heads, s.head_dim, s.tokens, s.kv_tokens);
    // The scale, once per key column (`scratch.scales`): the scores' matmul applies it as a
    // column scale, so that both matmuls are one pipeline (same override constants) and a cold
    // first call compiles one.
    let (scores, inv_sums, scales) = (&scratch.scores, &scratch.inv_sums, &scratch.scales);
    // scores[bh, i, j] = scale * sum_d q[bh, d, i] k[bh, d, j]: A = q^T (rows along tokens), B = k.
    let qk = MatmulShape {
        batch: bh,
        m: t,
        n: tk,
        k: d,
        a: Strides { batch: d * t, row: 1, col: t },
        b: Strides { batch: d * tk, row: tk, col: 1 },
        bias: Bias::ColumnScale,
        silu: false,
    };
    // out[bh, d, i] = sum_j v[bh, d, j] p[bh, i, j]: A = v, B = p^T; p is left unnormalised by
    // the softmax (one pass fewer) and each query's column scaled by 1 / its sum instead.
    let pv = MatmulShape {
        batch: bh,
        m: d,
        n: t,
        k: tk,
        a: Strides { batch: d * tk, row: tk, col: 1 },
        b: Strides { batch: t * tk, row: 1, col: tk },
        bias: Bias::ColumnScale,
        silu: false,
    };
    let mask = if s.causal { softmax::Mask::Causal { queries: t } } else { softmax::Mask::None };
    let mut list = vec![
        one_matmul(ctx, &qk, q, k, scales, scores)?,
        softmax::softmax_unnormalized_masked(ctx, bh * t, tk, 1.0, mask, scores, scores, inv_sums)?,
        one_matmul(ctx, &pv, v, scores, inv_sums, out)?,
    ];
    for (dispatch, label) in list.iter_mut().zip(["attention.scores", "attention.softmax", "attention.mix"]) {
        dispatch.label = label;
    }
    Ok(list)
}

/// The fused kernel: one dispatch, no score matrix.
pub fn attention_fused(
    ctx: &Context,
    s: &AttentionShape,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    if s.head_dim > MAX_HEAD_DIM {
        bail_shape!("attention: head dim {} is over the supported {MAX_HEAD_DIM}", s.head_dim);
    }
    check_lengths(s, q, k, v, out)?;
    let chunk = fused_key_chunk(ctx, s);
    let chunks = s.kv_tokens.div_ceil(chunk);
    let state = if chunks > 1 {
        ctx.scratch_buffer("attention running state", fused_state_floats(s))
    } else {
        ctx.dummy.clone()
    };
    let mut list = vec![];
    for c in 0..chunks {
        let (start, end) = (c * chunk, ((c + 1) * chunk).min(s.kv_tokens));
        let params = ctx.uniform(&Params {
            bh: (s.batch * s.heads) as u32,
            d: s.head_dim as u32,
            t: s.tokens as u32,
            scale: s.scale,
            key_start: start as u32,
            key_end: end as u32,
            first: (c == 0) as u32,
            last: (c + 1 == chunks) as u32,
            tk: s.kv_tokens as u32,
            causal: s.causal as u32,
            _pad: [0; 2],
        });
        let part = AttentionShape { kv_tokens: end - start, ..*s };
        list.push(ctx.dispatch(
            &SPEC,
            &[("WG", WG as f64)],
            &[q, k, v, out, &params, &state],
            [groups(s.tokens, WG), (s.batch * s.heads) as u32, 1],
            Cost { flops: part.flops(), bytes: 8 * (s.len() + s.kv_len()) as u64 },
        )?);
    }
    Ok(list)
}

/// Keys one fused dispatch walks: all of them, but where a CPU driver would cut the loops short.
fn fused_key_chunk(ctx: &Context, s: &AttentionShape) -> usize {
    let per_key = s.head_dim.div_ceil(2) + 4;
    if ctx.is_cpu() {
        (CPU_LOOP_LIMIT / per_key / KEY_BLOCK * KEY_BLOCK).max(KEY_BLOCK)
    } else {
        s.kv_tokens
    }
}

/// (m, l, o) of every query between fused dispatches: [bh, t, D + 2], a head's size, not T x T.
fn fused_state_floats(s: &AttentionShape) -> usize {
    s.batch * s.heads * s.tokens * (s.head_dim + 2)
}

/// The buffers of attention's backward: the forward's inputs, d loss / d out, and the gradients it
/// writes (all [B, heads * D, T]).
pub struct AttentionGrads<'a> {
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub dout: &'a wgpu::Buffer,
    pub dq: &'a wgpu::Buffer,
    pub dk: &'a wgpu::Buffer,
    pub dv: &'a wgpu::Buffer,
}

/// The backward of `attention`, composed like its forward, with the T x T probabilities in
/// scratch (the composed forward keeps its scores there too; the fused forward's shapes, whose
/// scores do not fit, are refused). P is recomputed, not saved: S = scale Q^T K, P = softmax(S);
/// then per (image, head), D the head dim:
///   dV = dO P,  dP = dO^T V,  dS = scale P (dP - rowsum(P dP)),  dQ = K dS^T,  dK = Q dS
/// as matmuls over strided views and one softmax backward pass. Seven dispatches.
pub fn attention_backward(ctx: &Context, s: &AttentionShape, g: &AttentionGrads) -> Result<Vec<Dispatch>> {
    s.check()?;
    if s.causal || s.kv_tokens != s.tokens {
        bail_shape!("attention backward: self-attention without a mask only ({s:?})");
    }
    for (what, buf) in
        [("q", g.q), ("k", g.k), ("v", g.v), ("d out", g.dout), ("dq", g.dq), ("dk", g.dk), ("dv", g.dv)]
    {
        check_len("attention backward", what, buf, s.len())?;
    }
    let limit = ctx.max_binding_bytes().min(MAX_SCORES_BYTES);
    if 4 * s.scores_len() as u64 > limit || !ctx.fits_texels(s.scores_len()) {
        bail_shape!(
            "attention backward: {} x {} tokens per head do not fit a score matrix on this device; use a smaller batch or image",
            s.tokens,
            s.tokens
        );
    }
    let (bh, d, t) = (s.batch * s.heads, s.head_dim, s.tokens);
    let (probs, dp) = (
        ctx.scratch_buffer("attention backward: P", s.scores_len()),
        ctx.scratch_buffer("attention backward: dS", s.scores_len()),
    );
    let head = d * t;
    let plain = |m, n, k, a, b| MatmulShape { batch: bh, m, n, k, a, b, bias: Bias::None, silu: false };
    let one = matmul::Launch::One(matmul::Variant::Auto);
    let mut list = vec![];
    let mut mm = |shape: MatmulShape, a, b, c| -> Result<()> {
        list.extend(matmul::matmul(ctx, one, &shape, a, b, None, c)?);
        Ok(())
    };
    // S = Q^T K (unscaled; the softmax applies the scale), P = softmax(scale S) in place.
    mm(
        plain(t, t, d, Strides { batch: head, row: 1, col: t }, Strides { batch: head, row: t, col: 1 }),
        g.q,
        g.k,
        &probs,
    )?;
    let dense_tt = Strides { batch: t * t, row: t, col: 1 };
    let dense_dt = Strides { batch: head, row: t, col: 1 };
    // dV [D, T] = dO [D, T] P [T, T].
    mm(plain(d, t, t, dense_dt, dense_tt), g.dout, &probs, g.dv)?;
    // dP [T, T] = dO^T V.
    mm(plain(t, t, d, Strides { batch: head, row: 1, col: t }, dense_dt), g.dout, g.v, &dp)?;
    list.insert(1, softmax::softmax(ctx, bh * t, t, s.scale, &probs, &probs)?);
    list.push(softmax::softmax_backward(ctx, bh * t, t, s.scale, &probs, &dp)?);
    // dQ [D, T] = K [D, T] dS^T; dK [D, T] = Q [D, T] dS.
    let ds_t = Strides { batch: t * t, row: 1, col: t };
    list.extend(matmul::matmul(ctx, one, &plain(d, t, t, dense_dt, ds_t), g.k, &dp, None, g.dq)?);
    list.extend(matmul::matmul(ctx, one, &plain(d, t, t, dense_dt, dense_tt), g.q, &dp, None, g.dk)?);
    Ok(list)
}

/// Plain reference of `attention_backward` in f64: (dq, dk, dv).
pub fn reference_backward(
    s: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (d, t) = (s.head_dim, s.tokens);
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; s.len()], vec![0.0f32; s.len()], vec![0.0f32; s.len()]);
    for bh in 0..s.batch * s.heads {
        let base = bh * d * t;
        let at = |x: &[f32], c: usize, i: usize| x[base + c * t + i] as f64;
        let mut p = vec![0.0f64; t * t];
        for i in 0..t {
            let row: Vec<f64> = (0..t)
                .map(|j| s.scale as f64 * (0..d).map(|c| at(q, c, i) * at(k, c, j)).sum::<f64>())
                .collect();
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
            for j in 0..t {
                p[i * t + j] = (row[j] - m).exp() / z;
            }
        }
        let mut ds = vec![0.0f64; t * t];
        for i in 0..t {
            let dp: Vec<f64> =
                (0..t).map(|j| (0..d).map(|c| at(dout, c, i) * at(v, c, j)).sum::<f64>()).collect();
            let dd: f64 = (0..t).map(|j| p[i * t + j] * dp[j]).sum();
            for j in 0..t {
                ds[i * t + j] = s.scale as f64 * p[i * t + j] * (dp[j] - dd);
            }
        }
        for c in 0..d {
            for j in 0..t {
                let o = base + c * t + j;
                dv[o] = (0..t).map(|i| at(dout, c, i) * p[i * t + j]).sum::<f64>() as f32;
                dk[o] = (0..t).map(|i| at(q, c, i) * ds[i * t + j]).sum::<f64>() as f32;
                dq[o] = (0..t).map(|jj| at(k, c, jj) * ds[j * t + jj]).sum::<f64>() as f32;
            }
        }
    }
    (dq, dk, dv)
}

/// Plain softmax attention with the full score matrix, in f64 (keys past a causal query's own
/// token get no weight).
pub fn reference(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
    let (d, t, tk) = (s.head_dim, s.tokens, s.kv_tokens);
    let mut out = vec![0.0f32; s.len()];
    for bh in 0..s.batch * s.heads {
        let (qb, kb) = (bh * d * t, bh * d * tk);
        for i in 0..t {
            let keys = if s.causal { i + 1 } else { tk };
            let scores: Vec<f64> = (0..keys)
                .map(|j| {
                    let dot: f64 = (0..d).map(|c| q[qb + c * t + i] as f64 * k[kb + c * tk + j] as f64).sum();
                    dot * s.scale as f64
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|&x| (x - max).exp()).collect();
            let sum: f64 = weights.iter().sum();
            for c in 0..d {
                let o: f64 = (0..keys).map(|j| weights[j] * v[kb + c * tk + j] as f64).sum();
                out[qb + c * t + i] = (o / sum) as f32;
            }
        }
    }
    out
}

/// One dispatch of the matmul the adapter runs best (never split: the products are large).
fn one_matmul(
    ctx: &Context,
    s: &matmul::MatmulShape,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    scale: &wgpu::Buffer,
    c: &wgpu::Buffer,
) -> Result<Dispatch> {
    let launch = matmul::Launch::One(matmul::Variant::Auto);
    Ok(matmul::matmul(ctx, launch, s, a, b, Some(scale), c)?.remove(0))
}
