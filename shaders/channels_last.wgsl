// channels_last: the weight gradient's copies of x and dy (conv2d_weight_grad.wgsl reads them).
// x [N, C, HW] to [N, HW, C4] vec4s (C4 = C / 4 rounded up, zeros past C): 4 channels of a pixel
// are one texel there, and one store here. Grid: x = the block of 4 channels, y = the image; each
// workgroup walks its plane's pixels WG at a time, so a 7x7 map leaves few lanes idle.
// With SUM (dy's copy) the workgroup also sums its plane, d channel add: sums[n C + c] = scale *
// the sum over the pixels, per lane in pixel order and then over the lanes in order (the same
// bits every run, no atomics).

struct Params { c: u32, c4: u32, hw: u32, scale: f32 }

override SUM: bool = false;
const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;

var<workgroup> partial: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn channels_last(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c0 = wg.x * 4u;
    let n = wg.y;
    // Channels past C read channel C - 1 and are replaced by zero.
    let c = vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u);
    let ok = c < vec4<u32>(p.c);
    let plane = (vec4<u32>(n * p.c) + min(c, vec4<u32>(p.c - 1u))) * p.hw;
    var acc = vec4<f32>(0.0);
    for (var pixel = lid; pixel < p.hw; pixel += WG) {
        let at = plane + vec4<u32>(pixel);
        let v = select(vec4<f32>(0.0), vec4<f32>(src[at.x], src[at.y], src[at.z], src[at.w]), ok);
        dst[(n * p.hw + pixel) * p.c4 + wg.x] = v;
        acc += v;
    }
    if (!SUM) {
        return;
    }
    // One barrier, then one lane sums the partials in order (a tree would cost a barrier a
    // level, and barriers are dear on CPU drivers).
    partial[lid] = acc;
    workgroupBarrier();
    if (lid == 0u) {
        var total = vec4<f32>(0.0);
        for (var k = 0u; k < WG; k++) {
            total += partial[k];
        }
        for (var k = 0u; k < 4u; k++) {
            if (c0 + k < p.c) {
                sums[n * p.c + c0 + k] = total[k] * p.scale;
            }
        }
    }
}
