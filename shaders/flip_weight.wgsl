// flip_weight: conv2d's input gradient runs the forward kernel over the weight mirrored per tap
// with its channel axes swapped (conv2d_backward.rs): the packed forward weight [KH*KW, Cin,
// Cout4] vec4s to the packed weight of that conv, [KH*KW, Cout, Cin4] vec4s,
//   W'[ci, co, ky, kx] = W[co, ci, KH-1-ky, KW-1-kx],
// rerun every step, since weights change as they train.
// Each lane moves one 4 x 4 block (4 input x 4 output channels of one tap): 4 vec4 loads, a
// transpose in registers, 4 vec4 stores. Scalar moves (one float a lane, reads along co) took 208
// ms of a ddpm-cifar10-32 training step on lavapipe, whose storage accesses go lane by lane; a
// tiled transpose through workgroup memory was slower still (its barriers). Input channels past
// Cin are written as zeros, as the packed layout pads.
// Grid: x = (ci block, co block) in workgroups of WG, co block fastest (loads contiguous across
// lanes); z = the tap.

struct Params { cin: u32, cout: u32, cin4: u32, cout4: u32, taps: u32, groups_x: u32, _pad0: u32, _pad1: u32 }

const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: Params;

// Output channels block cb of input channel ci at a tap of the forward weight; zeros past Cin.
fn row(tap: u32, ci: u32, cb: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), src[(tap * p.cin + min(ci, p.cin - 1u)) * p.cout4 + cb], ci < p.cin);
}

@compute @workgroup_size(WG)
fn flip_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = (wg.x + wg.y * p.groups_x) * WG + lid;
    if (j >= p.cin4 * p.cout4) {
        return;
    }
    let cb = j % p.cout4;
    let ib = j / p.cout4;
    let tap = wg.z;
    let mirrored = p.taps - 1u - tap;
    // Rows ci of the forward's tap, 4 output channels each (no private array: CPU drivers keep a
    // dynamically indexed one in memory).
    let r0 = row(mirrored, ib * 4u, cb);
    let r1 = row(mirrored, ib * 4u + 1u, cb);
    let r2 = row(mirrored, ib * 4u + 2u, cb);
    let r3 = row(mirrored, ib * 4u + 3u, cb);
    // Rows co of the flipped tap: 4 input channels each.
    for (var m = 0u; m < 4u; m++) {
        let co = cb * 4u + m;
        if (co < p.cout) {
            dst[(tap * p.cout + co) * p.cin4 + ib] = vec4<f32>(r0[m], r1[m], r2[m], r3[m]);
        }
    }
}
