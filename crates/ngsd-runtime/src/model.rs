//! One ONNX decoder session with its KV cache: prefill, then one (or a few) tokens per step.
//!
//! Invariants:
//! - only the inputs the session declares are fed (Optimum exports differ: some lack `position_ids`);
//! - the key/value cache stays inside ONNX Runtime values between steps: a step feeds the previous
//!   step's `present.*` outputs back as `past_key_values.*` without copying them through Rust;
//! - a step returns the logits and hidden states (final, and the residual stream after each
//!   exported layer) of the positions asked for, written into caller-owned buffers (no
//!   allocation per token on the hot path).

use std::path::{Path, PathBuf};
use std::sync::Once;

use ort::session::{Session, SessionInputValue, builder::GraphOptimizationLevel};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef, ValueType};

use crate::error::{Error, Result};
use crate::ortlib;
use crate::package::{ManifestSource, ModelPackage};
use crate::provider::Provider;

/// How to build a session.
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// The execution provider to ask for.
    pub provider: Provider,
    /// Fail instead of falling back to CPU when the provider cannot be registered.
    pub strict_provider: bool,
    /// ONNX Runtime intra-op threads; 0 means one per available core. The pool is shared by all
    /// sessions of the process and sized by the first model loaded.
    pub intra_threads: usize,
    /// Explicit path of libonnxruntime.so (otherwise searched, see [`crate::ortlib`]).
    pub ort_library: Option<PathBuf>,
}

/// What a model declares, for `ngsd model info`.
#[derive(Debug, Clone)]
pub struct IoDescription {
    /// Input or output name.
    pub name: String,
    /// Element type and shape as ONNX Runtime reports them (`-1` = dynamic).
    pub ty: String,
}

#[derive(Debug, Clone, Copy)]
enum InputSlot {
    InputIds,
    AttentionMask,
    PositionIds,
    Past(usize),
}

/// Which positions a forward pass reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// Only the last fed position (the next-token distribution): one row of everything.
    Last,
    /// Every fed position, in order: logits and hidden states.
    All,
    /// The last position's logits, but every position's hidden states (final and exported
    /// layers): what a probe over a whole prompt reads, without holding `n × vocab` logits.
    AllHidden,
}

impl Positions {
    /// First reported row of the logits and of the hidden states, for `n` fed positions.
    fn first_rows(self, n: usize) -> (usize, usize) {
        match self {
            Positions::Last => (n - 1, n - 1),
            Positions::All => (0, 0),
            Positions::AllHidden => (n - 1, 0),
        }
    }
}

/// Buffers a forward pass writes into; reuse one across steps.
#[derive(Debug, Default, Clone)]
pub struct ForwardOut {
    /// Logits, `rows × vocab`, row-major.
    pub logits: Vec<f32>,
    /// Final hidden states, `hidden_rows × hidden`, row-major; empty when the model has no
    /// hidden output.
    pub hidden: Vec<f32>,
    /// The residual stream after each exported layer, one `hidden_rows × hidden` buffer per
    /// entry of [`Model::exported_layers`], in that order.
    pub layers: Vec<Vec<f32>>,
    /// Number of logits rows reported.
    pub rows: usize,
    /// Number of hidden-state rows reported (equal to `rows` except for
    /// [`Positions::AllHidden`]).
    pub hidden_rows: usize,
}

impl ForwardOut {
    /// Logits of reported row `r`.
    pub fn logits_row(&self, r: usize, vocab: usize) -> &[f32] {
        &self.logits[r * vocab..(r + 1) * vocab]
    }

    /// Logits of the last reported row.
    pub fn last_logits(&self, vocab: usize) -> &[f32] {
        self.logits_row(self.rows.saturating_sub(1), vocab)
    }

    /// Final hidden state of reported row `r` (empty if the model has none).
    pub fn hidden_row(&self, r: usize, hidden: usize) -> &[f32] {
        if self.hidden.is_empty() {
            return &[];
        }
        &self.hidden[r * hidden..(r + 1) * hidden]
    }

    /// Final hidden state of the last reported row (empty if the model has none).
    pub fn last_hidden(&self, hidden: usize) -> &[f32] {
        self.hidden_row(self.hidden_rows.saturating_sub(1), hidden)
    }

    /// The residual stream after the `k`-th exported layer (see [`Model::exported_layers`]),
    /// `hidden_rows × hidden`.
    pub fn layer(&self, k: usize) -> &[f32] {
        self.layers.get(k).map_or(&[], Vec::as_slice)
    }
}

