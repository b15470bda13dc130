//! The WGSL sources of `shaders/`, compiled into the binary (one file per kernel family).

use crate::gpu::ShaderSource;

macro_rules! shader {
    ($ident:ident, $file:literal) => {
        pub static $ident: ShaderSource =
            ShaderSource { name: $file, source: include_str!(concat!("../shaders/", $file)) };
    };
    // A kernel file followed by a part its family shares (WGSL has no includes).
    ($ident:ident, $file:literal, shared $common:literal) => {
        pub static $ident: ShaderSource = ShaderSource {
            name: $file,
            source: concat!(
                include_str!(concat!("../shaders/", $file)),
                "\n",
                include_str!(concat!("../shaders/common/", $common))
            ),
        };
    };
}

shader!(CONV2D, "conv2d.wgsl", shared "conv2d_io.wgsl");
shader!(CONV2D_SUBGROUP, "conv2d_subgroup.wgsl", shared "conv2d_io.wgsl");
shader!(CONV2D_REDUCE, "conv2d_reduce.wgsl");
shader!(CONV2D_TRANSPOSE_SUBGROUP, "conv2d_transpose_subgroup.wgsl", shared "conv2d_io.wgsl");
shader!(CONV2D_BACKWARD, "conv2d_backward.wgsl");
shader!(CONV2D_WEIGHT_GRAD, "conv2d_weight_grad.wgsl", shared "conv2d_weight_grad_io.wgsl");
shader!(CONV2D_WEIGHT_GRAD_SUBGROUP, "conv2d_weight_grad_subgroup.wgsl", shared "conv2d_weight_grad_io.wgsl");
shader!(CHANNELS_LAST, "channels_last.wgsl");
shader!(FLIP_WEIGHT, "flip_weight.wgsl");
shader!(COL2IM, "col2im.wgsl");
shader!(MATMUL, "matmul.wgsl", shared "matmul_io.wgsl");
shader!(MATMUL_SUBGROUP, "matmul_subgroup.wgsl", shared "matmul_io.wgsl");
shader!(MATMUL_REDUCE, "matmul_reduce.wgsl");
shader!(GROUP_NORM, "group_norm.wgsl", shared "group_norm_io.wgsl");
shader!(GROUP_NORM_BACKWARD, "group_norm_backward.wgsl", shared "group_norm_io.wgsl");
shader!(GROUP_NORM_PARAM_GRADS, "group_norm_param_grads.wgsl");
shader!(LAYER_NORM, "layer_norm.wgsl");
shader!(ATTENTION, "attention.wgsl");
shader!(SOFTMAX, "softmax.wgsl");
shader!(SOFTMAX_BACKWARD, "softmax_backward.wgsl");
shader!(ELEMENTWISE, "elementwise.wgsl");
shader!(EMBEDDING, "embedding.wgsl");
shader!(DIFFUSION, "diffusion.wgsl");
shader!(RNG, "rng.wgsl");
shader!(LOSS, "loss.wgsl");
shader!(OPTIM, "optim.wgsl");
shader!(DATA, "data.wgsl");
shader!(VQ, "vq.wgsl");

/// Every shader, for validation and for `info`.
pub static ALL: [&ShaderSource; 28] = [
    &CONV2D,
    &CONV2D_SUBGROUP,
    &CONV2D_REDUCE,
    &CONV2D_TRANSPOSE_SUBGROUP,
    &CONV2D_BACKWARD,
    &CONV2D_WEIGHT_GRAD,
    &CONV2D_WEIGHT_GRAD_SUBGROUP,
    &CHANNELS_LAST,
    &FLIP_WEIGHT,
    &COL2IM,
    &MATMUL,
    &MATMUL_SUBGROUP,
    &MATMUL_REDUCE,
    &GROUP_NORM,
    &GROUP_NORM_BACKWARD,
    &GROUP_NORM_PARAM_GRADS,
    &LAYER_NORM,
    &ATTENTION,
    &SOFTMAX,
    &SOFTMAX_BACKWARD,
    &ELEMENTWISE,
    &EMBEDDING,
    &DIFFUSION,
    &RNG,
    &LOSS,
    &OPTIM,
    &DATA,
    &VQ,
];

/// Parses and validates a WGSL source with naga, as wgpu will (no device needed).
pub fn validate(shader: &ShaderSource) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(shader.source)
        .map_err(|e| e.emit_to_string_with_path(shader.source, shader.name))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string_with_path(shader.source, shader.name))?;
    Ok(())
}
