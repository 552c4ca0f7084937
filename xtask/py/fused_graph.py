"""The fused decoder graph (variant ``q4``): GGUF weights kept in their blocks, ONNX Runtime's
contrib ops for the layers. Imported by gguf2onnx.py (``--variant q4``).

Weights are never dequantized and requantized. Each GGUF block format maps onto
``MatMulNBits`` (com.microsoft) exactly:

    Q4_0  w = d·(q - 8)          4-bit, block 32, default zero point 8
    Q4_1  w = d·(q - z) + m′     4-bit, block 32, zero point z = round(−m/d) per block,
                                 m′ = m + d·z, plus BlockMean(A)·(32·M′)ᵀ
    Q5_0  w = d·(q - 16)         8-bit, block 32, stored as q + 112 (default zero point 128)
    Q5_1  w = d·(q - z) + m′     8-bit, block 32, as Q4_1 (z up to 31)
    Q8_0  w = d·q                8-bit, block 32, stored as q + 128 (default zero point 128)

The K-quants (super-blocks of 256 elements, one fp16 d (and dmin) each, a small integer scale
(and min) per sub-block) become one MatMulNBits block per sub-block, with the scale d·sc (and
the min −dmin·m) folded in float32, exact (an 11-bit mantissa times a 6- or 8-bit integer):

    Q4_K  w = (d·sc)·(q − z) + m′   4-bit, block 32, centred as Q4_1 (m = −dmin·mn)
    Q5_K  w = (d·sc)·(q − z) + m′   8-bit, block 32, centred as Q5_1
    Q6_K  w = (d·sc)·(q − 32)       8-bit, block 16 (sc signed), stored as q + 96 (zero point 128)

``BlockMean(A)`` averages the activations over each 32-wide block of the input dimension (one
``AveragePool``): the min term of Q4_1/Q5_1/Q4_K/Q5_K is then a [.. × K/32] by [K/32 × N]
product next to the fast kernel, against the mins times 32 (exact: a power of two), so it
equals BlockSum(A)·Mᵀ. Scales are float32 copies of the fp16 values (or of d·sc); scale·(q − z)
is exact in float32 (at most 24 significant bits), m′ is kept only where it is exact (see
``centred``), so the graph's weights, scale·(q − zero) + min, equal ``gguf.quants.dequantize``
bit for bit (checked by test_fused.py). A Q8_0 or Q5_0 embedding is read by
``GatherBlockQuantized`` from its blocks (the same ones a tied LM head multiplies with).
Other types (Q2_K, Q3_K, the IQ formats) are refused with the fix: ``--variant fp32``.

Layers: ``SimplifiedLayerNormalization`` / ``SkipSimplifiedLayerNormalization`` (the residual
sum is the skip op's fourth output, which is also where ``hidden_states.{L}`` comes from), one
packed QKV ``MatMulNBits`` feeding ``GroupQueryAttention`` with the rotary embedding inside
(cos/sin tables up to the context length), packed gate/up, SiLU, down.

Inputs and outputs (batch b, new tokens s, cache capacity C, fed by ngsd-runtime):
    input_ids [b, s] int64, seqlens_k [b] int32 (total length − 1 per row),
    total_sequence_length [] int32, logits_to_keep [1] int64 (logits only for the last k rows),
    past_key_values.{i}.key|value [b, kv_heads, C, head_dim] float: the same buffers are bound
    as present.{i}.key|value (past and present share one preallocated buffer; GroupQueryAttention
    writes the new rows in place);
    logits [b, k, vocab], present.*, last_hidden_state [b, s, hidden], hidden_states.{L} [b, s, hidden].
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK = 32
# The fused graph's own layout version, recorded as provenance.fused_graph_version of q4 packages
# (the fp32 graph keeps CONVERTER_VERSION alone, as trained gates are tied to its bytes); must
# equal FUSED_GRAPH_VERSION in xtask/src/setup.rs. 2: block means by AveragePool, centred Q4_1/Q5_1.
GRAPH_VERSION = 2
INT64_MAX = 2**63 - 1
MS = "com.microsoft"


class FusedError(Exception):
    """A tensor or model this builder cannot express exactly."""


@dataclass
class BlockWeight:
    """An [N, K] matrix as MatMulNBits blocks along K:
    w[n, k] = scales[n, k // block] * (q[n, k] - z[n, k // block]) + mins[n, k // block] (mins
    optional), where z is `zeros` when given (one zero point per block), else `zero` throughout."""

    q: "object"  # uint8 [N, K], one value per element (unpacked)
    scales: "object"  # float32 [N, K // block]
    bits: int
    zero: int
    mins: "object | None" = None  # float32 [N, K // block]
    block: int = BLOCK
    source: str = ""  # the GGUF type name, for the manifest
    zeros: "object | None" = None  # uint8 [N, K // block]: per-block zero points, overriding `zero`

    @property
    def n(self) -> int:
        return self.q.shape[0]

    @property
    def k(self) -> int:
        return self.q.shape[1]

    def rows(self, index) -> "BlockWeight":
        """The rows `index` (a permutation or a selection), as a new weight."""
        return BlockWeight(self.q[index], self.scales[index], self.bits, self.zero,
                           None if self.mins is None else self.mins[index], self.block, self.source,
                           None if self.zeros is None else self.zeros[index])

    def zero_array(self):
        """uint8 [N, K // block]: the zero point of every block."""
        import numpy as np

        if self.zeros is not None:
            return self.zeros
        return np.full((self.n, self.k // self.block), self.zero, dtype=np.uint8)

    def dequantize(self):
        """float32 [N, K], computed as gguf.quants does (scale · q, then + min)."""
        import numpy as np

        kb = self.k // self.block
        q = self.q.reshape(self.n, kb, self.block).astype(np.float32) - self.zero_array()[:, :, None]
        w = self.scales[:, :, None] * q
        if self.mins is not None:
            w = w + self.mins[:, :, None]
        return w.reshape(self.n, self.k)

    def packed(self):
        """MatMulNBits input B: uint8 [N, K // block, block · bits / 8]."""
        import numpy as np

        kb = self.k // self.block
        if self.bits == 8:
            return np.ascontiguousarray(self.q.reshape(self.n, kb, self.block))
        q = self.q.reshape(self.n, kb, self.block // 2, 2)
        return np.ascontiguousarray(q[..., 0] | (q[..., 1] << 4)).astype(np.uint8)

    def zero_points(self):
        """MatMulNBits zero points, or None when the op's default (2^(bits−1)) is meant."""
        import numpy as np

        if self.zeros is None and self.zero == 1 << (self.bits - 1):
            return None
        z = self.zero_array()
        if self.bits == 8:
            return np.ascontiguousarray(z)
        z = np.pad(z, ((0, 0), (0, z.shape[1] % 2))).reshape(self.n, -1, 2)
        return np.ascontiguousarray(z[..., 0] | (z[..., 1] << 4)).astype(np.uint8)


def concat_rows(weights: list[BlockWeight]) -> BlockWeight | None:
    """Stacks weights along N when they share a block format (else None: keep them apart)."""
    import numpy as np

    first = weights[0]
    if any((w.bits, w.block, w.k) != (first.bits, first.block, first.k) for w in weights):
        return None
    mins = None
    if any(w.mins is not None for w in weights):
        mins = np.concatenate([w.mins if w.mins is not None else np.zeros_like(w.scales) for w in weights])
    zeros = None
    if any(w.zeros is not None or w.zero != first.zero for w in weights):
        zeros = np.concatenate([w.zero_array() for w in weights])
    return BlockWeight(np.concatenate([w.q for w in weights]), np.concatenate([w.scales for w in weights]),
                       first.bits, first.zero, mins, first.block, "+".join(sorted({w.source for w in weights})), zeros)


def centred(w: BlockWeight, top: int) -> BlockWeight:
    """A w = d·q + m weight (Q4_1/Q5_1, quantized values 0..top) rewritten as d·(q − z) + m′ with
    the per-block zero point z = round(−m/d) and m′ = m + d·z: the same weights, bit for bit.

    Why: at accuracy level 4 the kernel multiplies (q − z) by int8-rounded activations, while the
    min term uses the exact block sums. With z = 0 the rounding error is weighted by d·q, all of
    one sign; centred, it is weighted by about w itself, as in llama.cpp's Q4_1 · Q8_1 dot product
    (the teacher-forced KL against fp32 fell about fivefold). d·z is exact in float32 (an 11-bit
    mantissa times at most 5 bits); a block whose m + d·z would round keeps z = 0."""
    import numpy as np

    d, m = w.scales, w.mins
    z = np.clip(np.rint(-m / np.where(d == 0, 1, d)), 0, top)
    z[d == 0] = 0
    m2 = m + d * z.astype(np.float32)
    exact = m.astype(np.float64) + d.astype(np.float64) * z == m2.astype(np.float64)
    z, m2 = np.where(exact, z, 0).astype(np.uint8), np.where(exact, m2, m).astype(np.float32)
    return BlockWeight(w.q, d, w.bits, 0, m2, w.block, w.source, z)


def _f16(raw):
    import numpy as np

    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


def _nibbles(qs):
    """GGUF 4-bit block bytes [rows, blocks, 16] -> values [rows, blocks, 32]: element j is the low
    nibble of byte j, element j + 16 the high nibble."""
    import numpy as np

    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.uint8)


# Bytes per block of the legacy formats (32 elements) and per super-block of the K-quants (QK_K).
LEGACY_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34}
QK_K = 256
K_QUANT_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
SUPPORTED = (*LEGACY_BYTES, *K_QUANT_BYTES)


def block_weight(t) -> BlockWeight:
    """A GGUF tensor (gguf.ReaderTensor, 2-D) as exact MatMulNBits blocks, or FusedError naming
    the tensor, its type, the supported types and the fix."""
    import numpy as np

    kind = t.tensor_type.name
    k, n = (int(x) for x in t.shape)
    if kind not in SUPPORTED:
        raise FusedError(f"tensor {t.name} is {kind}, which the exact q4 graph does not map yet "
                         f"(supported: {', '.join(SUPPORTED)}); convert with --variant fp32")
    width, nbytes = (BLOCK, LEGACY_BYTES[kind]) if kind in LEGACY_BYTES else (QK_K, K_QUANT_BYTES[kind])
    if k % width:
        raise FusedError(f"tensor {t.name} ({kind}): input width {k} is not a multiple of {width}; "
                         f"convert with --variant fp32")
    raw = np.ascontiguousarray(t.data).reshape(n, k // width, nbytes)
    decode = {"Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}.get(kind, _legacy)
    w = decode(raw, kind)
    w.source = kind
    return w


def _legacy(raw, kind: str) -> BlockWeight:
    """Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 blocks [n, K / 32, bytes] (fp16 d first, then m for _1)."""
    import numpy as np

    n, k = raw.shape[0], raw.shape[1] * BLOCK
    d = _f16(raw[..., 0:2]).reshape(n, -1)
    if kind == "Q4_0":
        return BlockWeight(_nibbles(raw[..., 2:]).reshape(n, k), d, 4, 8)
    if kind == "Q4_1":
        m = _f16(raw[..., 2:4]).reshape(n, -1)
        return centred(BlockWeight(_nibbles(raw[..., 4:]).reshape(n, k), d, 4, 0, m), 15)
    if kind == "Q8_0":
        q = (raw[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return BlockWeight(q.reshape(n, k), d, 8, 128)
    # Q5_0 / Q5_1: 4 low bits as Q4, the fifth bit of element j in bit j of a little-endian u32
    off = 2 if kind == "Q5_0" else 4
    qh = np.ascontiguousarray(raw[..., off:off + 4]).view(np.uint32)  # [n, blocks, 1]
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)  # [n, blocks, 32]
    q5 = _nibbles(raw[..., off + 4:]) | (high << 4)
    if kind == "Q5_0":  # w = d·(q − 16) = d·((q + 112) − 128)
        return BlockWeight((q5 + 112).reshape(n, k), d, 8, 128)
    m = _f16(raw[..., 2:4]).reshape(n, -1)
    return centred(BlockWeight(q5.reshape(n, k), d, 8, 0, m), 31)


def _k_scales(raw):
    """Q4_K/Q5_K super-blocks [n, sb, bytes]: bytes 0-1 d, 2-3 dmin (fp16), 4-15 the 6-bit scale
    and min of each of the 8 sub-blocks. Returns float32 [n, sb · 8] (d·scale, −dmin·min): both
    products exact (an 11-bit mantissa times a 6-bit integer), so the weight d·scale·q − dmin·min
    is the one rounding gguf.quants also does."""
    import numpy as np

    d, dmin = _f16(raw[..., 0:2]), _f16(raw[..., 2:4])  # [n, sb, 1]
    lo, hi, mixed = raw[..., 4:8], raw[..., 8:12], raw[..., 12:16]
    # sub-blocks 0-3: low 6 bits of lo (scale) / hi (min); 4-7: a nibble of `mixed` below the
    # top two bits of lo / hi
    scale = np.concatenate([lo & 63, (mixed & 15) | ((lo >> 6) << 4)], axis=-1).astype(np.float32)
    mins = np.concatenate([hi & 63, (mixed >> 4) | ((hi >> 6) << 4)], axis=-1).astype(np.float32)
    n = raw.shape[0]
    return (d * scale).reshape(n, -1), (-(dmin * mins)).reshape(n, -1)


def _k_low_nibbles(qs):
    """The 4 low bits of a Q4_K/Q5_K super-block, qs [n, sb, 128] -> [n, sb, 256]: each 32 bytes
    hold two sub-blocks, the low nibbles first."""
    import numpy as np

    q = qs.reshape(*qs.shape[:2], 4, 1, 32)
    return np.concatenate([q & 0x0F, q >> 4], axis=3).reshape(*qs.shape[:2], QK_K)


def _q4_k(raw, kind: str) -> BlockWeight:
    """Q4_K: w = (d·sc)·q − dmin·m per 32-element sub-block, as a centred 4-bit block of 32."""
    import numpy as np

    n = raw.shape[0]
    scales, mins = _k_scales(raw)
    q = _k_low_nibbles(raw[..., 16:144]).astype(np.uint8).reshape(n, -1)
    return centred(BlockWeight(q, scales, 4, 0, mins), 15)


def _q5_k(raw, kind: str) -> BlockWeight:
    """Q5_K: as Q4_K with a fifth bit (sub-block j's in bit j of the 32 qh bytes), as a centred
    8-bit block of 32."""
    import numpy as np

    n, sb = raw.shape[:2]
    scales, mins = _k_scales(raw)
    qh = raw[..., 16:48].reshape(n, sb, 1, 32)
    high = (qh >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)) & 1  # [n, sb, 8, 32]
    q = _k_low_nibbles(raw[..., 48:176]) | (high.reshape(n, sb, QK_K) << 4)
    return centred(BlockWeight(q.astype(np.uint8).reshape(n, -1), scales, 8, 0, mins), 31)


def _q6_k(raw, kind: str) -> BlockWeight:
    """Q6_K: w = (d·sc)·(q − 32) per 16-element sub-block (sc a signed 8-bit scale, q 6 bits), as
    an 8-bit block of 16 stored as q + 96 with the default zero point 128. d·sc is exact in
    float32 (11 bits times 8) and so is d·sc·(q − 32) (24 bits at most).

    Layout per super-block: ql [128] (low 4 bits), qh [64] (high 2 bits), scales [16] int8, d
    fp16. Each half of 128 elements takes 64 ql bytes (low nibbles for elements 0-63, high for
    64-127) and 32 qh bytes (bits 2g..2g+1 for elements 32g..32g+31)."""
    import numpy as np

    n, sb = raw.shape[:2]
    ql = raw[..., 0:128].reshape(n, sb, 2, 1, 64)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=3).reshape(n, sb, 2, 4, 32)
    qh = raw[..., 128:192].reshape(n, sb, 2, 1, 32)
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)) & 3  # [n, sb, 2, 4, 32]
    q = (low | (high << 4)).astype(np.uint8) + np.uint8(96)
    sc = np.ascontiguousarray(raw[..., 192:208]).view(np.int8).astype(np.float32)  # [n, sb, 16]
    scales = (_f16(raw[..., 208:210]) * sc).reshape(n, -1)
    return BlockWeight(q.reshape(n, -1), scales, 8, 128, block=16)


def qk_row_permutation(rows: int, heads: int):
    """Row order that undoes llama.cpp's q/k permutation (interleaved RoPE -> rotate_half)."""
    import numpy as np

    return np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(1, 2).reshape(-1)


class FusedBuilder:
    """Builds the fused graph into a gguf2onnx.GraphBuilder."""

    def __init__(self, b, g, hp, layers: list[int]):
        import numpy as np

        self.b, self.g, self.hp, self.layers = b, g, hp, set(layers)
        self.block_means: dict[tuple[str, int], str] = {}
        self.formats: dict[str, int] = {}
        self.np = np

    # ---- weights

    def weight(self, name: str, permute_heads: int | None = None):
        """A GGUF matrix as BlockWeight (quantized) or float32 [N, K] (F32/F16/BF16)."""
        t = self.g.tensors.get(name)
        if t is None:
            raise FusedError(f"GGUF tensor '{name}' is missing")
        if t.tensor_type.name in ("F32", "F16", "BF16"):
            w = self.g.tensor(name)
            self.formats[t.tensor_type.name] = self.formats.get(t.tensor_type.name, 0) + 1
        else:
            w = block_weight(t)
            self.formats[w.source] = self.formats.get(w.source, 0) + 1
        if permute_heads is not None:
            idx = qk_row_permutation(w.n if isinstance(w, BlockWeight) else w.shape[0], permute_heads)
            w = w.rows(idx) if isinstance(w, BlockWeight) else w[idx]
        return w

    def bias(self, name: str, permute_heads: int | None = None):
        if name not in self.g.tensors:
            return None
        v = self.g.tensor(name).reshape(-1)
        if permute_heads is not None:
            v = v[qk_row_permutation(v.shape[0], permute_heads)]
        return self.np.ascontiguousarray(v)

    # ---- ops

    def block_mean(self, x: str, k: int, block: int) -> str:
        """Mean of x over each `block`-wide slice of its last dimension: [.., k] -> [.., k / block].

        One AveragePool (x is [b, s, k]: s counts as channels, k as the pooled axis). It replaces a
        Reshape + ReduceSum pair that cost more than the 4-bit product itself at decode. Dividing
        by a power of two is exact, so mean · (block · min) equals sum · min."""
        key = (x, block)
        if key not in self.block_means:
            self.block_means[key] = self.b.op("AveragePool", [x], f"{x}/block_mean", kernel_shape=[block],
                                            strides=[block])
        return self.block_means[key]

    def linear(self, x: str, w, prefix: str, bias=None, output: str | None = None) -> str:
        """x [.., K] · wᵀ (+ bias) -> [.., N]."""
        b, np = self.b, self.np
        if isinstance(w, TiedHead):  # reuse the embedding's blocks: [V, H] -> [V, H / 32, 32]
            shape = b.const_i64(f"{prefix}/qweight_shape", [w.weight.n, w.weight.k // w.weight.block, w.weight.block])
            packed = b.op("Reshape", [w.table, shape], f"{prefix}/qweight")
            return b.op("MatMulNBits", [x, packed, w.scales], f"{prefix}/MatMulNBits", domain=MS,
                        outputs=[output] if output else None, K=w.weight.k, N=w.weight.n, bits=8,
                        block_size=w.weight.block, accuracy_level=4)
        if not isinstance(w, BlockWeight):  # a float matrix
            y = b.op("MatMul", [x, b.init(f"{prefix}.weight_t", np.ascontiguousarray(w.T))], f"{prefix}/MatMul",
                     outputs=None if bias is not None or output is None else [output])
            if bias is not None:
                y = b.op("Add", [y, b.init(f"{prefix}.bias", bias)], f"{prefix}/Add",
                         outputs=None if output is None else [output])
            return y
        inputs = [x, b.init(f"{prefix}.qweight", w.packed()), b.init(f"{prefix}.scales", w.scales)]
        zp = w.zero_points()
        if zp is not None or bias is not None:
            inputs.append(b.init(f"{prefix}.zero_points", zp) if zp is not None else "")
        if bias is not None:
            inputs += ["", b.init(f"{prefix}.bias", bias)]
        last = w.mins is None
        y = b.op("MatMulNBits", inputs, f"{prefix}/MatMulNBits", domain=MS,
                 outputs=[output] if last and output else None,
                 K=w.k, N=w.n, bits=w.bits, block_size=w.block, accuracy_level=4)
        if w.mins is None:
            return y
        # [K / block, N]: block · min, exact in float32 (a power of two times an fp16 value)
        mins_t = b.init(f"{prefix}.block_mins_t", np.ascontiguousarray(w.mins.T) * np.float32(w.block))
        mt = b.op("MatMul", [self.block_mean(x, w.k, w.block), mins_t], f"{prefix}/min_term")
        return b.op("Add", [y, mt], f"{prefix}/add_min", outputs=[output] if output else None)

    def linears(self, x: str, weights: list, prefix: str, biases: list, split: bool = True):
        """Several projections of one input: one packed product when the formats agree (returned
        whole when `split` is false), else one product each (a list)."""
        np = self.np
        packed = concat_rows(weights) if all(isinstance(w, BlockWeight) for w in weights) else None
        if packed is None:
            return [self.linear(x, w, f"{prefix}_{i}", bi) for i, (w, bi) in enumerate(zip(weights, biases))]
        bias = None
        if any(bi is not None for bi in biases):
            bias = np.concatenate([bi if bi is not None else np.zeros(w.n, np.float32) for w, bi in zip(weights, biases)])
        y = self.linear(x, packed, prefix, bias)
        if not split:
            return y
        sizes = self.b.const_i64(f"{prefix}/split_sizes", [w.n for w in weights])
        return self.b.op("Split", [y, sizes], f"{prefix}/Split", n_out=len(weights), axis=-1)


def rope_tables(g, hp, d: int):
    """cos/sin [context, d/2] of the rotary embedding (float64 maths, stored as float32)."""
    import numpy as np

    inv_freq = 1.0 / (hp.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    if "rope_freqs.weight" in g.tensors:
        factors = g.tensor("rope_freqs.weight").reshape(-1).astype(np.float64)
        if factors.shape[0] != d // 2:
            raise FusedError("rope_freqs.weight has an unexpected length")
        inv_freq = inv_freq / factors
    inv_freq = inv_freq / hp.rope_linear_factor
    ang = np.arange(hp.ctx, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def layer_output(i: int) -> str:
    return f"hidden_states.{i}"


def build_graph(b, g, hp, layers: list[int]):
    """Adds the fused decoder to GraphBuilder `b`; returns (inputs, outputs) value infos."""
    from onnx import TensorProto, helper

    f = FusedBuilder(b, g, hp, layers)
    H, nh, nkv, d = hp.hidden, hp.n_head, hp.n_kv, hp.head_dim
    batch, seq, cap = "batch_size", "sequence_length", "max_sequence_length"
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [batch]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        helper.make_tensor_value_info("logits_to_keep", TensorProto.INT64, [1]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, "logits_rows", hp.vocab])]
    for i in range(hp.n_layer):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, [batch, nkv, cap, d]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, [batch, nkv, cap, d]))
    outputs.append(helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, seq, H]))
    for i in sorted(f.layers):
        outputs.append(helper.make_tensor_value_info(layer_output(i), TensorProto.FLOAT, [batch, seq, H]))

    h, lm_head = embedding(f)
    cos, sin = rope_tables(g, hp, d)
    c_cos, c_sin = b.init("rotary.cos_cache", cos), b.init("rotary.sin_cache", sin)
    eps = hp.eps
    x = b.op("SimplifiedLayerNormalization", [h, b.init("/model/layers.0/input_layernorm.weight",
             f.np.ascontiguousarray(g.tensor("blk.0.attn_norm.weight").reshape(-1)))],
             "/model/layers.0/input_layernorm", axis=-1, epsilon=eps, stash_type=1)
    permute = nh if hp.arch == "llama" else None
    permute_kv = nkv if hp.arch == "llama" else None
    for i in range(hp.n_layer):
        p, blk = f"/model/layers.{i}", f"blk.{i}"
        q_w = f.weight(f"{blk}.attn_q.weight", permute)
        k_w = f.weight(f"{blk}.attn_k.weight", permute_kv)
        v_w = f.weight(f"{blk}.attn_v.weight")
        biases = [f.bias(f"{blk}.attn_q.bias", permute), f.bias(f"{blk}.attn_k.bias", permute_kv), f.bias(f"{blk}.attn_v.bias")]
        # one packed QKV product when the three share a block format, else q, k, v apart
        qkv = f.linears(x, [q_w, k_w, v_w], f"{p}/attn/qkv_proj", biases, split=False)
        del q_w, k_w, v_w
        qkv = qkv if isinstance(qkv, list) else [qkv, "", ""]
        attn, _, _ = b.op("GroupQueryAttention",
                          qkv + [f"past_key_values.{i}.key", f"past_key_values.{i}.value",
                                 "seqlens_k", "total_sequence_length", c_cos, c_sin],
                          f"{p}/attn/GroupQueryAttention", domain=MS,
                          outputs=[f"{p}/attn/output", f"present.{i}.key", f"present.{i}.value"],
                          num_heads=nh, kv_num_heads=nkv, do_rotary=1, rotary_interleaved=0,
                          scale=float(1.0 / f.np.sqrt(d)))
        o = f.linear(attn, f.weight(f"{blk}.attn_output.weight"), f"{p}/attn/o_proj")
        x, h = skip_norm(f, o, h, f"{blk}.ffn_norm.weight", f"{p}/post_attention_layernorm",
                         f"{p}/post_attention_layernorm/output", f"{p}/post_attention_layernorm/residual")
        gate, up = f.linears(x, [f.weight(f"{blk}.ffn_gate.weight"), f.weight(f"{blk}.ffn_up.weight")],
                             f"{p}/mlp/gate_up_proj", [None, None])
        sig = b.op("Sigmoid", [gate], f"{p}/mlp/act/Sigmoid")
        act = b.op("Mul", [b.op("Mul", [gate, sig], f"{p}/mlp/act/Mul"), up], f"{p}/mlp/Mul")
        down = f.linear(act, f.weight(f"{blk}.ffn_down.weight"), f"{p}/mlp/down_proj")
        last = i == hp.n_layer - 1
        nxt = "/model/norm" if last else f"/model/layers.{i + 1}/input_layernorm"
        norm_w = "output_norm.weight" if last else f"blk.{i + 1}.attn_norm.weight"
        # the residual stream after layer i is the next norm's skip sum
        residual = layer_output(i) if i in f.layers else ("" if last else f"{nxt}/residual")
        x, h = skip_norm(f, down, h, norm_w, nxt, "last_hidden_state" if last else f"{nxt}/output", residual)
    keep = b.op("Neg", ["logits_to_keep"], "/lm_head/keep_start")
    rows = b.op("Slice", ["last_hidden_state", keep, b.const_i64("/lm_head/keep_end", [INT64_MAX]),
                          b.const_i64("/lm_head/keep_axis", [1])], "/lm_head/keep_rows")
    f.linear(rows, lm_head, "/lm_head", output="logits")
    return inputs, outputs, f.formats


