#!/usr/bin/env python3
"""Convert a llama / qwen2 architecture GGUF file into an ngsd model folder.

The folder holds an ONNX decoder in the Hugging Face Optimum layout (with KV cache and an
extra ``last_hidden_state`` output, plus ``hidden_states.{L}`` outputs: the residual stream
after decoder layer L, for the layers given by ``--layers``), a rebuilt ``tokenizer.json``, the
chat template, Hugging Face style config files and the ngsd manifest ``ngsd-model.json``.

Two variants:
- ``fp32`` (the reference): weights dequantized with numpy (``gguf.quants``), the graph built with
  ``onnx.helper`` from standard ONNX ops only (opset 17), Optimum's KV-cache I/O;
- ``q4`` (named after the source's Q4_1 blocks): the GGUF blocks kept exact in ``MatMulNBits``,
  ``GroupQueryAttention`` over a preallocated shared KV buffer, fused norms (fused_graph.py;
  ONNX Runtime's com.microsoft ops).
No torch involved.

    gguf2onnx.py --gguf PATH --out DIR --name NAME [--variant fp32|q4] [--source TEXT]
                 [--source-sha256 HEX] [--layers 5,10,22 | --layers none]

The output folder is assembled in a sibling staging folder and renamed into place at the end,
so a crash never leaves a half-written model behind. Output is byte-deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from importlib import metadata

CONVERTER = "xtask/py/gguf2onnx.py"
CONVERTER_VERSION = 3
LM_HEAD_FILE = "lm_head.safetensors"
OPSET = 17
IR_VERSION = 8
EXTERNAL_DATA_THRESHOLD = int(1.8 * 1024**3)
EXTERNAL_DATA_NAME = "model.onnx.data"
# Output name of the residual stream after decoder layer {L} (0-based).
LAYER_OUTPUT = "hidden_states.{L}"

SUPPORTED_ARCHS = ("llama", "qwen2")

# GGUF token_type values (llama.cpp's llama_token_type)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# Control tokens that end a generation (the names llama.cpp also treats as end-of-generation).
EOG_TOKEN_NAMES = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|end|>",
                   "<end_of_turn>", "<end_of_utterance>", "<EOT>")

# Qwen2 pre-tokenizer regex (same as upstream Qwen2 tokenizer.json); fancy-regex compatible.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class ConvertError(Exception):
    """A user-facing error: printed as one line, no traceback."""


def log(msg: str) -> None:
    print(f"gguf2onnx: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# file helpers


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: str, data: bytes) -> None:
    """Write bytes to `path` through a temporary file in the same folder + rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def write_safetensors(path: str, name: str, array, metadata: dict) -> None:
    """One float32 tensor in the safetensors layout (8-byte header length, JSON header, data)."""
    import numpy as np

    a = np.ascontiguousarray(array, dtype="<f4")
    header = {
        "__metadata__": {k: str(v) for k, v in metadata.items()},
        name: {"dtype": "F32", "shape": list(a.shape), "data_offsets": [0, a.nbytes]},
    }
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    write_atomic(path, len(h).to_bytes(8, "little") + h + a.tobytes())


def lm_head_matrix(g: "Gguf", hp: "HParams"):
    """The [vocab, hidden] matrix that maps the final hidden state to logits."""
    w = g.tensor("token_embd.weight" if hp.tied else "output.weight")
    if w.shape != (hp.vocab, hp.hidden):
        raise ConvertError(f"LM-head matrix has shape {w.shape}, expected {(hp.vocab, hp.hidden)}")
    return w


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def staging_dir_for(out_dir: str) -> str:
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    # remove leftovers of killed runs (their pid is gone)
    prefix = f".{os.path.basename(out_dir)}."
    for entry in os.listdir(parent):
        if entry.startswith(prefix) and (".staging-" in entry or ".old-" in entry):
            pid = entry.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    staging = os.path.join(parent, f".{os.path.basename(out_dir)}.staging-{os.getpid()}")
    if os.path.exists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    return staging