/// The key/value cache of one sequence: ONNX Runtime values fed back each step.
pub struct KvCache {
    past: Vec<DynValue>,
    len: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("len", &self.len)
            .field("tensors", &self.past.len())
            .finish()
    }
}

impl KvCache {
    /// Number of positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no position.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A loaded decoder.
pub struct Model {
    session: Session,
    package: ModelPackage,
    slots: Vec<InputSlot>,
    /// What a step copies out, and from which outputs.
    layout: OutputLayout,
    exported_layers: Vec<usize>,
    present_names: Vec<String>,
    num_layers: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    hidden: usize,
    provider: Provider,
    provider_note: Option<String>,
    inputs_desc: Vec<IoDescription>,
    outputs_desc: Vec<IoDescription>,
    // Reused per step.
    ids_buf: Vec<i64>,
    mask_buf: Vec<i64>,
    pos_buf: Vec<i64>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("dir", &self.package.dir)
            .field("provider", &self.provider)
            .finish()
    }
}

static FALLBACK_WARNING: Once = Once::new();

fn describe(ty: &ValueType) -> String {
    match ty {
        ValueType::Tensor { ty, shape, .. } => format!("{ty:?} {:?}", &shape[..]),
        other => format!("{other:?}"),
    }
}

fn layer_pattern(pattern: &str, i: usize) -> String {
    pattern.replace("{i}", &i.to_string())
}

