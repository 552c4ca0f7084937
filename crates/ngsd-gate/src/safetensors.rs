//! Safetensors weights for gates that load them (feature `safetensors`), read and written
//! through the `safetensors` crate, with tensors converted to `f32`.
//!
//! Plugins may depend on `ngsd-gate` only, so this lives here rather than in each plugin.
//! [`SafeTensors::read`] loads a whole (small) file; [`SafeTensors::read_tensor`] memory-maps
//! a file and converts one tensor, so a 100 MB LM-head file is neither read into memory nor
//! copied more than once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError};

use crate::{Error, Result};

/// One tensor, converted to `f32`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    /// Row-major values: as many as the product of `shape`.
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

/// What is wrong with a file, in words.
fn describe(bytes: &[u8], e: SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => {
            "not a safetensors file: shorter than 8 bytes".to_owned()
        }
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            let len = bytes
                .first_chunk::<8>()
                .map_or(0, |b| u64::from_le_bytes(*b));
            format!(
                "not a safetensors file: header length {len} exceeds the file size ({} bytes)",
                bytes.len()
            )
        }
        SafeTensorError::InvalidHeader(_)
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization(_) => {
            format!("not a safetensors file: bad JSON header ({e})")
        }
        other => format!("malformed safetensors file: {other}"),
    }
}

/// Converts a tensor's little-endian bytes to `f32`. Supported dtypes: F32, F64, BF16, F16.
fn to_f32(name: &str, view: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    let bytes = view.data();
    let data = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => {
            return Err(format!(
                "tensor `{name}`: dtype {other} is not supported (use F32, F64, BF16 or F16)"
            ));
        }
    };
    Ok(Tensor {
        shape: view.shape().to_vec(),
        data,
    })
}

/// IEEE half precision to single.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((f << shift) & 0x3ff) << 13
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

impl SafeTensors {
    /// Read and parse a whole file (gate weights: a few kilobytes).
    pub fn read(path: &Path) -> Result<SafeTensors> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Failed(format!("cannot read weights file {}: {e}", path.display()))
        })?;
        Self::parse(&bytes)
            .map_err(|m| Error::Failed(format!("weights file {}: {m}", path.display())))
    }

    /// One tensor of a file, memory-mapped: only that tensor is converted (for large files
    /// such as a model's LM head). The error names the file.
    pub fn read_tensor(path: &Path, name: &str) -> Result<Tensor> {
        let fail = |m: String| Error::Failed(format!("weights file {}: {m}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| {
            Error::Failed(format!("cannot read weights file {}: {e}", path.display()))
        })?;
        // SAFETY: the map is read-only and lives only inside this function, which copies
        // what it needs out of it. Model packages are not written while they are loaded (the
        // tooling writes them atomically, by rename, so a replacement is a new inode and
        // leaves this mapping's pages intact).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| fail(format!("cannot map it: {e}")))?;
        let st =
            safetensors::SafeTensors::deserialize(&map).map_err(|e| fail(describe(&map, e)))?;
        let view = st.tensor(name).map_err(|_| {
            fail(format!(
                "no tensor `{name}` (it has: {})",
                st.names().join(", ")
            ))
        })?;
        to_f32(name, &view).map_err(fail)
    }

    /// Parse the bytes of a safetensors file; the error says what is malformed.
    pub fn parse(bytes: &[u8]) -> std::result::Result<SafeTensors, String> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| describe(bytes, e))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| describe(bytes, e))?;
        let mut out = SafeTensors {
            metadata: header
                .metadata()
                .as_ref()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            tensors: BTreeMap::new(),
        };
        for (name, view) in st.tensors() {
            let tensor = to_f32(&name, &view)?;
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

    /// Serialise as F32 tensors with string metadata (used by training, tests and tools).
    pub fn to_bytes(&self) -> Vec<u8> {
        let bytes: Vec<(&String, &Tensor, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, t, b)
            })
            .collect();
        let views = bytes.iter().map(|(name, t, b)| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), b)
                .expect("a Tensor holds as many values as its shape says");
            (name.as_str(), view)
        });
        let metadata: Option<HashMap<String, String>> = (!self.metadata.is_empty()).then(|| {
            self.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        safetensors::serialize(views, metadata)
            .expect("serialising f32 tensors held in memory cannot fail")
    }
}

#[cfg(test)]
mod tests;
