//! The key/value cache of one sequence, in the two layouts ngsd drives.
//!
//! - **Values** (Hugging Face Optimum exports, the fp32 reference): each step's `present.*`
//!   outputs are new ONNX Runtime values, fed back as the next step's `past_key_values.*` by
//!   reference. Nothing is copied through Rust, but ONNX Runtime concatenates past and new rows
//!   into fresh buffers every step.
//! - **Shared** (the fused graph, `GroupQueryAttention`): one preallocated buffer per layer and
//!   kind, `[slots, kv_heads, capacity, head_dim]`, bound once as both `past_key_values.*` and
//!   `present.*` through an IO binding; the op writes the new rows in place. The sequence length
//!   lives on the Rust side (fed as `seqlens_k` / `total_sequence_length`), so rolling back is
//!   setting a number. The buffer grows by doubling (copying the rows held) up to the context.
//!
//! Batching (several sequences in one pass) maps onto the `slots` dimension: slot `b` is the
//! contiguous region `[b, .., .., ..]` with its own length in `seqlens_k[b]`. A cache here holds
//! one slot; a batch of a fused graph ([`crate::Batch`]) holds several.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{DynValue, Tensor};

use crate::error::{Error, Result};

/// Smallest capacity a shared buffer starts with (positions).
const MIN_CAPACITY: usize = 256;

/// The key/value cache of one sequence.
pub struct KvCache {
    pub(crate) store: Store,
    pub(crate) len: usize,
}

pub(crate) enum Store {
    /// Optimum layout: the previous step's `present.*` values.
    Values(Vec<DynValue>),
    /// Fused layout: preallocated buffers bound to the session.
    Shared(Box<SharedKv>),
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (layout, capacity) = match &self.store {
            Store::Values(v) => ("values", v.len()),
            Store::Shared(s) => ("shared", s.capacity),
        };
        f.debug_struct("KvCache")
            .field("len", &self.len)
            .field("layout", &layout)
            .field("capacity", &capacity)
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

    /// Positions the cache can hold before it must grow (its current length for the Optimum
    /// layout, which grows every step).
    pub fn capacity(&self) -> usize {
        match &self.store {
            Store::Values(_) => self.len,
            Store::Shared(s) => s.capacity,
        }
    }

    /// Rolls the sequence back to its first `len` positions (e.g. to drop tokens a safety check
    /// did not clear): the next forward pass continues after position `len`. For the fused
    /// layout this only sets the length; the Optimum layout copies the kept rows.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::InvalidArgument {
                name: "cache length",
                reason: format!("cannot truncate a cache of {} positions to {len}", self.len),
            });
        }
        if let Store::Values(values) = &mut self.store
            && len < self.len
        {
            for v in values.iter_mut() {
                *v = keep_rows(v, len)?;
            }
        }
        self.len = len;
        Ok(())
    }
}

/// The first `len` positions (dimension 2) of a `[1, heads, n, dim]` cache value, as a new value.
pub(crate) fn keep_rows(value: &DynValue, len: usize) -> Result<DynValue> {
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(Error::run)?;
    let (heads, rows, dim) = (shape[1] as usize, shape[2] as usize, shape[3] as usize);
    let mut kept = Vec::with_capacity(heads * len * dim);
    for h in 0..heads {
        kept.extend_from_slice(&data[h * rows * dim..][..len * dim]);
    }
    Tensor::from_array(([1usize, heads, len, dim], kept))
        .map(|t| t.into_dyn())
        .map_err(Error::run)
}

/// Preallocated key/value buffers bound to a session (the fused layout).
pub(crate) struct SharedKv {
    /// `2 × layers` buffers `[slots, kv_heads, capacity, head_dim]`: key then value per layer.
    buffers: Vec<Tensor<f32>>,
    /// Sequences the buffers hold side by side (1 for a single sequence's cache).
    pub(crate) slots: usize,
    pub(crate) capacity: usize,
    heads: usize,
    dim: usize,
    /// Bound once: past and present of every layer point at `buffers`; the per-step inputs and
    /// the outputs read back are (re)bound by the forward pass.
    pub(crate) binding: IoBinding,
    /// Where the outputs read back are allocated (ONNX Runtime allocates them per run, as their
    /// shapes change with the tokens fed).
    cpu: MemoryInfo<'static>,
}

/// Names a shared cache is bound under.
pub(crate) struct SharedNames<'a> {
    pub past: &'a [String],
    pub present: &'a [String],
}