impl Model {
    /// Loads the package's ONNX decoder into a session.
    pub fn load(package: ModelPackage, options: &ModelOptions) -> Result<Self> {
        let runtime = ortlib::ensure_loaded(options.ort_library.as_deref(), options.intra_threads)?;
        let onnx = package.onnx_path();
        if !onnx.is_file() {
            return Err(Error::NotFound {
                what: "ONNX file",
                path: onnx,
                hint: "; re-run `cargo xtask setup`".into(),
            });
        }
        let load_err = |e: &dyn std::fmt::Display| Error::OnnxLoad {
            path: onnx.clone(),
            reason: e.to_string(),
        };
        let mut builder = Session::builder(&runtime.env)
            .map_err(|e| load_err(&e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| load_err(&e))?;
        let mut provider = options.provider;
        let mut provider_note = None;
        let eps = options.provider.dispatch();
        if !eps.is_empty() {
            match builder.with_execution_providers(eps) {
                Ok(b) => builder = b,
                Err(e) => {
                    let mut reason = e.to_string().trim_end_matches('.').to_string();
                    if reason.contains("not enabled in this build") {
                        reason.push_str(
                            " (this ONNX Runtime library is the CPU-only build; GPU providers need \
                             the onnxruntime-gpu library and CUDA, see README)",
                        );
                    }
                    if options.strict_provider {
                        return Err(Error::Provider {
                            provider: options.provider.to_string(),
                            reason,
                        });
                    }
                    FALLBACK_WARNING.call_once(|| {
                        tracing::warn!(
                            "execution provider `{}` is not available ({reason}); running on CPU instead \
                             (set strict-provider = true to make this an error)",
                            options.provider
                        );
                    });
                    provider_note = Some(reason);
                    provider = Provider::Cpu;
                    builder = e.recover();
                }
            }
        }
        let session = builder.commit_from_file(&onnx).map_err(|e| load_err(&e))?;
        Self::from_session(session, package, provider, provider_note)
    }

    fn from_session(
        session: Session,
        package: ModelPackage,
        provider: Provider,
        provider_note: Option<String>,
    ) -> Result<Self> {
        let path = package.onnx_path();
        let m = &package.manifest;
        let io = &m.io;
        let input_names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let output_names: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let inputs_desc = session
            .inputs()
            .iter()
            .map(|o| IoDescription {
                name: o.name().into(),
                ty: describe(o.dtype()),
            })
            .collect();
        let outputs_desc = session
            .outputs()
            .iter()
            .map(|o| IoDescription {
                name: o.name().into(),
                ty: describe(o.dtype()),
            })
            .collect();

        let missing = |kind: &'static str, name: &str, hint: &str| {
            let list = if kind == "input" {
                &input_names
            } else {
                &output_names
            };
            Error::MissingIo {
                path: path.clone(),
                kind,
                name: name.to_string(),
                available: abbreviate(list),
                hint: hint.to_string(),
            }
        };

        // Count layers from the graph itself.
        let num_layers = (0..)
            .take_while(|i| input_names.contains(&layer_pattern(&io.past_key, *i)))
            .count();
        if num_layers == 0 {
            return Err(missing(
                "input",
                &layer_pattern(&io.past_key, 0),
                "; ngsd needs a decoder exported with a KV cache (Optimum task `text-generation-with-past`)",
            ));
        }
        if num_layers != m.num_layers {
            return Err(Error::Unsupported {
                path,
                reason: format!(
                    "the manifest says {} layers but the graph has {num_layers} key/value cache inputs",
                    m.num_layers
                ),
            });
        }

        let mut slots = Vec::with_capacity(input_names.len());
        let mut past_order = Vec::new();
        for name in &input_names {
            let slot = if *name == io.input_ids {
                InputSlot::InputIds
            } else if *name == io.attention_mask {
                InputSlot::AttentionMask
            } else if *name == io.position_ids {
                InputSlot::PositionIds
            } else if let Some(j) = (0..num_layers).find_map(|i| {
                if *name == layer_pattern(&io.past_key, i) {
                    Some(2 * i)
                } else if *name == layer_pattern(&io.past_value, i) {
                    Some(2 * i + 1)
                } else {
                    None
                }
            }) {
                past_order.push(j);
                InputSlot::Past(j)
            } else {
                return Err(Error::Unsupported {
                    path,
                    reason: format!(
                        "it has an input `{name}` that ngsd does not know how to feed \
                         (merged decoders with `use_cache_branch` are not supported: export the plain \
                         with-past decoder)"
                    ),
                });
            };
            slots.push(slot);
        }
        if !slots.iter().any(|s| matches!(s, InputSlot::InputIds)) {
            return Err(missing("input", &io.input_ids, ""));
        }
        for i in 0..num_layers {
            if !past_order.contains(&(2 * i + 1)) {
                return Err(missing("input", &layer_pattern(&io.past_value, i), ""));
            }
        }
        // Element types: ids int64, cache f32.
        for (outlet, slot) in session.inputs().iter().zip(&slots) {
            let want = match slot {
                InputSlot::Past(_) => TensorElementType::Float32,
                _ => TensorElementType::Int64,
            };
            if let ValueType::Tensor { ty, .. } = outlet.dtype()
                && *ty != want
            {
                return Err(Error::Unsupported {
                    path,
                    reason: format!(
                        "input `{}` is {ty:?}; ngsd feeds {want:?} (export the model with float32 inputs and cache)",
                        outlet.name()
                    ),
                });
            }
        }

        if !output_names.contains(&io.logits) {
            return Err(missing("output", &io.logits, ""));
        }
        let mut present_names = Vec::with_capacity(2 * num_layers);
        for i in 0..num_layers {
            for pattern in [&io.present_key, &io.present_value] {
                let name = layer_pattern(pattern, i);
                if !output_names.contains(&name) {
                    return Err(missing("output", &name, ""));
                }
                present_names.push(name);
            }
        }
        let hidden_name = match &io.hidden {
            Some(h) if output_names.contains(h) => Some(h.clone()),
            Some(h) if package.source == ManifestSource::Ngsd => {
                return Err(missing(
                    "output",
                    h,
                    "; the manifest names it: add it with `cargo xtask export-hidden <model.onnx>`, \
                     or fix `io.hidden` in the manifest",
                ));
            }
            _ => None,
        };

        let (exported_layers, layer_names) =
            layer_outputs(&io.hidden_layers, &output_names, num_layers, &path)?;

        // Cache geometry from the graph (dims 1 and 3 of past key), falling back to the manifest.
        let (mut kv_heads, mut head_dim) = (m.num_kv_heads, m.head_dim);
        if let Some(outlet) = session
            .inputs()
            .iter()
            .find(|o| o.name() == layer_pattern(&io.past_key, 0))
            && let ValueType::Tensor { shape, .. } = outlet.dtype()
            && shape.len() == 4
        {
            if shape[1] > 0 {
                kv_heads = shape[1] as usize;
            }
            if shape[3] > 0 {
                head_dim = shape[3] as usize;
            }
        }
        if kv_heads != m.num_kv_heads || head_dim != m.head_dim {
            return Err(Error::Unsupported {
                path,
                reason: format!(
                    "the manifest says {} kv heads × {} head dim but the graph's cache is {kv_heads} × {head_dim}",
                    m.num_kv_heads, m.head_dim
                ),
            });
        }

        Ok(Model {
            slots,
            layout: OutputLayout {
                onnx: path,
                logits: io.logits.clone(),
                hidden: hidden_name,
                layers: layer_names,
                vocab: m.vocab_size,
                width: m.hidden_size,
            },
            exported_layers,
            present_names,
            num_layers,
            kv_heads,
            head_dim,
            vocab: m.vocab_size,
            hidden: m.hidden_size,
            provider,
            provider_note,
            inputs_desc,
            outputs_desc,
            session,
            package,
            ids_buf: Vec::new(),
            mask_buf: Vec::new(),
            pos_buf: Vec::new(),
        })
    }

