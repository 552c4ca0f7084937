//! A small safetensors reader and writer for gates that load weights (feature `safetensors`).
//!
//! Plugins may depend on `ngsd-gate` only, so the reader lives here rather than in each
//! plugin. The format is an 8-byte little-endian header length, a JSON header, then raw
//! little-endian tensor data. The header is parsed with `serde_json` rather than by hand: a
//! hand-written JSON parser for untrusted files (string escapes, unicode, number syntax,
//! nesting) is more code to get wrong than the dependency costs, and the feature is opt-in,
//! so gates without weights do not link it. The whole file is read into memory: gate
//! weights are a few kilobytes.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// Refuse headers above this size (the format's own reference limit is 100 MB).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// One tensor, converted to `f32`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// The contents of a safetensors file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SafeTensors {
    /// The `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
}

impl SafeTensors {
    /// Read and parse a file. Supported dtypes: F32, F64 and BF16 (all converted to f32).
    pub fn read(path: &Path) -> Result<SafeTensors> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Failed(format!("cannot read weights file {}: {e}", path.display()))
        })?;
        Self::parse(&bytes)
            .map_err(|m| Error::Failed(format!("weights file {}: {m}", path.display())))
    }

    /// Parse the bytes of a safetensors file; the error says what is malformed.
    pub fn parse(bytes: &[u8]) -> std::result::Result<SafeTensors, String> {
        let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
            return Err("not a safetensors file: shorter than 8 bytes".to_owned());
        };
        let header_len = u64::from_le_bytes(*len_bytes);
        if header_len > MAX_HEADER || header_len > rest.len() as u64 {
            return Err(format!(
                "not a safetensors file: header length {header_len} exceeds the file size"
            ));
        }
        let (header, data) = rest.split_at(header_len as usize);
        let header: Value = serde_json::from_slice(header)
            .map_err(|e| format!("not a safetensors file: bad JSON header: {e}"))?;
        let Value::Object(entries) = header else {
            return Err("safetensors header is not a JSON object".to_owned());
        };
        let mut out = SafeTensors::default();
        for (name, entry) in entries {
            if name == "__metadata__" {
                let Value::Object(meta) = entry else {
                    return Err("`__metadata__` is not an object".to_owned());
                };
                for (k, v) in meta {
                    let Value::String(v) = v else {
                        return Err(format!("metadata `{k}` is not a string"));
                    };
                    out.metadata.insert(k, v);
                }
                continue;
            }
            let tensor = parse_tensor(&entry, data).map_err(|m| format!("tensor `{name}`: {m}"))?;
            out.tensors.insert(name, tensor);
        }
        Ok(out)
    }

    /// The weights of a logistic neuron as the sigmoid gate reads them: `weight` [H], `bias` [1]
    /// and `hidden_size` metadata.
    pub fn logistic_neuron(weight: Vec<f32>, bias: f32) -> SafeTensors {
        let mut st = SafeTensors::default();
        st.metadata
            .insert("hidden_size".to_owned(), weight.len().to_string());
        st.tensors.insert(
            "weight".to_owned(),
            Tensor {
                shape: vec![weight.len()],
                data: weight,
            },
        );
        st.tensors.insert(
            "bias".to_owned(),
            Tensor {
                shape: vec![1],
                data: vec![bias],
            },
        );
        st
    }

    /// Serialise F32 tensors and string metadata (used by tests and tools).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        if !self.metadata.is_empty() {
            let meta = self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())));
            header.insert("__metadata__".to_owned(), Value::Object(meta.collect()));
        }
        let mut data = Vec::new();
        for (name, t) in &self.tensors {
            let begin = data.len();
            for v in &t.data {
                data.extend_from_slice(&v.to_le_bytes());
            }
            let entry = serde_json::json!({
                "dtype": "F32",
                "shape": t.shape,
                "data_offsets": [begin, data.len()],
            });
            header.insert(name.clone(), entry);
        }
        let mut header = Value::Object(header).to_string().into_bytes();
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + header.len() + data.len());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&data);
        out
    }
}

fn parse_tensor(entry: &Value, data: &[u8]) -> std::result::Result<Tensor, String> {
    let dtype = entry
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("no `dtype`")?;
    let shape = entry
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("no `shape`")?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|d| d as usize)
                .ok_or("`shape` is not a list of integers")
        })
        .collect::<std::result::Result<Vec<usize>, _>>()?;
    let offsets = entry
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|o| o.len() == 2)
        .ok_or("`data_offsets` is not [begin, end]")?;
    let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
        return Err("`data_offsets` are not integers".to_owned());
    };
    if begin > end || end > data.len() as u64 {
        return Err(format!(
            "data_offsets [{begin}, {end}] outside the {} data bytes",
            data.len()
        ));
    }
    let bytes = &data[begin as usize..end as usize];
    let count: usize = shape.iter().product();
    let width = match dtype {
        "F32" => 4,
        "F64" => 8,
        "BF16" => 2,
        other => {
            return Err(format!(
                "dtype {other} is not supported (use F32, F64 or BF16)"
            ));
        }
    };
    if bytes.len() != count * width {
        return Err(format!(
            "shape {shape:?} of {dtype} needs {} bytes, data_offsets give {}",
            count * width,
            bytes.len()
        ));
    }
    let data = match dtype {
        "F32" => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "F64" => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect(),
    };
    Ok(Tensor { shape, data })
}

#[cfg(test)]
mod tests;
