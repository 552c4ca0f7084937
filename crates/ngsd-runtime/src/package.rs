//! Model packages: a folder holding the ONNX decoder, tokenizer.json, the chat template and a manifest.
//!
//! Two layouts load:
//! - an ngsd package, described by `ngsd-model.json` (written by `cargo xtask setup` / the converter);
//! - a plain Hugging Face Optimum export (`model.onnx`, `config.json`, `generation_config.json`,
//!   `tokenizer.json`, `tokenizer_config.json`), from which an equivalent manifest is derived.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// File name of the ngsd manifest inside a package folder.
pub const MANIFEST_FILE: &str = "ngsd-model.json";

/// The manifest format this runtime reads.
pub const MANIFEST_FORMAT: &str = "ngsd-model/1";

/// What a package says about its model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format tag, `ngsd-model/1`.
    pub format: String,
    /// Short model name, e.g. `smollm2-135m-instruct`.
    pub name: String,
    /// Architecture family (`llama`, `qwen2`, ...), informational.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Weight storage (`fp32`, `int8`, ...), informational.
    #[serde(default)]
    pub dtype: Option<String>,
    /// File names inside the package folder.
    pub files: Files,
    /// Width of `last_hidden_state`.
    pub hidden_size: usize,
    /// Number of logits per position.
    pub vocab_size: usize,
    /// Decoder layers (one key and one value cache each).
    pub num_layers: usize,
    /// Key/value heads per layer.
    pub num_kv_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Longest sequence (prompt + answer) the model supports.
    pub max_context: usize,
    /// Beginning-of-sequence token text, passed to the chat template.
    #[serde(default)]
    pub bos_token: Option<String>,
    /// End-of-sequence token text, passed to the chat template.
    #[serde(default)]
    pub eos_token: Option<String>,
    /// Token ids that end a generation.
    pub eos_token_ids: Vec<u32>,
    /// Names of the graph's inputs and outputs.
    #[serde(default)]
    pub io: IoNames,
    /// Where the weights came from and how they were converted.
    #[serde(default)]
    pub provenance: Option<serde_json::Value>,
    /// sha256 of each file, by file name.
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
}

/// File names inside a package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Files {
    /// The ONNX decoder.
    pub onnx: String,
    /// The Hugging Face `tokenizer.json`.
    pub tokenizer: String,
    /// A Jinja chat template file (optional: a package may have none).
    #[serde(default)]
    pub chat_template: Option<String>,
    /// The LM-head matrix `weight` [vocab, hidden] as safetensors (optional; `head` experts
    /// need it). Written by the converter; for other exports, see `cargo xtask export-hidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lm_head: Option<String>,
}

/// Names of the decoder graph's inputs and outputs. `{i}` stands for the layer index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IoNames {
    /// Token ids input.
    pub input_ids: String,
    /// Attention mask input (past + new positions).
    pub attention_mask: String,
    /// Position ids input (some exports have none).
    pub position_ids: String,
    /// Past key input pattern.
    pub past_key: String,
    /// Past value input pattern.
    pub past_value: String,
    /// Logits output.
    pub logits: String,
    /// Final hidden state output (the LM head's input); `None` when the model lacks it.
    pub hidden: Option<String>,
    /// Present key output pattern.
    pub present_key: String,
    /// Present value output pattern.
    pub present_value: String,
    /// Fused graphs: total length − 1 of each sequence (int32 [batch]).
    pub seqlens_k: String,
    /// Fused graphs: the longest total length (int32 scalar).
    pub total_sequence_length: String,
    /// Fused graphs: how many trailing positions get logits (int64 [1]).
    pub logits_to_keep: String,
    /// Outputs holding the residual stream after a decoder layer, by 0-based layer index
    /// (`hidden_states.{L}` from the converter). Empty: the runtime looks for outputs named
    /// `hidden_states.{L}` in the graph itself.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hidden_layers: BTreeMap<usize, String>,
}

impl Default for IoNames {
    fn default() -> Self {
        IoNames {
            input_ids: "input_ids".into(),
            attention_mask: "attention_mask".into(),
            position_ids: "position_ids".into(),
            past_key: "past_key_values.{i}.key".into(),
            past_value: "past_key_values.{i}.value".into(),
            logits: "logits".into(),
            hidden: Some("last_hidden_state".into()),
            present_key: "present.{i}.key".into(),
            present_value: "present.{i}.value".into(),
            seqlens_k: "seqlens_k".into(),
            total_sequence_length: "total_sequence_length".into(),
            logits_to_keep: "logits_to_keep".into(),
            hidden_layers: BTreeMap::new(),
        }
    }
}