def publish_dir(staging: str, out_dir: str) -> None:
    """Move a fully written staging folder to `out_dir`, replacing an older one."""
    out_dir = os.path.abspath(out_dir)
    fsync_dir(staging)
    old = None
    if os.path.lexists(out_dir):
        old = os.path.join(os.path.dirname(out_dir), f".{os.path.basename(out_dir)}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    fsync_dir(os.path.dirname(out_dir))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def tool_versions(names) -> dict:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def proto_size(model) -> int:
    """Serialized size estimate that also works past protobuf's 2 GiB limit."""
    n = sum(len(t.raw_data) for t in model.graph.initializer)
    if n >= EXTERNAL_DATA_THRESHOLD:
        return n
    return model.ByteSize()


def save_onnx(model, path: str) -> list[str]:
    """Save `model` atomically; external data (one file) when the model is too big for protobuf.

    Returns the list of file names written (model.onnx [+ model.onnx.data])."""
    import onnx

    size = proto_size(model)
    folder = os.path.dirname(path)
    name = os.path.basename(path)
    log(f"writing {name} ({size / 2**20:.0f} MiB)")
    if size < EXTERNAL_DATA_THRESHOLD:
        write_atomic(path, model.SerializeToString())
        return [name]
    data_path = os.path.join(folder, EXTERNAL_DATA_NAME)
    if os.path.exists(data_path):
        os.remove(data_path)
    tmp = f"{path}.tmp-{os.getpid()}"
    onnx.save_model(
        model,
        tmp,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=EXTERNAL_DATA_NAME,
        size_threshold=1024,
    )
    os.chmod(data_path, 0o644)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return [name, EXTERNAL_DATA_NAME]


# ----------------------------------------------------------------------------------------------
# GGUF reading


class Gguf:
    def __init__(self, path: str):
        import gguf

        self.path = path
        try:
            self.reader = gguf.GGUFReader(path)
        except Exception as e:  # noqa: BLE001 - report any parse failure as a clean error
            raise ConvertError(f"cannot read GGUF file {path}: {e}") from None
        self.tensors = {t.name: t for t in self.reader.tensors}

    def has(self, key: str) -> bool:
        return key in self.reader.fields

    def get(self, key: str, default=None):
        f = self.reader.fields.get(key)
        if f is None:
            return default
        return f.contents()

    def require(self, key: str):
        f = self.reader.fields.get(key)
        if f is None:
            raise ConvertError(f"GGUF metadata key '{key}' is missing")
        return f.contents()

    def raw_string(self, key: str) -> bytes | None:
        """The exact bytes of a string field (no decode/encode round trip)."""
        f = self.reader.fields.get(key)
        if f is None:
            return None
        return bytes(f.parts[f.data[0]])

    def tensor(self, name: str):
        """Dequantized float32 numpy array in row-major [out, in] order (GGUF dims reversed)."""
        import gguf
        import numpy as np

        t = self.tensors.get(name)
        if t is None:
            raise ConvertError(f"GGUF tensor '{name}' is missing")
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        a = np.ascontiguousarray(a, dtype=np.float32)
        want = tuple(int(x) for x in reversed(t.shape))
        if a.shape != want:
            a = a.reshape(want)
        return a


# ----------------------------------------------------------------------------------------------
# hyper-parameters


class HParams:
    def __init__(self, g: Gguf):
        arch = g.get("general.architecture")
        if arch is None:
            raise ConvertError("GGUF has no general.architecture")
        if arch not in SUPPORTED_ARCHS:
            raise ConvertError(
                f"unsupported architecture '{arch}' (supported: {', '.join(SUPPORTED_ARCHS)})"
            )
        self.arch = arch
        p = arch + "."
        self.n_layer = int(g.require(p + "block_count"))
        self.hidden = int(g.require(p + "embedding_length"))
        self.ffn = int(g.require(p + "feed_forward_length"))
        self.n_head = int(g.require(p + "attention.head_count"))
        self.n_kv = int(g.get(p + "attention.head_count_kv", self.n_head))
        self.head_dim = int(g.get(p + "attention.key_length", self.hidden // self.n_head))
        v_dim = int(g.get(p + "attention.value_length", self.head_dim))
        if v_dim != self.head_dim:
            raise ConvertError("key_length != value_length is not supported")
        if self.n_head % self.n_kv:
            raise ConvertError(f"head_count {self.n_head} is not a multiple of head_count_kv {self.n_kv}")
        self.rope_dim = int(g.get(p + "rope.dimension_count", self.head_dim))
        if self.rope_dim != self.head_dim:
            raise ConvertError(f"partial rotary embedding (rope dim {self.rope_dim} != head dim {self.head_dim}) is not supported")
        self.rope_theta = float(g.get(p + "rope.freq_base", 10000.0))
        self.eps = float(g.require(p + "attention.layer_norm_rms_epsilon"))
        self.ctx = int(g.get(p + "context_length", 2048))
        scaling = g.get(p + "rope.scaling.type", "none")
        self.rope_linear_factor = 1.0
        if scaling == "linear":
            self.rope_linear_factor = float(g.require(p + "rope.scaling.factor"))
        elif scaling not in ("none", None):
            raise ConvertError(f"rope scaling '{scaling}' is not supported")
        tokens = g.require("tokenizer.ggml.tokens")
        self.vocab = int(g.get(p + "vocab_size", len(tokens)))
        self.tied = "output.weight" not in g.tensors
        # GGUF rms eps is stored as f32; keep HF-style printable value
        self.eps = float(f"{self.eps:.6g}")


def expected_shapes(hp: HParams) -> dict[str, tuple[int, ...]]:
    """Row-major shape ([out, in], or [n]) of every tensor the graph needs, biases aside."""
    H, q, kv, ffn = hp.hidden, hp.n_head * hp.head_dim, hp.n_kv * hp.head_dim, hp.ffn
    shapes = {"token_embd.weight": (hp.vocab, H), "output_norm.weight": (H,)}
    if not hp.tied:
        shapes["output.weight"] = (hp.vocab, H)
    for i in range(hp.n_layer):
        p = f"blk.{i}."
        shapes.update({p + "attn_norm.weight": (H,), p + "attn_q.weight": (q, H), p + "attn_k.weight": (kv, H),
                       p + "attn_v.weight": (kv, H), p + "attn_output.weight": (H, q), p + "ffn_norm.weight": (H,),
                       p + "ffn_gate.weight": (ffn, H), p + "ffn_up.weight": (ffn, H), p + "ffn_down.weight": (H, ffn)})
    return shapes


def bias_shapes(g: Gguf, hp: HParams) -> dict[str, tuple[int, ...]]:
    """The q/k/v bias shapes when the model has biases (qwen2), else nothing (llama). The graph
    adds whichever bias exists, so a file with only some of them must be refused here."""
    q, kv = hp.n_head * hp.head_dim, hp.n_kv * hp.head_dim
    shapes = {f"blk.{i}.attn_{x}.bias": (rows,) for i in range(hp.n_layer) for x, rows in (("q", q), ("k", kv), ("v", kv))}
    present = [name for name in shapes if name in g.tensors]
    missing = [name for name in shapes if name not in g.tensors]
    if present and missing:
        raise ConvertError(f"GGUF tensor '{missing[0]}' is missing while '{present[0]}' exists: "
                           "q, k and v biases must be in every layer or in none")
    return shapes if present else {}


def check_tensors(g: Gguf, hp: HParams) -> None:
    """Every tensor the graph reads exists with the shape the metadata implies (checked before
    any work, the same for both variants)."""
    for name, want in {**expected_shapes(hp), **bias_shapes(g, hp)}.items():
        t = g.tensors.get(name)
        if t is None:
            raise ConvertError(f"GGUF tensor '{name}' is missing")
        got = tuple(int(x) for x in reversed(t.shape))
        if got != want:
            raise ConvertError(f"GGUF tensor '{name}' has shape {got}, expected {want} (from the GGUF metadata)")


def default_layers(n_layer: int) -> list[int]:
    """Every multiple of 5 in 1..n_layer-1, plus round(0.75 * n_layer) (SmolLM2's 30 layers:
    5, 10, 15, 20, 22, 25): where safety probes usually read a decoder's residual stream."""
    layers = {i for i in range(5, n_layer, 5)}
    three_quarters = round(0.75 * n_layer)
    if 0 <= three_quarters < n_layer:
        layers.add(three_quarters)
    return sorted(layers)


def parse_layers(text: str | None, n_layer: int) -> list[int]:
    """`--layers`: a comma-separated list of 0-based layer indices, `none`, or the default."""
    if text is None or text.strip() == "" or text.strip() == "default":
        return default_layers(n_layer)
    if text.strip() == "none":
        return []
    layers = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConvertError(f"--layers: `{part}` is not a layer index (use e.g. --layers 5,10,22, or none)")
        i = int(part)
        if i >= n_layer:
            raise ConvertError(f"--layers: layer {i} does not exist (the model has layers 0..{n_layer - 1})")
        layers.add(i)
    return sorted(layers)


# ----------------------------------------------------------------------------------------------
# graph building


class GraphBuilder:
    def __init__(self):
        self.nodes = []
        self.initializers = []
        self._names = set()

    def init(self, name, array):
        from onnx import numpy_helper

        assert name not in self._names, name
        self._names.add(name)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def const_i64(self, name, values):
        import numpy as np

        return self.init(name, np.asarray(values, dtype=np.int64))

    def const_f32(self, name, values):
        import numpy as np

        return self.init(name, np.asarray(values, dtype=np.float32))

    def op(self, op_type, inputs, name, n_out=1, outputs=None, **attrs):
        from onnx import helper

        if outputs is None:
            outputs = [f"{name}_output_{i}" for i in range(n_out)]
        assert name not in self._names, name
        self._names.add(name)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


def build_fused_model(g: Gguf, hp: HParams, layers: list[int]):
    """The q4 variant (fused_graph.py): exact GGUF blocks, ONNX Runtime contrib ops."""
    import onnx
    from onnx import helper

    from fused_graph import FusedError, build_graph

    b = GraphBuilder()
    try:
        inputs, outputs, formats = build_graph(b, g, hp, layers)
    except FusedError as e:
        raise ConvertError(str(e)) from None
    log("weights kept in their GGUF blocks: " + ", ".join(f"{n} x {k}" for k, n in sorted(formats.items())))
    graph = helper.make_graph(b.nodes, "ngsd_decoder_fused", inputs, outputs, initializer=b.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="ngsd-gguf2onnx",
        producer_version=str(CONVERTER_VERSION),
    )
    model.ir_version = IR_VERSION
    log(f"graph: {len(b.nodes)} nodes, {len(b.initializers)} initializers")
    # onnx.checker knows no com.microsoft ops (nor ONNX Runtime's SimplifiedLayerNormalization);
    # test_fused.py loads and runs the result in ONNX Runtime instead
    del onnx
    return model, formats


def build_model(g: Gguf, hp: HParams, layers: list[int]):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    b = GraphBuilder()
    H, nh, nkv, d = hp.hidden, hp.n_head, hp.n_kv, hp.head_dim
    rep = nh // nkv

    n_tensors = len(g.tensors)
    log(f"dequantizing {n_tensors} tensors")

    def weight_t(name, permute_heads=None):
        """GGUF [out,in] matrix -> transposed [in,out] for MatMul(x, W)."""
        w = g.tensor(name)
        if permute_heads is not None:
            # undo llama.cpp's q/k row permutation (interleaved RoPE -> HF rotate_half layout)
            rows = w.shape[0]
            w = w.reshape(permute_heads, rows // permute_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        return np.ascontiguousarray(w.T)

    def vec(name):
        return np.ascontiguousarray(g.tensor(name).reshape(-1))

    # ---- shared constants
    c_eps = b.const_f32("const_rms_eps", hp.eps)
    c_two = b.const_f32("const_two", 2.0)
    c_scale = b.const_f32("const_attn_scale", 1.0 / np.sqrt(d))
    c_min = b.const_f32("const_mask_min", np.finfo(np.float32).min)
    c_shape_q = b.const_i64("const_shape_q", [0, 0, nh, d])
    c_shape_kv = b.const_i64("const_shape_kv", [0, 0, nkv, d])
    c_shape_q5 = b.const_i64("const_shape_q_grouped", [0, nkv, rep, -1, d])
    c_shape_o4 = b.const_i64("const_shape_o_heads", [0, nh, -1, d])
    c_shape_o = b.const_i64("const_shape_o", [0, 0, nh * d])
    c_split_half = b.const_i64("const_split_half", [d // 2, d // 2])
    c_axis_m1 = b.const_i64("const_axes_last", [-1])
    c_axis_2 = b.const_i64("const_axes_2", [2])
    c_axis_1 = b.const_i64("const_axes_1", [1])

    def rmsnorm(x, weight_name, prefix):
        w = b.init(f"{prefix}.weight", vec(weight_name))
        sq = b.op("Pow", [x, c_two], f"{prefix}/Pow")
        mean = b.op("ReduceMean", [sq], f"{prefix}/ReduceMean", axes=[-1], keepdims=1)
        var = b.op("Add", [mean, c_eps], f"{prefix}/Add")
        std = b.op("Sqrt", [var], f"{prefix}/Sqrt")
        normed = b.op("Div", [x, std], f"{prefix}/Div")
        return b.op("Mul", [normed, w], f"{prefix}/Mul")

    def linear(x, weight_name, prefix, bias_name=None, permute_heads=None):
        w = b.init(f"{prefix}.weight_t", weight_t(weight_name, permute_heads))
        y = b.op("MatMul", [x, w], f"{prefix}/MatMul")
        if bias_name is not None and bias_name in g.tensors:
            bias = vec(bias_name)
            if permute_heads is not None:
                bias = bias.reshape(permute_heads, -1, 2).swapaxes(1, 2).reshape(-1)
            bi = b.init(f"{prefix}.bias", np.ascontiguousarray(bias))
            y = b.op("Add", [y, bi], f"{prefix}/Add")
        return y

    # ---- graph inputs / outputs
    batch, seq, past, total = "batch_size", "sequence_length", "past_sequence_length", "past_sequence_length + sequence_length"
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, total]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, [batch, seq]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, seq, hp.vocab])]
    for i in range(hp.n_layer):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, [batch, nkv, past, d]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, [batch, nkv, total, d]))
    outputs.append(helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, seq, H]))
    for i in layers:
        outputs.append(helper.make_tensor_value_info(LAYER_OUTPUT.format(L=i), TensorProto.FLOAT, [batch, seq, H]))

    # ---- embeddings
    emb = g.tensor("token_embd.weight")  # [V, H]
    if emb.shape != (hp.vocab, H):
        raise ConvertError(f"token_embd.weight has shape {emb.shape}, expected {(hp.vocab, H)}")
    if hp.tied:
        # one [H, V] matrix serves the embedding gather (axis=1) and the LM head MatMul
        emb_t = b.init("model.embed_tokens.weight_t", np.ascontiguousarray(emb.T))
        del emb
        gathered = b.op("Gather", [emb_t, "input_ids"], "/model/embed_tokens/Gather", axis=1)  # [H, b, s]
        h = b.op("Transpose", [gathered], "/model/embed_tokens/Transpose", perm=[1, 2, 0])
        lm_w = emb_t
    else:
        emb_w = b.init("model.embed_tokens.weight", emb)
        h = b.op("Gather", [emb_w, "input_ids"], "/model/embed_tokens/Gather", axis=0)
        out_w = g.tensor("output.weight")
        if out_w.shape != (hp.vocab, H):
            raise ConvertError(f"output.weight has shape {out_w.shape}, expected {(hp.vocab, H)}")
        lm_w = b.init("lm_head.weight_t", np.ascontiguousarray(out_w.T))
        del out_w

    # ---- rotary embedding tables from position_ids (computed once)
    inv_freq = 1.0 / (hp.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    if "rope_freqs.weight" in g.tensors:
        factors = vec("rope_freqs.weight").astype(np.float64)
        if factors.shape[0] != d // 2:
            raise ConvertError("rope_freqs.weight has an unexpected length")
        inv_freq = inv_freq / factors
    inv_freq = inv_freq / hp.rope_linear_factor
    c_inv_freq = b.init("rotary_emb.inv_freq", inv_freq.astype(np.float32))
    pos_f = b.op("Cast", ["position_ids"], "/rotary/Cast", to=TensorProto.FLOAT)
    pos_u = b.op("Unsqueeze", [pos_f, c_axis_m1], "/rotary/Unsqueeze")  # [b, s, 1]
    freqs = b.op("Mul", [pos_u, c_inv_freq], "/rotary/Mul")  # [b, s, d/2]
    cos_h = b.op("Cos", [freqs], "/rotary/Cos")
    sin_h = b.op("Sin", [freqs], "/rotary/Sin")
    neg_sin_h = b.op("Neg", [sin_h], "/rotary/Neg")
    cos_full = b.op("Concat", [cos_h, cos_h], "/rotary/ConcatCos", axis=-1)
    # rotate_half(x) * sin == concat(x2, x1) * concat(-sin, sin)
    sin_signed = b.op("Concat", [neg_sin_h, sin_h], "/rotary/ConcatSin", axis=-1)
    cos4 = b.op("Unsqueeze", [cos_full, c_axis_1], "/rotary/UnsqueezeCos")  # [b, 1, s, d]
    sin4 = b.op("Unsqueeze", [sin_signed, c_axis_1], "/rotary/UnsqueezeSin")

    def rope(x, prefix):
        x1, x2 = b.op("Split", [x, c_split_half], f"{prefix}/Split", n_out=2, axis=-1)
        swapped = b.op("Concat", [x2, x1], f"{prefix}/Concat", axis=-1)
        a = b.op("Mul", [x, cos4], f"{prefix}/MulCos")
        s = b.op("Mul", [swapped, sin4], f"{prefix}/MulSin")
        return b.op("Add", [a, s], f"{prefix}/Add")

    # ---- causal + padding mask [b, 1, 1, s, T] (bool), computed once
    am_shape = b.op("Shape", ["attention_mask"], "/mask/ShapeMask")
    ids_shape = b.op("Shape", ["input_ids"], "/mask/ShapeIds")
    c_idx1 = b.const_i64("const_index_1", 1)  # scalar
    c_zero = b.const_i64("const_zero", 0)
    c_one_i = b.const_i64("const_one_i64", 1)
    total_len = b.op("Gather", [am_shape, c_idx1], "/mask/TotalLen", axis=0)  # scalar T
    seq_len = b.op("Gather", [ids_shape, c_idx1], "/mask/SeqLen", axis=0)  # scalar s
    past_len = b.op("Sub", [total_len, seq_len], "/mask/PastLen")
    key_pos = b.op("Range", [c_zero, total_len, c_one_i], "/mask/KeyRange")  # [T]
    query_pos = b.op("Range", [past_len, total_len, c_one_i], "/mask/QueryRange")  # [s]
    key_row = b.op("Unsqueeze", [key_pos, b.const_i64("const_axes_0", [0])], "/mask/KeyRow")  # [1, T]
    query_col = b.op("Unsqueeze", [query_pos, b.const_i64("const_axes_last_q", [1])], "/mask/QueryCol")  # [s, 1]
    causal = b.op("LessOrEqual", [key_row, query_col], "/mask/Causal")  # [s, T]
    pad = b.op("Cast", ["attention_mask"], "/mask/CastPad", to=TensorProto.BOOL)  # [b, T]
    pad5 = b.op("Unsqueeze", [pad, b.const_i64("const_axes_123", [1, 2, 3])], "/mask/PadUnsqueeze")  # [b,1,1,1,T]
    mask5 = b.op("And", [pad5, causal], "/mask/And")  # [b, 1, 1, s, T]

    # ---- decoder layers
    permute = hp.arch == "llama"
    for i in range(hp.n_layer):
        p = f"/model/layers.{i}"
        blk = f"blk.{i}"
        x = rmsnorm(h, f"{blk}.attn_norm.weight", f"{p}/input_layernorm")
        q = linear(x, f"{blk}.attn_q.weight", f"{p}/self_attn/q_proj", f"{blk}.attn_q.bias", nh if permute else None)
        k = linear(x, f"{blk}.attn_k.weight", f"{p}/self_attn/k_proj", f"{blk}.attn_k.bias", nkv if permute else None)
        v = linear(x, f"{blk}.attn_v.weight", f"{p}/self_attn/v_proj", f"{blk}.attn_v.bias")
        q = b.op("Reshape", [q, c_shape_q], f"{p}/self_attn/q_reshape")
        q = b.op("Transpose", [q], f"{p}/self_attn/q_transpose", perm=[0, 2, 1, 3])  # [b, nh, s, d]
        k = b.op("Reshape", [k, c_shape_kv], f"{p}/self_attn/k_reshape")
        k = b.op("Transpose", [k], f"{p}/self_attn/k_transpose", perm=[0, 2, 1, 3])  # [b, nkv, s, d]
        v = b.op("Reshape", [v, c_shape_kv], f"{p}/self_attn/v_reshape")
        v = b.op("Transpose", [v], f"{p}/self_attn/v_transpose", perm=[0, 2, 1, 3])
        q = rope(q, f"{p}/self_attn/q_rope")
        k = rope(k, f"{p}/self_attn/k_rope")
        pk = b.op("Concat", [f"past_key_values.{i}.key", k], f"{p}/self_attn/present_key", outputs=[f"present.{i}.key"], axis=2)
        pv = b.op("Concat", [f"past_key_values.{i}.value", v], f"{p}/self_attn/present_value", outputs=[f"present.{i}.value"], axis=2)
        # grouped-query attention without repeating K/V: Q [b,nkv,rep,s,d] x K^T [b,nkv,1,d,T]
        qs = b.op("Mul", [q, c_scale], f"{p}/self_attn/q_scale")
        q5 = b.op("Reshape", [qs, c_shape_q5], f"{p}/self_attn/q_group")
        kt = b.op("Transpose", [pk], f"{p}/self_attn/k_t", perm=[0, 1, 3, 2])
        kt5 = b.op("Unsqueeze", [kt, c_axis_2], f"{p}/self_attn/k_group")
        scores = b.op("MatMul", [q5, kt5], f"{p}/self_attn/scores")  # [b, nkv, rep, s, T]
        scores = b.op("Where", [mask5, scores, c_min], f"{p}/self_attn/mask")
        probs = b.op("Softmax", [scores], f"{p}/self_attn/softmax", axis=-1)
        v5 = b.op("Unsqueeze", [pv, c_axis_2], f"{p}/self_attn/v_group")
        o = b.op("MatMul", [probs, v5], f"{p}/self_attn/context")  # [b, nkv, rep, s, d]
        o = b.op("Reshape", [o, c_shape_o4], f"{p}/self_attn/o_heads")  # [b, nh, s, d]
        o = b.op("Transpose", [o], f"{p}/self_attn/o_transpose", perm=[0, 2, 1, 3])
        o = b.op("Reshape", [o, c_shape_o], f"{p}/self_attn/o_reshape")  # [b, s, nh*d]
        o = linear(o, f"{blk}.attn_output.weight", f"{p}/self_attn/o_proj")
        h = b.op("Add", [h, o], f"{p}/attn_residual")
        x = rmsnorm(h, f"{blk}.ffn_norm.weight", f"{p}/post_attention_layernorm")
        gate = linear(x, f"{blk}.ffn_gate.weight", f"{p}/mlp/gate_proj")
        up = linear(x, f"{blk}.ffn_up.weight", f"{p}/mlp/up_proj")
        sig = b.op("Sigmoid", [gate], f"{p}/mlp/act_fn/Sigmoid")
        act = b.op("Mul", [gate, sig], f"{p}/mlp/act_fn/Mul")
        prod = b.op("Mul", [act, up], f"{p}/mlp/Mul")
        down = linear(prod, f"{blk}.ffn_down.weight", f"{p}/mlp/down_proj")
        h = b.op("Add", [h, down], f"{p}/mlp_residual")
        if i in layers:
            b.op("Identity", [h], f"{p}/hidden_state", outputs=[LAYER_OUTPUT.format(L=i)])

    final = rmsnorm(h, "output_norm.weight", "/model/norm")
    b.op("Identity", [final], "/model/last_hidden_state", outputs=["last_hidden_state"])
    b.op("MatMul", [final, lm_w], "/lm_head/MatMul", outputs=["logits"])

    graph = helper.make_graph(b.nodes, "ngsd_decoder", inputs, outputs, initializer=b.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ngsd-gguf2onnx",
        producer_version=str(CONVERTER_VERSION),
    )
    model.ir_version = IR_VERSION
    log(f"graph: {len(b.nodes)} nodes, {len(b.initializers)} initializers")
    if proto_size(model) < EXTERNAL_DATA_THRESHOLD:
        onnx.checker.check_model(model)
    return model


# ----------------------------------------------------------------------------------------------
# tokenizer


def build_tokenizer(g: Gguf):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, Regex

    tok_model = g.require("tokenizer.ggml.model")
    if tok_model != "gpt2":
        raise ConvertError(f"tokenizer model '{tok_model}' is not supported (only byte-level BPE 'gpt2')")
    pre = g.get("tokenizer.ggml.pre", "default")
    tokens = list(g.require("tokenizer.ggml.tokens"))
    types = [int(t) for t in g.require("tokenizer.ggml.token_type")]
    merges_raw = list(g.require("tokenizer.ggml.merges"))
    vocab = {}
    for i, t in enumerate(tokens):
        if t in vocab:
            raise ConvertError(f"duplicate token {t!r} in GGUF vocabulary")
        vocab[t] = i
    merges = []
    for m in merges_raw:
        parts = m.split(" ")
        if len(parts) != 2:
            raise ConvertError(f"malformed merge {m!r}")
        merges.append((parts[0], parts[1]))

    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    tk = Tokenizer(bpe)
    if pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        )
    elif pre == "qwen2":
        tk.normalizer = normalizers.NFC()
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif pre in ("default", "gpt-2", "gpt2"):
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        raise ConvertError(f"tokenizer pre-tokenizer '{pre}' is not supported (smollm, qwen2, gpt-2)")
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)

    added = []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty == TOKEN_CONTROL:
            added.append(AddedToken(t, special=True, normalized=False))
        elif ty == TOKEN_USER_DEFINED:
            added.append(AddedToken(t, special=False, normalized=False))
    if added:
        tk.add_tokens(added)  # ids already exist in the vocab, so they are kept
    # check the added tokens kept their GGUF ids
    for a in added:
        if tk.token_to_id(a.content) != vocab[a.content]:
            raise ConvertError(f"added token {a.content!r} changed id")
    data = tk.to_str(pretty=True)
    return data, tokens, types


