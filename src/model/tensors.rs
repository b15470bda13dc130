//! Reading safetensors files into f32 tensors by name (F32, F16 and BF16 are converted on load).

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// A host tensor: shape and row-major f32 data.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let mant = (bits & 0x3ff) as u32;
    let out = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise the mantissa.
            let shift = m.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((m << shift) & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(out)
}

pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

fn convert(name: &str, dtype: Dtype, bytes: &[u8], path: &str) -> Result<Vec<f32>> {
    let pairs = || bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    Ok(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => pairs().map(f16_to_f32).collect(),
        Dtype::BF16 => pairs().map(bf16_to_f32).collect(),
        other => {
            return Err(Error::Invalid(format!(
                "{path}: tensor '{name}' has dtype {other:?}; only F32, F16 and BF16 are supported"
            )))
        }
    })
}

/// Every tensor of a safetensors file, converted to f32.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, HostTensor>> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: shown.clone(), source })?;
    parse_safetensors(&bytes, &shown)
}

/// The tensors of a safetensors file whose names `keep` accepts, converted to f32 (a text
/// encoder's file may hold an int64 `position_ids` buffer that no kernel reads).
pub fn read_safetensors_where(
    path: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<HashMap<String, HostTensor>> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: shown.clone(), source })?;
    parse_safetensors_where(&bytes, &shown, keep)
}

/// Parses safetensors bytes; the crate validates the header length, the JSON and that every tensor's
/// offsets lie inside the data and match its shape.
pub fn parse_safetensors(bytes: &[u8], path: &str) -> Result<HashMap<String, HostTensor>> {
    parse_safetensors_where(bytes, path, |_| true)
}

fn parse_safetensors_where(
    bytes: &[u8],
    path: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<HashMap<String, HostTensor>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Invalid(format!("{path}: not a valid safetensors file ({e})")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors().into_iter().filter(|(n, _)| keep(n)) {
        let data = convert(&name, view.dtype(), view.data(), path)?;
        out.insert(name, HostTensor { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// Writes f32 tensors as a safetensors file (sorted by name), for goldens and `--save` outputs.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<()> {
    let bytes = safetensors_bytes(tensors, &[]);
    std::fs::write(path, bytes).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

/// A safetensors file of f32 tensors (sorted by name) with string `metadata` (`__metadata__`).
pub fn safetensors_bytes(tensors: &[(&str, &HostTensor)], metadata: &[(&str, String)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v.clone()))).collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut offset = 0usize;
    let mut sorted: Vec<_> = tensors.to_vec();
    sorted.sort_by_key(|(n, _)| n.to_string());
    for (name, t) in &sorted {
        let len = t.data.len() * 4;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + json.len() + offset);
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    for (_, t) in &sorted {
        bytes.extend_from_slice(bytemuck::cast_slice(&t.data));
    }
    bytes
}

/// The `__metadata__` strings of a safetensors file's bytes.
pub fn safetensors_metadata(bytes: &[u8], path: &str) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::Invalid(format!("{path}: not a valid safetensors file ({e})")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24)); // largest subnormal
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert!(f16_to_f32(0x7c00).is_infinite() && f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc0a0), -5.0);
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = std::env::temp_dir().join(format!("wgpu-diffusion-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = HostTensor { shape: vec![2, 3], data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] };
        let b = HostTensor { shape: vec![1], data: vec![-7.5] };
        write_safetensors(&path, &[("b", &b), ("a", &a)]).unwrap();
        let read = read_safetensors(&path).unwrap();
        assert_eq!(read["a"], a);
        assert_eq!(read["b"], b);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
