//! One ONNX decoder session with its KV cache: prefill, then one (or a few) tokens per step.
//!
//! Invariants:
//! - only the inputs the session declares are fed (Optimum exports differ: some lack `position_ids`);
//! - the key/value cache stays inside ONNX Runtime values between steps (see [`crate::kv`]): an
//!   Optimum graph's `present.*` outputs are fed back as `past_key_values.*` without copying them
//!   through Rust; a fused graph writes into one buffer bound once per sequence;
//! - a fused graph computes logits only for the positions asked for (`logits_to_keep`);
//! - a step returns the logits and hidden states (final, and the residual stream after each
//!   exported layer) of the positions asked for, written into caller-owned buffers (no
//!   allocation per token on the hot path).

mod batch;
mod head;
mod slots;

use std::path::{Path, PathBuf};
use std::sync::Once;

use ort::session::{Session, SessionInputValue, builder::GraphOptimizationLevel};
use ort::value::{DynValue, Tensor, TensorRef, ValueType};

use crate::error::{Error, Result};
use crate::graph_io::{self, GraphIo, InputSlot};
use crate::kv::{Geometry, KvCache, SharedKv, SharedNames, Store};
use crate::ortlib;
use crate::package::ModelPackage;
use crate::provider::Provider;

pub use batch::Batch;
pub use head::PromptPrefill;

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

    /// Empties every buffer (keeping their allocations).
    pub fn clear(&mut self) {
        self.logits.clear();
        self.hidden.clear();
        self.layers.iter_mut().for_each(Vec::clear);
        self.rows = 0;
        self.hidden_rows = 0;
    }

    /// Row `r` of `from` (a batched step's output: one row per sequence) as a one-row output,
    /// as a single sequence's step would have written it.
    pub fn set_row_of(&mut self, from: &ForwardOut, r: usize, vocab: usize, hidden: usize) {
        self.gather_rows(from, &[r], vocab, hidden);
    }

    /// Rows `rows` of `from` (one row of logits and of hidden states each), in that order.
    pub fn gather_rows(&mut self, from: &ForwardOut, rows: &[usize], vocab: usize, hidden: usize) {
        self.clear();
        self.layers.resize_with(from.layers.len(), Vec::new);
        for &r in rows {
            self.logits
                .extend_from_slice(&from.logits[r * vocab..(r + 1) * vocab]);
            if !from.hidden.is_empty() {
                self.hidden
                    .extend_from_slice(&from.hidden[r * hidden..(r + 1) * hidden]);
            }
            for (to, layer) in self.layers.iter_mut().zip(&from.layers) {
                to.extend_from_slice(&layer[r * hidden..(r + 1) * hidden]);
            }
        }
        self.rows = rows.len();
        self.hidden_rows = rows.len();
    }

    /// Adds one chunk's rows to what a whole pass over the chunks reports for `positions`
    /// (`last`: the final chunk, the only one whose logits [`Positions::Last`] and
    /// [`Positions::AllHidden`] keep).
    fn append(&mut self, part: &ForwardOut, positions: Positions, last: bool) {
        if positions == Positions::Last {
            if last {
                self.clone_from(part);
            }
            return;
        }
        if positions == Positions::All || last {
            if positions == Positions::AllHidden {
                self.logits.clear();
                self.rows = 0;
            }
            self.logits.extend_from_slice(&part.logits);
            self.rows += part.rows;
        }
        self.hidden.extend_from_slice(&part.hidden);
        self.hidden_rows += part.hidden_rows;
        self.layers.resize_with(part.layers.len(), Vec::new);
        for (all, chunk) in self.layers.iter_mut().zip(&part.layers) {
            all.extend_from_slice(chunk);
        }
    }
}

/// Default tokens per chunk of [`Model::prefill`] for each thread of the pool, up to
/// [`MAX_DEFAULT_PREFILL_CHUNK`]: a chunk then takes about the same wall time whatever the
/// thread count (about 1 s for the fp32 default model on one core of the reference machine),
/// which bounds how long a cancelled request or a passed deadline waits.
pub const DEFAULT_PREFILL_CHUNK: usize = 256;