/// How a package's manifest was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestSource {
    /// Read from `ngsd-model.json`.
    Ngsd,
    /// Derived from Hugging Face sidecar files.
    HuggingFace,
}

/// A model package on disk.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    /// The package folder.
    pub dir: PathBuf,
    /// What the package says about the model.
    pub manifest: Manifest,
    /// Where the manifest came from.
    pub source: ManifestSource,
}

/// One file's checksum check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumReport {
    /// File name inside the package.
    pub file: String,
    /// The sha256 the manifest records.
    pub expected: String,
    /// The sha256 of the file on disk (`None` if it could not be read).
    pub actual: Option<String>,
}

impl ChecksumReport {
    /// Whether the file matches its recorded checksum.
    pub fn ok(&self) -> bool {
        self.actual.as_deref() == Some(self.expected.as_str())
    }
}

impl ModelPackage {
    /// Opens a package folder (or the folder holding a given `.onnx` file).
    pub fn open(path: &Path) -> Result<Self> {
        let dir = if path.extension().is_some_and(|e| e == "onnx") {
            path.parent().unwrap_or(Path::new(".")).to_path_buf()
        } else {
            path.to_path_buf()
        };
        if !dir.is_dir() {
            return Err(Error::NotFound {
                what: "model folder",
                path: dir,
                hint: "; run `cargo xtask setup` to fetch the default model, or pass --model DIR"
                    .into(),
            });
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let (mut manifest, source) = if manifest_path.is_file() {
            let text = read_text(&manifest_path, "manifest")?;
            let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::BadFile {
                what: "manifest",
                path: manifest_path.clone(),
                reason: e.to_string(),
            })?;
            if manifest.format != MANIFEST_FORMAT {
                return Err(Error::BadFile {
                    what: "manifest",
                    path: manifest_path,
                    reason: format!(
                        "format is `{}`, this ngsd reads `{MANIFEST_FORMAT}`",
                        manifest.format
                    ),
                });
            }
            (manifest, ManifestSource::Ngsd)
        } else {
            (hf::derive_manifest(&dir)?, ManifestSource::HuggingFace)
        };
        if path.extension().is_some_and(|e| e == "onnx")
            && let Some(name) = path.file_name()
        {
            manifest.files.onnx = name.to_string_lossy().into_owned();
        }
        let package = ModelPackage {
            dir,
            manifest,
            source,
        };
        for (what, file) in [
            ("ONNX file", Some(package.onnx_path())),
            ("tokenizer", Some(package.tokenizer_path())),
            ("chat template", package.chat_template_path()),
            ("LM-head file", package.lm_head_path()),
        ] {
            if let Some(file) = file
                && !file.is_file()
            {
                return Err(Error::NotFound {
                        what,
                        path: file,
                        hint: "; the package is incomplete: re-run `cargo xtask setup` (or re-export the model)".into(),
                    });
            }
        }
        Ok(package)
    }

    /// Path of the ONNX decoder.
    pub fn onnx_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.files.onnx)
    }

    /// Path of tokenizer.json.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.files.tokenizer)
    }

    /// Path of the chat template file, if the package has one.
    pub fn chat_template_path(&self) -> Option<PathBuf> {
        self.manifest
            .files
            .chat_template
            .as_ref()
            .map(|f| self.dir.join(f))
    }

    /// Path of the LM-head matrix file, if the package has one.
    pub fn lm_head_path(&self) -> Option<PathBuf> {
        self.manifest
            .files
            .lm_head
            .as_ref()
            .map(|f| self.dir.join(f))
    }

    /// Recomputes the sha256 of every file the manifest lists a checksum for.
    pub fn verify_checksums(&self) -> Vec<ChecksumReport> {
        self.manifest
            .checksums
            .iter()
            .map(|(file, expected)| ChecksumReport {
                file: file.clone(),
                expected: expected.to_ascii_lowercase(),
                actual: sha256_file(&self.dir.join(file)).ok(),
            })
            .collect()
    }
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

pub(crate) fn read_text(path: &Path, what: &'static str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                what,
                path: path.to_path_buf(),
                hint: String::new(),
            }
        } else {
            Error::BadFile {
                what,
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
    })
}

/// Deriving a manifest from Hugging Face / Optimum sidecar files.
mod hf {
    use super::*;
    use serde_json::Value;