def skip_norm(f: FusedBuilder, x: str, skip: str, gamma: str, name: str, out: str, residual: str):
    """RMSNorm(x + skip) and (when `residual` is named) x + skip itself."""
    w = f.b.init(f"{name}.weight", f.np.ascontiguousarray(f.g.tensor(gamma).reshape(-1)))
    outputs = [out, "", "", residual] if residual else [out]
    res = f.b.op("SkipSimplifiedLayerNormalization", [x, skip, w], name, domain=MS, outputs=outputs,
                 epsilon=f.hp.eps)
    return (res[0], res[3]) if residual else (res, None)


def embedding(f: FusedBuilder):
    """The token embedding of `input_ids` [b, s, hidden] and the LM-head weight.

    A table in 8-bit blocks with the default zero point (Q8_0, Q5_0, Q6_K) is gathered by
    GatherBlockQuantized from its blocks (when tied, the very blocks the LM head multiplies with;
    exact, checked by test_fused.py); other formats gather from an exact float32 copy."""
    b, g, hp, np = f.b, f.g, f.hp, f.np
    emb = f.weight("token_embd.weight")
    if (emb.n if isinstance(emb, BlockWeight) else emb.shape[0]) != hp.vocab:
        raise FusedError(f"token_embd.weight has {emb.n} rows, expected the vocabulary size {hp.vocab}")
    lm_head = emb if hp.tied else f.weight("output.weight")
    if (isinstance(emb, BlockWeight) and emb.zeros is None and emb.zero == 1 << (emb.bits - 1) and emb.mins is None
            and emb.bits == 8):
        table = b.init("model.embed_tokens.qweight", np.ascontiguousarray(emb.q))  # [V, H] uint8
        scales = b.init("model.embed_tokens.scales", emb.scales)  # [V, H / 32]
        h = b.op("GatherBlockQuantized", [table, "input_ids", scales], "/model/embed_tokens/Gather",
                 domain=MS, gather_axis=0, quantize_axis=1, block_size=emb.block, bits=8)
        if hp.tied:  # the LM head reads the same bytes, shaped [V, H / 32, 32]
            return h, TiedHead(emb, table, scales)
        return h, lm_head
    table = emb.dequantize() if isinstance(emb, BlockWeight) else emb
    h = b.op("Gather", [b.init("model.embed_tokens.weight", np.ascontiguousarray(table)), "input_ids"],
             "/model/embed_tokens/Gather", axis=0)
    return h, lm_head


@dataclass
class TiedHead:
    """The tied LM head: the embedding's block weight and the initializers that already hold it."""

    weight: BlockWeight
    table: str
    scales: str