# ----------------------------------------------------------------------------------------------
# main


def convert(args) -> None:
    t0 = time.time()
    if not os.path.isfile(args.gguf):
        raise ConvertError(f"GGUF file not found: {args.gguf}")
    if args.source_sha256:
        h = args.source_sha256.lower()
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            raise ConvertError(f"--source-sha256 is not a sha256 hex digest: {args.source_sha256}")
    log(f"reading {args.gguf}")
    g = Gguf(args.gguf)
    hp = HParams(g)
    check_tensors(g, hp)
    layers = parse_layers(args.layers, hp.n_layer)
    log(
        f"{hp.arch}: {hp.n_layer} layers, hidden {hp.hidden}, heads {hp.n_head}/{hp.n_kv} kv, head_dim {hp.head_dim}, "
        f"vocab {hp.vocab}, {'tied' if hp.tied else 'untied'} embeddings"
    )
    if args.source_sha256:
        src_sha = args.source_sha256.lower()
    else:
        log("hashing source")
        src_sha = sha256_file(args.gguf)
    source = args.source if args.source is not None else os.path.basename(args.gguf)

    staging = staging_dir_for(args.out)
    try:
        log(f"exporting the residual stream after layers {', '.join(map(str, layers)) or '(none)'}")
        formats = None
        if args.variant == "q4":
            model, formats = build_fused_model(g, hp, layers)
        else:
            model = build_model(g, hp, layers)
        onnx_files = save_onnx(model, os.path.join(staging, "model.onnx"))
        del model

        log(f"writing {LM_HEAD_FILE} (the LM-head matrix, read by head experts)")
        write_safetensors(
            os.path.join(staging, LM_HEAD_FILE),
            "weight",
            lm_head_matrix(g, hp),
            {"format": "ngsd-lm-head/1", "tied": hp.tied},
        )

        log("building tokenizer.json")
        tok_json, tokens, types = build_tokenizer(g)
        write_atomic(os.path.join(staging, "tokenizer.json"), tok_json.encode("utf-8"))

        template = g.raw_string("tokenizer.chat_template")
        if template is None:
            raise ConvertError("GGUF has no tokenizer.chat_template")
        write_atomic(os.path.join(staging, "chat_template.jinja"), template)
        template_str = template.decode("utf-8")

        bos_id = g.get("tokenizer.ggml.bos_token_id")
        eos_id = g.get("tokenizer.ggml.eos_token_id")
        if eos_id is None:
            raise ConvertError("GGUF has no tokenizer.ggml.eos_token_id")
        eos_ids = [int(eos_id)]
        for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            extra = g.get(key)
            if extra is not None and int(extra) not in eos_ids:
                eos_ids.append(int(extra))
        for i, (t, ty) in enumerate(zip(tokens, types)):
            if ty == TOKEN_CONTROL and t in EOG_TOKEN_NAMES and i not in eos_ids:
                eos_ids.append(i)
        pad_id = g.get("tokenizer.ggml.padding_token_id")
        unk_id = g.get("tokenizer.ggml.unknown_token_id")
        add_bos = bool(g.get("tokenizer.ggml.add_bos_token", False))
        bos_str = tokens[int(bos_id)] if bos_id is not None else None
        eos_str = tokens[int(eos_id)]

        model_type = hp.arch
        config = {
            "architectures": ["LlamaForCausalLM" if hp.arch == "llama" else "Qwen2ForCausalLM"],
            "model_type": model_type,
            "hidden_size": hp.hidden,
            "intermediate_size": hp.ffn,
            "num_hidden_layers": hp.n_layer,
            "num_attention_heads": hp.n_head,
            "num_key_value_heads": hp.n_kv,
            "head_dim": hp.head_dim,
            "vocab_size": hp.vocab,
            "max_position_embeddings": hp.ctx,
            "rope_theta": hp.rope_theta,
            "rope_scaling": None if hp.rope_linear_factor == 1.0 else {"type": "linear", "factor": hp.rope_linear_factor},
            "rms_norm_eps": hp.eps,
            "hidden_act": "silu",
            "tie_word_embeddings": hp.tied,
            "attention_bias": "blk.0.attn_q.bias" in g.tensors,
            "bos_token_id": None if bos_id is None else int(bos_id),
            "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
            "pad_token_id": None if pad_id is None else int(pad_id),
            "torch_dtype": "float32",
            "use_cache": True,
        }
        write_json(os.path.join(staging, "config.json"), config)
        gen = {"bos_token_id": config["bos_token_id"], "eos_token_id": eos_ids}
        if pad_id is not None:
            gen["pad_token_id"] = int(pad_id)
        write_json(os.path.join(staging, "generation_config.json"), gen)
        tok_cfg = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": add_bos,
            "add_eos_token": False,
            "add_prefix_space": False,
            "bos_token": bos_str,
            "eos_token": eos_str,
            "pad_token": None if pad_id is None else tokens[int(pad_id)],
            "unk_token": None if unk_id is None else tokens[int(unk_id)],
            "additional_special_tokens": [t for t, ty in zip(tokens, types) if ty == TOKEN_CONTROL],
            "model_max_length": hp.ctx,
            "clean_up_tokenization_spaces": False,
            "chat_template": template_str,
        }
        write_json(os.path.join(staging, "tokenizer_config.json"), tok_cfg)

        log("computing checksums")
        checksums = {}
        for f in onnx_files + ["tokenizer.json", "chat_template.jinja", LM_HEAD_FILE]:
            checksums[f] = sha256_file(os.path.join(staging, f))
        manifest = {
            "format": "ngsd-model/1",
            "name": args.name,
            "architecture": hp.arch,
            "dtype": args.variant,
            "files": {
                "onnx": "model.onnx",
                "tokenizer": "tokenizer.json",
                "chat_template": "chat_template.jinja",
                "lm_head": LM_HEAD_FILE,
            },
            "hidden_size": hp.hidden,
            "vocab_size": hp.vocab,
            "num_layers": hp.n_layer,
            "num_kv_heads": hp.n_kv,
            "head_dim": hp.head_dim,
            "max_context": hp.ctx,
            # null when the tokenizer must not prepend a BOS (GGUF add_bos_token = false)
            "bos_token": bos_str if add_bos else None,
            "eos_token": eos_str,
            "eos_token_ids": eos_ids,
            "io": {
                "input_ids": "input_ids",
                "attention_mask": "attention_mask",
                "position_ids": "position_ids",
                "past_key": "past_key_values.{i}.key",
                "past_value": "past_key_values.{i}.value",
                "logits": "logits",
                "hidden": "last_hidden_state",
                "present_key": "present.{i}.key",
                "present_value": "present.{i}.value",
                # layer index -> output holding the residual stream after that layer
                "hidden_layers": {str(i): LAYER_OUTPUT.format(L=i) for i in layers},
            },
            "provenance": {
                "source": source,
                "source_sha256": src_sha,
                "converter": CONVERTER,
                "converter_version": CONVERTER_VERSION,
                "tool_versions": tool_versions(["numpy", "onnx", "gguf", "tokenizers"]),
            },
            "checksums": checksums,
        }
        if args.variant == "q4":
            # the fused graph's inputs: no mask or positions, a shared KV buffer instead
            io = manifest["io"]
            del io["attention_mask"], io["position_ids"]
            io.update({"seqlens_k": "seqlens_k", "total_sequence_length": "total_sequence_length",
                       "logits_to_keep": "logits_to_keep"})
            manifest["provenance"]["weights"] = {"kept_exact": formats, "matmul": "MatMulNBits accuracy_level 4"}
            from fused_graph import GRAPH_VERSION

            manifest["provenance"]["fused_graph_version"] = GRAPH_VERSION
        write_json(os.path.join(staging, "ngsd-model.json"), manifest)
        publish_dir(staging, args.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in onnx_files)
    log(f"done: {args.out} ({size / 2**20:.0f} MiB onnx) in {time.time() - t0:.1f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Convert a llama/qwen2 GGUF to an ngsd ONNX model folder.")
    ap.add_argument("--gguf", required=True, help="input GGUF file")
    ap.add_argument("--out", required=True, help="output folder (replaced atomically)")
    ap.add_argument("--name", required=True, help="model name for the manifest")
    ap.add_argument("--variant", choices=["fp32", "q4"], default="fp32",
                    help="fp32: the standard-ops reference graph; q4: exact GGUF blocks in the fused graph")
    ap.add_argument("--source", help="provenance text (default: GGUF file name)")
    ap.add_argument("--source-sha256", help="sha256 of the source (default: computed from --gguf)")
    ap.add_argument("--layers", help="0-based decoder layers whose residual stream is exported as "
                    "hidden_states.{L}: a comma-separated list, or `none` (default: every multiple of 5 "
                    "below the layer count, plus round(0.75 x layers))")
    args = ap.parse_args(argv)
    try:
        convert(args)
    except ConvertError as e:
        print(f"gguf2onnx: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"gguf2onnx: error: missing Python package ({e}); install xtask/py/requirements.txt", file=sys.stderr)
        return 2
    except MemoryError:
        print("gguf2onnx: error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gguf2onnx: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