/// The largest default chunk (fewer, longer chunks gain little past it).
pub const MAX_DEFAULT_PREFILL_CHUNK: usize = 512;

/// The default chunk for a pool of `threads` intra-op threads.
pub fn default_prefill_chunk(threads: usize) -> usize {
    (DEFAULT_PREFILL_CHUNK * threads.max(1)).min(MAX_DEFAULT_PREFILL_CHUNK)
}

/// How a chunked prefill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefill {
    /// Every token was fed.
    Done,
    /// `should_stop` said so between chunks; the cache holds the first `fed` tokens.
    Stopped {
        /// Tokens fed before stopping.
        fed: usize,
    },
}

/// A loaded decoder.
pub struct Model {
    session: Session,
    package: ModelPackage,
    io: GraphIo,
    /// What a step copies out, and from which outputs.
    layout: OutputLayout,
    /// Outputs a fused graph's binding reads back each step (logits, hidden states).
    read_back: Vec<String>,
    /// Tokens per chunk of [`Model::prefill`].
    prefill_chunk: usize,
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
    /// The last prompt head [`Model::prefill_prompt`] computed.
    head: Option<head::Head>,
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
        let mut model = Self::from_session(session, package, provider, provider_note)?;
        model.prefill_chunk = default_prefill_chunk(runtime.threads);
        Ok(model)
    }

    fn from_session(
        session: Session,
        package: ModelPackage,
        provider: Provider,
        provider_note: Option<String>,
    ) -> Result<Self> {
        let io = graph_io::map(&session, &package)?;
        let (kv_heads, head_dim) = cache_geometry(&session, &package, &io)?;
        let describe_all = |list: &[ort::value::Outlet]| {
            list.iter()
                .map(|o| IoDescription {
                    name: o.name().into(),
                    ty: describe(o.dtype()),
                })
                .collect::<Vec<_>>()
        };
        let inputs_desc = describe_all(session.inputs());
        let outputs_desc = describe_all(session.outputs());
        let m = &package.manifest;
        let layout = OutputLayout {
            onnx: package.onnx_path(),
            logits: io.logits.clone(),
            hidden: io.hidden.clone(),
            layers: io.layer_names.clone(),
            vocab: m.vocab_size,
            width: m.hidden_size,
        };
        let read_back = std::iter::once(io.logits.clone())
            .chain(io.hidden.clone())
            .chain(io.layer_names.iter().cloned())
            .collect();
        Ok(Model {
            layout,
            read_back,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            kv_heads,
            head_dim,
            vocab: m.vocab_size,
            hidden: m.hidden_size,
            provider,
            provider_note,
            inputs_desc,
            outputs_desc,
            io,
            session,
            package,
            ids_buf: Vec::new(),
            mask_buf: Vec::new(),
            pos_buf: Vec::new(),
            head: None,
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
        &self.io.exported_layers
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.io.num_layers
    }

    /// Whether the graph keeps its cache in one preallocated buffer per layer (a fused graph).
    pub fn has_shared_cache(&self) -> bool {
        self.io.shared_kv
    }

    /// Tokens per chunk of [`Model::prefill`] (default [`default_prefill_chunk`] of the pool).
    pub fn prefill_chunk(&self) -> usize {
        self.prefill_chunk
    }

    /// Sets the tokens per chunk of [`Model::prefill`] (at least 1).
    pub fn set_prefill_chunk(&mut self, tokens: usize) {
        self.prefill_chunk = tokens.max(1);
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
        self.cache_with_capacity(0)
    }

    /// A fresh, empty cache with room for `positions` before it must grow (fused graphs
    /// preallocate; Optimum graphs grow every step anyway).
    pub fn cache_with_capacity(&self, positions: usize) -> Result<KvCache> {
        let store = if self.io.shared_kv {
            Store::Shared(Box::new(SharedKv::new(
                &self.session,
                &self.shared_names(),
                self.geometry(1, positions),
                self.max_context(),
            )?))
        } else {
            let shape = [1usize, self.kv_heads, 0, self.head_dim];
            Store::Values(
                (0..2 * self.io.num_layers)
                    .map(|_| {
                        Tensor::<f32>::from_array((shape, Vec::<f32>::new()))
                            .map(|t| t.into_dyn())
                            .map_err(Error::run)
                    })
                    .collect::<Result<Vec<_>>>()?,
            )
        };
        Ok(KvCache { store, len: 0 })
    }

    /// Shared buffers of `slots` sequences with room for `capacity` positions each.
    fn geometry(&self, slots: usize, capacity: usize) -> Geometry {
        Geometry {
            slots,
            heads: self.kv_heads,
            capacity,
            dim: self.head_dim,
        }
    }

    fn shared_names(&self) -> SharedNames<'_> {
        SharedNames {
            past: &self.io.past_names,
            present: &self.io.present_names,
        }
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
        self.check_length(cache.len, ids)?;
        let len = cache.len;
        match &mut cache.store {
            Store::Values(past) => {
                *past = self.run_values(past, len, ids, positions, out)?;
            }
            Store::Shared(kv) => {
                kv.reserve(
                    &self.session,
                    &self.shared_names(),
                    len,
                    len + ids.len(),
                    self.max_context(),
                )?;
                self.run_shared(kv, len, ids, positions, out)?;
            }
        }
        cache.len += ids.len();
        Ok(())
    }

    /// Like [`Model::forward`], but leaves `prefix` as it is and returns a new cache holding
    /// the prefix and `ids`: one shared prefix (say, a system prompt) serves many sequences
    /// without being recomputed (a fused graph's cache copies the prefix's rows).
    pub fn forward_from(
        &mut self,
        prefix: &KvCache,
        ids: &[u32],
        positions: Positions,
        out: &mut ForwardOut,
    ) -> Result<KvCache> {
        self.check_length(prefix.len, ids)?;
        let store = match &prefix.store {
            Store::Values(past) => {
                Store::Values(self.run_values(past, prefix.len, ids, positions, out)?)
            }
            Store::Shared(kv) => {
                let mut copy = self.copy_shared(kv, prefix.len, prefix.len + ids.len())?;
                self.run_shared(&mut copy, prefix.len, ids, positions, out)?;
                Store::Shared(Box::new(copy))
            }
        };
        Ok(KvCache {
            store,
            len: prefix.len + ids.len(),
        })
    }

    /// [`Model::forward`] in chunks of [`Model::prefill_chunk`] tokens, asking `should_stop`
    /// before each chunk after the first: a long prompt can be abandoned (a cancelled request, a
    /// passed deadline) within one chunk's time. `out` receives what `positions` asks for over
    /// the whole of `ids`, as one forward pass would write it.
    pub fn prefill(
        &mut self,
        cache: &mut KvCache,
        ids: &[u32],
        positions: Positions,
        out: &mut ForwardOut,
        should_stop: &mut dyn FnMut() -> bool,
    ) -> Result<Prefill> {
        let chunk = self.prefill_chunk;
        if ids.len() <= chunk {
            self.forward(cache, ids, positions, out)?;
            return Ok(Prefill::Done);
        }
        self.check_length(cache.len, ids)?;
        let mut part = ForwardOut::default();
        out.clear();
        for (k, piece) in ids.chunks(chunk).enumerate() {
            if k > 0 && should_stop() {
                return Ok(Prefill::Stopped { fed: k * chunk });
            }
            let last = (k + 1) * chunk >= ids.len();
            self.forward(cache, piece, positions, &mut part)?;
            out.append(&part, positions, last);
        }
        Ok(Prefill::Done)
    }

    fn check_length(&self, past_len: usize, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument {
                name: "input ids",
                reason: "a forward pass needs at least one token".into(),
            });
        }
        let total = past_len + ids.len();
        if total > self.max_context() {
            return Err(Error::ContextOverflow {
                prompt_tokens: total,
                max_context: self.max_context(),
            });
        }
        Ok(())
    }

    /// One forward pass of an Optimum-style graph after `past` (holding `past_len` positions);
    /// returns the present key/value tensors.
    fn run_values(
        &mut self,
        past: &[DynValue],
        past_len: usize,
        ids: &[u32],
        positions: Positions,
        out: &mut ForwardOut,
    ) -> Result<Vec<DynValue>> {
        let n = ids.len();
        let total = past_len + n;
        self.ids_buf.clear();
        self.ids_buf.extend(ids.iter().map(|&t| i64::from(t)));
        // a batched step leaves zeros (padding) here: refill, do not only extend
        self.mask_buf.clear();
        self.mask_buf.resize(total, 1);
        self.pos_buf.clear();
        self.pos_buf.extend((past_len as i64)..(total as i64));

        self.run_optimum(past, 1, n, total, positions, out)
    }

    /// One forward pass of an Optimum-style graph after `past` over what the caller put in
    /// `ids_buf` and `pos_buf` (`[rows, n]`) and `mask_buf` (`[rows, total]`); writes what
    /// `positions` asks of the `rows × n` positions into `out` and returns the present
    /// key/value tensors. One sequence (`rows` 1) or a batch step (`n` 1).
    pub(crate) fn run_optimum(
        &mut self,
        past: &[DynValue],
        rows: usize,
        n: usize,
        total: usize,
        positions: Positions,
        out: &mut ForwardOut,
    ) -> Result<Vec<DynValue>> {
        let Model {
            session,
            io,
            ids_buf,
            mask_buf,
            pos_buf,
            layout,
            ..
        } = self;
        let shape_ids = [rows, n];
        let shape_mask = [rows, total];
        let mut inputs: Vec<SessionInputValue<'_>> = Vec::with_capacity(io.slots.len());
        for slot in io.slots.iter() {
            let value: SessionInputValue<'_> = match slot {
                InputSlot::InputIds => TensorRef::from_array_view((shape_ids, &ids_buf[..]))
                    .map_err(Error::run)?
                    .into(),
                InputSlot::AttentionMask => {
                    TensorRef::from_array_view((shape_mask, &mask_buf[..rows * total]))
                        .map_err(Error::run)?
                        .into()
                }
                InputSlot::PositionIds => TensorRef::from_array_view((shape_ids, &pos_buf[..]))
                    .map_err(Error::run)?
                    .into(),
                InputSlot::Past(j) => (&past[*j]).into(),
                other => {
                    return Err(Error::Run(format!(
                        "input {other:?} belongs to a fused graph, which this graph is not"
                    )));
                }
            };
            inputs.push(value);
        }
        let mut outputs = session.run(&inputs[..]).map_err(Error::run)?;
        drop(inputs);
        layout.copy(&outputs, rows * n, rows * n, positions, out)?;
        io.present_names
            .iter()
            .map(|name| {
                outputs
                    .remove(name.as_str())
                    .ok_or_else(|| Error::Run(format!("the model did not return `{name}`")))
            })
            .collect()
    }

    /// One forward pass of a fused graph: the cache buffers are already bound (and large
    /// enough); binds this step's small inputs and reads back the requested rows.
    fn run_shared(
        &mut self,
        kv: &mut SharedKv,
        past_len: usize,
        ids: &[u32],
        positions: Positions,
        out: &mut ForwardOut,
    ) -> Result<()> {
        let n = ids.len();
        let total = past_len + n;
        let keep = match positions {
            Positions::All => n,
            Positions::Last | Positions::AllHidden => 1,
        };
        let step = FusedStep {
            ids: ids.iter().map(|&t| i64::from(t)).collect(),
            rows: 1,
            seqlens_k: vec![total as i32 - 1],
            total: total as i32,
            keep,
        };
        self.run_fused(kv, step)?;
        let outputs = self.session.run_binding(&kv.binding).map_err(Error::run)?;
        self.layout.copy(&outputs, n, keep, positions, out)
    }

    /// Binds one pass's small inputs of a fused graph (the cache buffers are bound already)
    /// and fresh allocations for the outputs read back.
    pub(crate) fn run_fused(&self, kv: &mut SharedKv, mut step: FusedStep) -> Result<()> {
        kv.rebind_read_back(&self.read_back)?;
        let binding = &mut kv.binding;
        let per_row = step.ids.len() / step.rows.max(1);
        for (slot, name) in self.io.slots.iter().zip(&self.io.input_names) {
            let bound = match slot {
                InputSlot::InputIds => binding.bind_input(
                    name.as_str(),
                    &Tensor::from_array(([step.rows, per_row], std::mem::take(&mut step.ids)))
                        .map_err(Error::run)?,
                ),
                InputSlot::SeqLensK => binding.bind_input(
                    name.as_str(),
                    &Tensor::from_array(([step.rows], std::mem::take(&mut step.seqlens_k)))
                        .map_err(Error::run)?,
                ),
                InputSlot::TotalSequenceLength => binding.bind_input(
                    name.as_str(),
                    &Tensor::from_array(((), vec![step.total])).map_err(Error::run)?,
                ),
                InputSlot::LogitsToKeep => binding.bind_input(
                    name.as_str(),
                    &Tensor::from_array(([1usize], vec![step.keep as i64])).map_err(Error::run)?,
                ),
                InputSlot::Past(_) => Ok(()),
                other => {
                    return Err(Error::Run(format!(
                        "input {other:?} belongs to an Optimum-style graph, which this graph is not"
                    )));
                }
            };
            bound.map_err(Error::run)?;
        }
        Ok(())
    }
}

