//! Files users give and get: NumPy .npy arrays, PNG images and training datasets.

pub mod dataset;
pub mod images;
pub mod npy;
pub mod plot;
