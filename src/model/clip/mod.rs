//! CLIP, the text side Stable Diffusion conditions on: the tokenizer of a pipeline folder's
//! `tokenizer/`.

pub mod tokenizer;

pub use tokenizer::{ClipTokenizer, Encoding};