    /// The package this model came from.
    pub fn package(&self) -> &ModelPackage {
        &self.package
    }

    /// Vocabulary size (logits per position).
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Width of the final hidden state.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Whether the graph exports the final hidden state.
    pub fn has_hidden_state(&self) -> bool {
        self.layout.hidden.is_some()
    }

    /// The decoder layers (0-based, ascending) whose residual stream the graph exports; a
    /// forward pass writes them into [`ForwardOut::layers`] in this order.
    pub fn exported_layers(&self) -> &[usize] {
        &self.exported_layers
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Longest supported sequence.
    pub fn max_context(&self) -> usize {
        self.package.manifest.max_context
    }

    /// Token ids that end a generation.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.package.manifest.eos_token_ids
    }

    /// The provider the session actually runs on.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Why the requested provider was not used, when the session fell back to CPU.
    pub fn provider_fallback_reason(&self) -> Option<&str> {
        self.provider_note.as_deref()
    }

    /// The graph's inputs.
    pub fn inputs(&self) -> &[IoDescription] {
        &self.inputs_desc
    }

    /// The graph's outputs.
    pub fn outputs(&self) -> &[IoDescription] {
        &self.outputs_desc
    }

    /// Path of the ONNX file.
    pub fn onnx_path(&self) -> PathBuf {
        self.package.onnx_path()
    }

    /// The package folder.
    pub fn dir(&self) -> &Path {
        &self.package.dir
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> Result<KvCache> {
        let shape = [1usize, self.kv_heads, 0, self.head_dim];
        let past = (0..2 * self.num_layers)
            .map(|_| {
                Tensor::<f32>::from_array((shape, Vec::<f32>::new()))
                    .map(|t| t.into_dyn())
                    .map_err(Error::run)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache { past, len: 0 })
    }

    /// Feeds `ids` after what `cache` holds, extends the cache, and writes the logits (and hidden
    /// states) of the requested positions into `out`.
    pub fn forward(
        &mut self,
        cache: &mut KvCache,
        ids: &[u32],
        positions: Positions,
        out: &mut ForwardOut,
    ) -> Result<()> {
        cache.past = self.run(&cache.past, cache.len, ids, positions, out)?;
        cache.len += ids.len();
        Ok(())
    }

    /// Like [`Model::forward`], but leaves `prefix` as it is and returns a new cache holding
    /// the prefix and `ids`: one shared prefix (say, a system prompt) serves many sequences
    /// without being recomputed or copied beforehand.
    pub fn forward_from(
        &mut self,
        prefix: &KvCache,
        ids: &[u32],
        positions: Positions,
        out: &mut ForwardOut,
    ) -> Result<KvCache> {
        let past = self.run(&prefix.past, prefix.len, ids, positions, out)?;
        Ok(KvCache {
            past,
            len: prefix.len + ids.len(),
        })
    }

    /// One forward pass after `past` (holding `past_len` positions); returns the present
    /// key/value tensors.
    fn run(
        &mut self,
        past: &[DynValue],
        past_len: usize,
        ids: &[u32],
        positions: Positions,
        out: &mut ForwardOut,
    ) -> Result<Vec<DynValue>> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument {
                name: "input ids",
                reason: "a forward pass needs at least one token".into(),
            });
        }
        let n = ids.len();
        let total = past_len + n;
        if total > self.max_context() {
            return Err(Error::ContextOverflow {
                prompt_tokens: total,
                max_context: self.max_context(),
            });
        }
        self.ids_buf.clear();
        self.ids_buf.extend(ids.iter().map(|&t| i64::from(t)));
        self.mask_buf.resize(total, 1);
        self.pos_buf.clear();
        self.pos_buf.extend((past_len as i64)..(total as i64));

