// Training batches gathered on the device from a dataset that lives there: image i of the batch
// is dataset image indices[(step[0] % ring) * batch + i] (bit 31: mirrored left to right), so a
// submission of many steps reads each step's row of the index ring by the optimizer's step
// counter. The dataset holds [N, C, H, W] values as 8-bit (MODE 0: packed four to a word, scaled
// as ToTensor then Normalize(0.5, 0.5): (b / 255 - 0.5) / 0.5) or as f32 already in the model's
// range (MODE 1). One invocation an output value; a 1-D grid spilled into y.
//
// gather_labels: the batch's class labels, label i = the f32 bits of
// indices[(step[0] % ring) * batch + i]: the host writes each submission's rows of a label ring
// (with the class dropout already drawn) as it writes the index ring's. `images` is unused.

struct Params {
    per_image: u32, // C * H * W
    width: u32,
    batch: u32,
    ring: u32,      // steps the index ring holds
    groups_x: u32,
    _pad0: u32, _pad1: u32, _pad2: u32,
}

const WG: u32 = 256u;
override MODE: u32 = 0u;
const FLIP: u32 = 0x80000000u;

@group(0) @binding(0) var<storage, read> images: array<u32>;
@group(0) @binding(1) var<storage, read> indices: array<u32>;
@group(0) @binding(2) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn gather_images(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * p.groups_x) * WG + lid;
    if (id >= p.batch * p.per_image) { return; }
    let i = id / p.per_image;
    let e = id % p.per_image;
    let entry = indices[(step[0] % p.ring) * p.batch + i];
    let x = e % p.width;
    var col = x;
    if ((entry & FLIP) != 0u) { col = p.width - 1u - x; }
    let src = (entry & ~FLIP) * p.per_image + e - x + col;
    if (MODE == 0u) {
        let byte = (images[src / 4u] >> (8u * (src % 4u))) & 0xffu;
        out[id] = (f32(byte) / 255.0 - 0.5) / 0.5;
    } else {
        out[id] = bitcast<f32>(images[src]);
    }
}

@compute @workgroup_size(WG)
fn gather_labels(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * p.groups_x) * WG + lid;
    if (i >= p.batch) { return; }
    out[i] = bitcast<f32>(indices[(step[0] % p.ring) * p.batch + i]);
}
