//! NumPy .npy files (format 1.0-3.0) holding little-endian f32 (or f64, converted) C-order arrays,
//! and uint8 arrays (image datasets).

use std::path::Path;

use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}

/// An array's values.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// Reads an .npy file of floats: (shape, values as f32).
pub fn read(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    match read_values(path)? {
        (shape, Values::F32(v)) => Ok((shape, v)),
        (_, Values::U8(_)) => Err(bad(path, "dtype uint8: save the array as float32 (little-endian)")),
    }
}

/// Reads an .npy file of floats or of uint8.
pub fn read_values(path: &Path) -> Result<(Vec<usize>, Values)> {
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    parse(&bytes).map_err(|msg| bad(path, msg))
}

/// Reads an .npy file of class labels: a 1-D array of integers (any NumPy integer type, or
/// floats holding whole numbers), each at least 0.
pub fn read_labels(path: &Path) -> Result<Vec<u32>> {
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    labels(&bytes).map_err(|msg| bad(path, msg))
}

fn labels(bytes: &[u8]) -> std::result::Result<Vec<u32>, String> {
    let (descr, shape, data) = header(bytes)?;
    let [n] = shape[..] else {
        return Err(format!("shape {shape:?}: labels are a 1-D array, one per image"));
    };
    let d = descr.trim_matches('\'');
    // (bytes a value, signed, float)
    let (width, signed, float) = match d {
        "|u1" | "<u1" | "uint8" => (1, false, false),
        "|i1" | "<i1" | "int8" => (1, true, false),
        "<u2" | "uint16" => (2, false, false),
        "<i2" | "int16" => (2, true, false),
        "<u4" | "uint32" => (4, false, false),
        "<i4" | "int32" => (4, true, false),
        "<u8" | "uint64" => (8, false, false),
        "<i8" | "int64" => (8, true, false),
        "<f4" | "float32" => (4, true, true),
        "<f8" | "float64" => (8, true, true),
        other => return Err(format!("dtype {other} is not supported for labels: save them as integers")),
    };
    if data.len() < n * width {
        return Err(format!("holds {} bytes of data, {n} labels need {}", data.len(), n * width));
    }
    data[..n * width]
        .chunks_exact(width)
        .enumerate()
        .map(|(i, c)| {
            let mut b = [0u8; 8];
            b[..width].copy_from_slice(c);
            let v: f64 = match (width, signed, float) {
                (4, _, true) => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                (8, _, true) => f64::from_le_bytes(b),
                (_, false, _) => u64::from_le_bytes(b) as f64,
                (w, true, _) => (i64::from_le_bytes(b) << (64 - 8 * w) >> (64 - 8 * w)) as f64,
            };
            if v.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&v) {
                return Err(format!("label {i} is {v}: labels are class ids, whole numbers from 0"));
            }
            Ok(v as u32)
        })
        .collect()
}

/// The header of an .npy file: (descr, shape, the data).
fn header(bytes: &[u8]) -> std::result::Result<(String, Vec<usize>, &[u8]), String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a NumPy .npy file".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or unreadable .npy header")?;
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = header.find(&format!("'{key}'")).ok_or(format!("the .npy header has no '{key}'"))?;
        let rest =
            header[at + key.len() + 2..].trim_start().strip_prefix(':').ok_or("malformed .npy header")?;
        Ok(rest.trim_start())
    };
    let descr: String = field("descr")?.chars().take_while(|&c| c != ',').collect();
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-ordered arrays are not supported: save with np.ascontiguousarray".into());
    }
    let shape_text = field("shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("malformed shape in .npy header")?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("malformed shape ({inner})")))
        .collect::<std::result::Result<_, _>>()?;
    Ok((descr.trim().to_string(), shape, &bytes[start + header_len..]))
}

fn parse(bytes: &[u8]) -> std::result::Result<(Vec<usize>, Values), String> {
    let (descr, shape, data) = header(bytes)?;
    let width = if descr.starts_with("'<f4'") || descr.starts_with("'float32'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else if ["'|u1'", "'<u1'", "'uint8'"].iter().any(|d| descr.starts_with(d)) {
        1
    } else {
        return Err(format!(
            "dtype {descr} is not supported: save the array as float32 (little-endian) or uint8"
        ));
    };
    let count: usize = shape.iter().product();
    if data.len() < count * width {
        return Err(format!("holds {} bytes of data, shape {shape:?} needs {}", data.len(), count * width));
    }
    let values = match width {
        1 => Values::U8(data[..count].to_vec()),
        4 => Values::F32(
            data[..count * 4].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        ),
        _ => Values::F32(
            data[..count * 8]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32) // ok: chunks_exact(8)
                .collect(),
        ),
    };
    Ok((shape, values))
}

/// Writes a little-endian f32 C-order .npy (format 1.0).
pub fn write(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text =
        if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + values.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(bytemuck::cast_slice(values));
    std::fs::write(path, bytes).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("wgpu-diffusion-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        write(&p, &[2, 3, 4], &v).unwrap();
        assert_eq!(read(&p).unwrap(), (vec![2, 3, 4], v.clone()));
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!((bytes.len() - v.len() * 4) % 64, 0, "data starts 64-byte aligned");
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("needs 96"));
        std::fs::write(&p, b"hello").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("not a NumPy"));
        let int_header = b"\x93NUMPY\x01\x00\x4e\x00{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }                    \n";
        std::fs::write(&p, int_header).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("'<i8'"));
        // The same file is fine as labels once it holds its data.
        let mut labelled = int_header.to_vec();
        labelled.extend_from_slice(&7i64.to_le_bytes());
        labelled.extend_from_slice(&0i64.to_le_bytes());
        std::fs::write(&p, &labelled).unwrap();
        assert_eq!(read_labels(&p).unwrap(), vec![7, 0]);
        let at = labelled.len() - 8;
        labelled[at..].copy_from_slice(&(-1i64).to_le_bytes());
        std::fs::write(&p, &labelled).unwrap();
        assert!(read_labels(&p).unwrap_err().to_string().contains("label 1 is -1"));
        write(&p, &[3], &[1.0, 2.0, 2.5]).unwrap();
        assert!(read_labels(&p).unwrap_err().to_string().contains("label 2 is 2.5"));
        write(&p, &[2, 1], &[1.0, 2.0]).unwrap();
        assert!(read_labels(&p).unwrap_err().to_string().contains("1-D"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