/// The small inputs of one pass of a fused graph.
pub(crate) struct FusedStep {
    /// `rows × n` token ids, row-major.
    pub ids: Vec<i64>,
    /// Sequences (slots) fed.
    pub rows: usize,
    /// Per row: positions held after this pass, minus one.
    pub seqlens_k: Vec<i32>,
    /// The longest row's positions after this pass.
    pub total: i32,
    /// Logits kept per row (the last ones).
    pub keep: usize,
}

/// Cache geometry (kv heads, head dim) from the graph's first past key input (dims 1 and 3),
/// which must agree with the manifest.
fn cache_geometry(
    session: &Session,
    package: &ModelPackage,
    io: &GraphIo,
) -> Result<(usize, usize)> {
    let m = &package.manifest;
    let (mut kv_heads, mut head_dim) = (m.num_kv_heads, m.head_dim);
    if let Some(outlet) = session
        .inputs()
        .iter()
        .find(|o| Some(o.name()) == io.past_names.first().map(String::as_str))
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
            path: package.onnx_path(),
            reason: format!(
                "the manifest says {} kv heads × {} head dim but the graph's cache is {kv_heads} × {head_dim}",
                m.num_kv_heads, m.head_dim
            ),
        });
    }
    Ok((kv_heads, head_dim))
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
    /// Copies the reported rows of logits, final hidden state and layer outputs into `out`,
    /// for `n` fed positions of which the graph returned logits for the last `logit_rows`.
    fn copy(
        &self,
        outputs: &ort::session::SessionOutputs<'_>,
        n: usize,
        logit_rows: usize,
        positions: Positions,
        out: &mut ForwardOut,
    ) -> Result<()> {
        let (first, first_hidden) = positions.first_rows(n);
        let logits = self.extract(outputs, &self.logits, logit_rows, self.vocab)?;
        out.rows = n - first;
        out.logits.clear();
        out.logits
            .extend_from_slice(&logits[(logit_rows - out.rows) * self.vocab..]);
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

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn the_default_chunk_grows_with_the_pool_up_to_its_cap() {
        assert_eq!(default_prefill_chunk(0), DEFAULT_PREFILL_CHUNK);
        assert_eq!(default_prefill_chunk(1), 256);
        assert_eq!(default_prefill_chunk(2), 512);
        assert_eq!(default_prefill_chunk(16), MAX_DEFAULT_PREFILL_CHUNK);
    }
}
