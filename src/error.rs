//! One error type for the whole engine: every failure a user can cause ends as one clear line.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// No adapter matched the request; the message says how to get one.
    NoAdapter(String),
    /// The device refused something (request_device, a limit, a validation error).
    Gpu(String),
    /// Shapes or parameters that a kernel or layer cannot take.
    Shape(String),
    /// A file could not be read or written.
    Io { path: String, source: std::io::Error },
    /// Anything else the user gave us that we cannot use, said in words.
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(msg) => write!(f, "no GPU adapter: {msg}"),
            Error::Gpu(msg) => write!(f, "GPU error: {msg}"),
            Error::Shape(msg) => write!(f, "shape error: {msg}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Invalid(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `bail_shape!("conv2d: ...", args)` returns an `Error::Shape` from the current function.
#[macro_export]
macro_rules! bail_shape {
    ($($arg:tt)*) => { return Err($crate::Error::Shape(format!($($arg)*))) };
}
