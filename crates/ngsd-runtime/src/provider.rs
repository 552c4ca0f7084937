//! Execution providers: which device runs the model, and what happens when it is not available.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The execution provider a session asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Provider {
    /// ONNX Runtime's CPU provider (default; always available).
    #[default]
    Cpu,
    /// NVIDIA CUDA on the given device (needs the `onnxruntime-gpu` build and CUDA libraries).
    Cuda {
        /// The GPU index.
        device_id: i32,
    },
    /// NVIDIA TensorRT on the given device, with CUDA then CPU behind it.
    TensorRt {
        /// The GPU index.
        device_id: i32,
    },
}

/// Names accepted by [`Provider::from_str`].
pub const PROVIDER_NAMES: &str = "cpu, cuda, cuda:<device>, tensorrt, tensorrt:<device>";

impl FromStr for Provider {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, device) = match lower.split_once(':') {
            Some((n, d)) => {
                let id = d.parse::<i32>().ok().filter(|id| *id >= 0).ok_or_else(|| {
                    Error::InvalidArgument {
                        name: "provider",
                        reason: format!(
                            "`{s}` has a bad device index `{d}`; expected e.g. `cuda:0`"
                        ),
                    }
                })?;
                (n.to_string(), id)
            }
            None => (lower.clone(), 0),
        };
        match name.as_str() {
            "cpu" if !lower.contains(':') => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda { device_id: device }),
            "tensorrt" | "trt" => Ok(Provider::TensorRt { device_id: device }),
            _ => Err(Error::InvalidArgument {
                name: "provider",
                reason: format!(
                    "unknown execution provider `{s}`; choose one of: {PROVIDER_NAMES}"
                ),
            }),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Cpu => f.write_str("cpu"),
            Provider::Cuda { device_id } => write!(f, "cuda:{device_id}"),
            Provider::TensorRt { device_id } => write!(f, "tensorrt:{device_id}"),
        }
    }
}

impl Provider {
    /// The ONNX Runtime providers to register, most preferred first (CPU is implicit).
    pub(crate) fn dispatch(&self) -> Vec<ort::ep::ExecutionProviderDispatch> {
        match *self {
            Provider::Cpu => Vec::new(),
            Provider::Cuda { device_id } => vec![
                ort::ep::CUDA::default()
                    .with_device_id(device_id)
                    .build()
                    .error_on_failure(),
            ],
            Provider::TensorRt { device_id } => vec![
                ort::ep::TensorRT::default()
                    .with_device_id(device_id)
                    .build()
                    .error_on_failure(),
                ort::ep::CUDA::default()
                    .with_device_id(device_id)
                    .build()
                    .error_on_failure(),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        let check = |input: &str, expected: Provider| {
            assert_eq!(input.parse::<Provider>().unwrap(), expected, "{input}");
        };
        check("cpu", Provider::Cpu);
        check("CPU", Provider::Cpu);
        check("cuda", Provider::Cuda { device_id: 0 });
        check("cuda:1", Provider::Cuda { device_id: 1 });
        check("tensorrt", Provider::TensorRt { device_id: 0 });
        check("trt:2", Provider::TensorRt { device_id: 2 });
    }

    #[test]
    fn unknown_provider_names_the_choices() {
        let err = "rocm".parse::<Provider>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid provider: unknown execution provider `rocm`; choose one of: cpu, cuda, cuda:<device>, tensorrt, tensorrt:<device>"
        );
        let err = "cuda:x".parse::<Provider>().unwrap_err().to_string();
        assert!(err.contains("bad device index `x`"), "{err}");
    }
}
