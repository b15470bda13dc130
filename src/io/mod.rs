//! Files users give and get: NumPy .npy arrays and PNG images.

pub mod images;
pub mod npy;