fn cpu_memory() -> Result<MemoryInfo<'static>> {
    MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::CPUOutput,
    )
    .map_err(Error::run)
}

/// The shape of a set of shared buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Sequences side by side.
    pub slots: usize,
    /// Key/value heads.
    pub heads: usize,
    /// Positions per sequence.
    pub capacity: usize,
    /// Head dimension.
    pub dim: usize,
}

impl SharedKv {
    /// Buffers of `geometry` (capacity at least [`MIN_CAPACITY`], at most `max`), zeroed and
    /// bound to `session`.
    pub(crate) fn new(
        session: &Session,
        names: &SharedNames<'_>,
        geometry: Geometry,
        max: usize,
    ) -> Result<Self> {
        let Geometry {
            slots, heads, dim, ..
        } = geometry;
        let capacity = geometry.capacity.max(MIN_CAPACITY).min(max);
        let allocator = Allocator::default();
        let mut buffers = names
            .past
            .iter()
            .map(|_| {
                let mut t = Tensor::<f32>::new(&allocator, [slots, heads, capacity, dim])
                    .map_err(Error::run)?;
                t.extract_tensor_mut().1.fill(0.0);
                Ok(t)
            })
            .collect::<Result<Vec<_>>>()?;
        let binding = bind(session, names, &mut buffers)?;
        Ok(SharedKv {
            buffers,
            slots,
            capacity,
            heads,
            dim,
            binding,
            cpu: cpu_memory()?,
        })
    }

    /// Binds the outputs read back to fresh allocations for the next run.
    pub(crate) fn rebind_read_back(&mut self, names: &[String]) -> Result<()> {
        for name in names {
            self.binding
                .bind_output_to_device(name.as_str(), &self.cpu)
                .map_err(Error::run)?;
        }
        Ok(())
    }

    /// Makes room for `needed` positions, keeping the first `len`: doubles the capacity (at
    /// most `max`) and copies the rows held.
    pub(crate) fn reserve(
        &mut self,
        session: &Session,
        names: &SharedNames<'_>,
        len: usize,
        needed: usize,
        max: usize,
    ) -> Result<()> {
        if needed <= self.capacity {
            return Ok(());
        }
        let grown = self.copy(session, names, len, needed.max(2 * self.capacity), max)?;
        *self = grown;
        Ok(())
    }

    /// A new single-sequence cache of at least `capacity` positions holding a copy of the
    /// first `len` positions of slot 0.
    pub(crate) fn copy(
        &self,
        session: &Session,
        names: &SharedNames<'_>,
        len: usize,
        capacity: usize,
        max: usize,
    ) -> Result<Self> {
        let geometry = Geometry {
            slots: 1,
            heads: self.heads,
            capacity,
            dim: self.dim,
        };
        let mut fresh = SharedKv::new(session, names, geometry, max)?;
        fresh.copy_slot(0, self, 0, len);
        Ok(fresh)
    }

    /// Copies the first `len` positions of `src`'s slot `from` into this cache's slot `to`
    /// (same heads and head dimension; the capacities may differ).
    pub(crate) fn copy_slot(&mut self, to: usize, src: &SharedKv, from: usize, len: usize) {
        let (src_cap, dst_cap, d, heads) = (src.capacity, self.capacity, self.dim, self.heads);
        for (s, t) in src.buffers.iter().zip(self.buffers.iter_mut()) {
            let from_data = s.extract_tensor().1;
            let to_data = t.extract_tensor_mut().1;
            for h in 0..heads {
                let at = |slot: usize, cap: usize| ((slot * heads + h) * cap) * d;
                to_data[at(to, dst_cap)..][..len * d]
                    .copy_from_slice(&from_data[at(from, src_cap)..][..len * d]);
            }
        }
    }
}

fn bind(
    session: &Session,
    names: &SharedNames<'_>,
    buffers: &mut [Tensor<f32>],
) -> Result<IoBinding> {
    let mut binding = session.create_binding().map_err(Error::run)?;
    for ((past, present), buffer) in names.past.iter().zip(names.present).zip(buffers) {
        binding
            .bind_input(past.as_str(), &*buffer)
            .map_err(Error::run)?;
        // the same memory as the input: GroupQueryAttention writes the new rows in place
        binding
            .bind_output(present.as_str(), &mut *buffer)
            .map_err(Error::run)?;
    }
    Ok(binding)
}