    fn read_json(path: &Path, what: &'static str) -> Result<Value> {
        let text = read_text(path, what)?;
        serde_json::from_str(&text).map_err(|e| Error::BadFile {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    fn usize_field(cfg: &Value, keys: &[&str]) -> Option<usize> {
        keys.iter()
            .find_map(|k| cfg.get(*k).and_then(Value::as_u64))
            .and_then(|v| usize::try_from(v).ok())
    }

    fn token_text(v: Option<&Value>) -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        }
    }

    fn ids(v: Option<&Value>) -> Vec<u32> {
        match v {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A JSON file of a Hugging Face folder that may be absent (then `null`).
    fn optional_json(dir: &Path, name: &'static str) -> Result<Value> {
        let path = dir.join(name);
        if path.is_file() {
            read_json(&path, name)
        } else {
            Ok(Value::Null)
        }
    }

    /// The files a manifest derived from a Hugging Face folder names: the first ONNX graph
    /// found (`model.onnx` if none), and `chat_template.jinja` and `lm_head.safetensors` if
    /// present. A template inside tokenizer_config.json is handled by the tokenizer module.
    fn derived_files(dir: &Path) -> Files {
        let onnx = [
            "model.onnx",
            "decoder_model.onnx",
            "decoder_with_past_model.onnx",
        ]
        .into_iter()
        .find(|f| dir.join(f).is_file())
        .unwrap_or("model.onnx")
        .to_string();
        let present = |f: &str| dir.join(f).is_file().then(|| f.to_string());
        Files {
            onnx,
            tokenizer: "tokenizer.json".into(),
            chat_template: present("chat_template.jinja"),
            lm_head: present("lm_head.safetensors"),
        }
    }

    pub(super) fn derive_manifest(dir: &Path) -> Result<Manifest> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::NotFound {
                what: "manifest",
                path: dir.join(MANIFEST_FILE),
                hint: format!(
                    "; a model folder needs {MANIFEST_FILE} or a Hugging Face config.json (neither is in {})",
                    dir.display()
                ),
            });
        }
        let cfg = read_json(&config_path, "config.json")?;
        let missing = |key: &str| Error::BadFile {
            what: "config.json",
            path: config_path.clone(),
            reason: format!("missing `{key}`"),
        };
        let hidden_size = usize_field(&cfg, &["hidden_size", "n_embd", "d_model"])
            .ok_or_else(|| missing("hidden_size"))?;
        let vocab_size = usize_field(&cfg, &["vocab_size"]).ok_or_else(|| missing("vocab_size"))?;
        let num_layers = usize_field(&cfg, &["num_hidden_layers", "n_layer", "num_layers"])
            .ok_or_else(|| missing("num_hidden_layers"))?;
        let heads = usize_field(&cfg, &["num_attention_heads", "n_head"])
            .ok_or_else(|| missing("num_attention_heads"))?;
        let num_kv_heads = usize_field(&cfg, &["num_key_value_heads"]).unwrap_or(heads);
        let head_dim = usize_field(&cfg, &["head_dim"]).unwrap_or(hidden_size / heads.max(1));
        let max_context = usize_field(
            &cfg,
            &[
                "max_position_embeddings",
                "n_positions",
                "max_sequence_length",
            ],
        )
        .unwrap_or(2048);

        let tok_cfg = optional_json(dir, "tokenizer_config.json")?;
        let gen_cfg = optional_json(dir, "generation_config.json")?;
        let mut eos_token_ids = ids(gen_cfg.get("eos_token_id"));
        if eos_token_ids.is_empty() {
            eos_token_ids = ids(cfg.get("eos_token_id"));
        }
        Ok(Manifest {
            format: MANIFEST_FORMAT.into(),
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
            architecture: cfg
                .get("model_type")
                .and_then(Value::as_str)
                .map(str::to_owned),
            dtype: cfg
                .get("torch_dtype")
                .and_then(Value::as_str)
                .map(str::to_owned),
            files: derived_files(dir),
            hidden_size,
            vocab_size,
            num_layers,
            num_kv_heads,
            head_dim,
            max_context,
            bos_token: token_text(tok_cfg.get("bos_token")),
            eos_token: token_text(tok_cfg.get("eos_token")),
            eos_token_ids,
            io: IoNames::default(),
            provenance: None,
            checksums: BTreeMap::new(),
        })
    }

    /// The chat template stored in tokenizer_config.json, if any.
    pub(crate) fn template_from_tokenizer_config(dir: &Path) -> Result<Option<String>> {
        let path = dir.join("tokenizer_config.json");
        if !path.is_file() {
            return Ok(None);
        }
        let cfg = read_json(&path, "tokenizer_config.json")?;
        Ok(match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take the one called "default".
            Some(Value::Array(list)) => list.iter().find_map(|t| {
                (t.get("name").and_then(Value::as_str) == Some("default"))
                    .then(|| t.get("template").and_then(Value::as_str).map(str::to_owned))
                    .flatten()
            }),
            _ => None,
        })
    }
}

pub(crate) use hf::template_from_tokenizer_config;
