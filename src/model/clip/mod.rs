//! CLIP, the text side Stable Diffusion conditions on: the tokenizer of a pipeline folder's
//! `tokenizer/` and the text model of its `text_encoder/`.

pub mod text_model;
pub mod tokenizer;

pub use text_model::{ClipTextConfig, ClipTextModel};
pub use tokenizer::{ClipTokenizer, Encoding};