        let Model {
            session,
            slots,
            ids_buf,
            mask_buf,
            pos_buf,
            layout,
            ..
        } = self;
        let shape_ids = [1usize, n];
        let shape_mask = [1usize, total];
        let mut inputs: Vec<SessionInputValue<'_>> = Vec::with_capacity(slots.len());
        for slot in slots.iter() {
            let value: SessionInputValue<'_> = match slot {
                InputSlot::InputIds => TensorRef::from_array_view((shape_ids, &ids_buf[..]))
                    .map_err(Error::run)?
                    .into(),
                InputSlot::AttentionMask => {
                    TensorRef::from_array_view((shape_mask, &mask_buf[..total]))
                        .map_err(Error::run)?
                        .into()
                }
                InputSlot::PositionIds => TensorRef::from_array_view((shape_ids, &pos_buf[..]))
                    .map_err(Error::run)?
                    .into(),
                InputSlot::Past(j) => (&past[*j]).into(),
            };
            inputs.push(value);
        }
        let mut outputs = session.run(&inputs[..]).map_err(Error::run)?;
        drop(inputs);
        layout.copy(&outputs, n, positions, out)?;
        self.present_names
            .iter()
            .map(|name| {
                outputs
                    .remove(name.as_str())
                    .ok_or_else(|| Error::Run(format!("the model did not return `{name}`")))
            })
            .collect()
    }
}

/// The outputs a step reads, and their widths.
#[derive(Debug)]
struct OutputLayout {
    onnx: PathBuf,
    logits: String,
    hidden: Option<String>,
    /// Output names of the exported layers, in [`Model::exported_layers`] order.
    layers: Vec<String>,
    vocab: usize,
    width: usize,
}

impl OutputLayout {
    /// Copies the reported rows of logits, final hidden state and layer outputs into `out`.
    fn copy(
        &self,
        outputs: &ort::session::SessionOutputs<'_>,
        n: usize,
        positions: Positions,
        out: &mut ForwardOut,
    ) -> Result<()> {
        let (first, first_hidden) = positions.first_rows(n);
        let logits = self.extract(outputs, &self.logits, n, self.vocab)?;
        out.rows = n - first;
        out.logits.clear();
        out.logits.extend_from_slice(&logits[first * self.vocab..]);
        out.hidden_rows = n - first_hidden;
        out.hidden.clear();
        let from = first_hidden * self.width;
        if let Some(name) = &self.hidden {
            out.hidden
                .extend_from_slice(&self.extract(outputs, name, n, self.width)?[from..]);
        }
        out.layers.resize_with(self.layers.len(), Vec::new);
        for (name, buf) in self.layers.iter().zip(&mut out.layers) {
            buf.clear();
            buf.extend_from_slice(&self.extract(outputs, name, n, self.width)?[from..]);
        }
        Ok(())
    }

    /// The `n × width` values of output `name`.
    fn extract<'a>(
        &self,
        outputs: &'a ort::session::SessionOutputs<'_>,
        name: &str,
        n: usize,
        width: usize,
    ) -> Result<&'a [f32]> {
        let (shape, data) = outputs[name]
            .try_extract_tensor::<f32>()
            .map_err(Error::run)?;
        if data.len() != n * width || shape.last().copied() != Some(width as i64) {
            return Err(Error::Unsupported {
                path: self.onnx.clone(),
                reason: format!(
                    "output `{name}` has shape {:?}; expected [1, {n}, {width}] (sizes from the manifest)",
                    &shape[..]
                ),
            });
        }
        Ok(data)
    }
}

/// The exported layers and their output names: the manifest's `io.hidden_layers` when it lists
/// any (each must be a graph output), else the graph's outputs named `hidden_states.{L}`.
fn layer_outputs(
    listed: &std::collections::BTreeMap<usize, String>,
    output_names: &[String],
    num_layers: usize,
    path: &Path,
) -> Result<(Vec<usize>, Vec<String>)> {
    let mut found: Vec<(usize, String)> = if listed.is_empty() {
        output_names
            .iter()
            .filter_map(|name| {
                let layer = name.strip_prefix("hidden_states.")?.parse::<usize>().ok()?;
                (layer < num_layers).then(|| (layer, name.clone()))
            })
            .collect()
    } else {
        listed.iter().map(|(l, name)| (*l, name.clone())).collect()
    };
    found.sort();
    for (layer, name) in &found {
        if *layer >= num_layers || !output_names.contains(name) {
            return Err(Error::MissingIo {
                path: path.to_path_buf(),
                kind: "output",
                name: name.clone(),
                available: abbreviate(output_names),
                hint: format!(
                    "; the manifest lists it for layer {layer} of {num_layers}: reconvert with \
                     `cargo xtask setup --force`, add it with `cargo xtask export-hidden --layers`, \
                     or fix `io.hidden_layers` in the manifest"
                ),
            });
        }
    }
    Ok(found.into_iter().unzip())
}

fn abbreviate(names: &[String]) -> String {
    const SHOW: usize = 8;
    let mut s = names
        .iter()
        .take(SHOW)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s.push_str(&format!(", … {} more", names.len() - SHOW));
    }
    s
}
