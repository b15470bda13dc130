// GroupNorm's parameter gradients: d gamma[c] = sum over images of sum(dz x^), d beta[c] = sum
// over images of sum(dz), from the [N, C, 2] partials group_norm_backward.wgsl writes. One
// invocation per channel, images in order: the same bits every run (no atomics).

struct Params {
    n: u32,
    channels: u32,
    _pad0: u32, _pad1: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn group_norm_param_grads(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.channels) {
        return;
    }
    var dg = 0.0;
    var db = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let o = (n * p.channels + c) * 2u;
        dg += partials[o];
        db += partials[o + 1u];
    }
    dgamma[c] = dg;
    dbeta[c] = db;
}
