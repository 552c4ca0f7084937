#!/usr/bin/env python3
"""Checks of a fused (q4) ngsd model folder against its GGUF and the fp32 reference package.

    test_fused.py --model Q4_DIR --gguf PATH --reference FP32_DIR [--prompt-ids FILE.json]

1. exact weights: every MatMulNBits weight of the graph, dequantized by the op's own formula
   scale · (q − zero point) (+ the min term, stored as 32·M), and the embedding table
   (GatherBlockQuantized blocks or a float Gather), equal gguf.quants.dequantize of the source tensor bit for bit (q/k rows in the
   un-permuted order);
2. the same through ONNX Runtime's kernel, for one matrix of each block format in the GGUF (and
   a packed QKV): rows of the identity matrix at fp32 activations (accuracy_level 0 and 1) give
   the GGUF values bit for bit, and at int8 activations (accuracy_level 4, what the graph uses)
   random activations give the float64 product within 2 % (the int8 rounding is about 0.5 %);
3. the graph's maths: a copy computing with fp32 activations (accuracy_level 1) matches the fp32
   reference package (logits, last_hidden_state, every hidden_states.{L}), and its cached steps
   over the shared KV buffer match a full pass.
Each check prints one line; exit status 1 if any fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fused_graph import BlockWeight, concat_rows, block_weight, qk_row_permutation  # noqa: E402


def bits_equal(a, b) -> bool:
    """Same shape and the same float32 numbers, bit for bit except the sign of zero: gguf gives
    d·0 = −0.0 for a Q4_0/Q5_0 element at its zero point when d < 0, where a block packed beside
    rows with a min term (or ONNX Runtime's kernel) gives +0.0, the same number in any product."""
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    a, b = np.where(a == 0, np.float32(0), a), np.where(b == 0, np.float32(0), b)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def unpack(qweight, n, k, bits):
    if bits == 8:
        return qweight.reshape(n, k)
    lo, hi = qweight & 0x0F, qweight >> 4
    return np.stack([lo, hi], axis=-1).reshape(n, k)


def graph_weights(model):
    """{prefix: float32 [N, K]} dequantized from each MatMulNBits node's initializers."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def array(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producers[name]  # the tied head reshapes the embedding table
        assert node.op_type == "Reshape", node.op_type
        return array(node.input[0])

    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        n, k, bits, block = attrs["N"], attrs["K"], attrs["bits"], attrs["block_size"]
        q = unpack(array(node.input[1]), n, k, bits).astype(np.float32)
        scales = array(node.input[2]).reshape(n, k // block)
        if len(node.input) > 3 and node.input[3]:
            zp = unpack(array(node.input[3]), n, -1, bits)[:, : k // block]
        else:
            zp = np.full((n, k // block), 1 << (bits - 1), np.uint8)
        w = scales[:, :, None] * (q.reshape(n, k // block, block) - zp[:, :, None].astype(np.float32))
        prefix = node.name.rsplit("/", 1)[0]
        if f"{prefix}.block_mins_t" in inits:  # block · min, for the block mean of the activations
            w = w + array(f"{prefix}.block_mins_t").T[:, :, None] / np.float32(block)
        out[prefix] = w.reshape(n, k)
    return merge_parts(out)


def merge_parts(weights):
    """Products kept apart because their block formats differ (`{prefix}_0`, `{prefix}_1`, ..)
    stacked back into `{prefix}`, the rows a packed product would have."""
    out, parts = {}, {}
    for name, w in weights.items():
        base, _, index = name.rpartition("_")
        if index.isdigit() and base.endswith("_proj"):
            parts.setdefault(base, {})[int(index)] = w
        else:
            out[name] = w
    for base, ws in parts.items():
        out[base] = np.concatenate([ws[i] for i in sorted(ws)])
    return out


def dequantized(t):
    """float32 [N, K] of a GGUF matrix by gguf.quants (the reference the graph must equal)."""
    import gguf

    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(int(t.shape[1]), int(t.shape[0]))


def expected_weights(g, hp):
    """{prefix: float32 [N, K]} from the GGUF, as the converter lays the rows out."""

    def deq(name, heads=None):
        w = dequantized(g[name])
        return w[qk_row_permutation(w.shape[0], heads)] if heads else w

    permute = hp["llama"]
    out = {}
    for i in range(hp["layers"]):
        p, b = f"/model/layers.{i}", f"blk.{i}"
        out[f"{p}/attn/qkv_proj"] = np.concatenate([
            deq(f"{b}.attn_q.weight", hp["heads"] if permute else None),
            deq(f"{b}.attn_k.weight", hp["kv_heads"] if permute else None),
            deq(f"{b}.attn_v.weight")])
        out[f"{p}/attn/o_proj"] = deq(f"{b}.attn_output.weight")
        out[f"{p}/mlp/gate_up_proj"] = np.concatenate([deq(f"{b}.ffn_gate.weight"), deq(f"{b}.ffn_up.weight")])
        out[f"{p}/mlp/down_proj"] = deq(f"{b}.ffn_down.weight")
    out["/lm_head"] = deq("output.weight" if "output.weight" in g else "token_embd.weight")
    return out


def matmul_nbits(qw: BlockWeight, level: int):
    """A one-op ONNX Runtime session: Y = A · (scale · (q − zero))ᵀ, MatMulNBits at `level`
    (0: unset, 1: fp32 activations, 4: int8 activations); the graph's min term is not in it."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(qw.packed(), "B"), numpy_helper.from_array(qw.scales, "S")]
    ins = ["A", "B", "S"]
    zp = qw.zero_points()
    if zp is not None:
        inits.append(numpy_helper.from_array(zp, "Z"))
        ins.append("Z")
    nodes = [helper.make_node("MatMulNBits", ins, ["Y"], domain="com.microsoft", K=qw.k, N=qw.n, bits=qw.bits,
                              block_size=qw.block, accuracy_level=level)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, qw.k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, qw.n])], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def kernel_exact(qw: BlockWeight, expected, rows, level: int) -> bool:
    """MatMulNBits times identity rows -> the weight's columns (plus the min term as the graph adds
    it), bit for bit; meaningful at fp32 activations (levels 0 and 1). Zeros are compared without
    their sign: a product summed from +0 gives +0 where gguf's d·0 with a negative d is −0."""
    a = np.eye(qw.k, dtype=np.float32)[rows]
    y = matmul_nbits(qw, level).run(None, {"A": a})[0]
    if qw.mins is not None:
        y = y + qw.mins[:, np.asarray(rows) // qw.block].T
    return bits_equal(y + np.float32(0), expected[:, rows].T + np.float32(0))


def kernel_error(qw: BlockWeight, expected, rng, level: int = 4) -> float:
    """Relative error (Frobenius) of MatMulNBits plus the min term on random activations against
    the float64 product with the expected weight. At level 4 the activations are rounded to int8
    per block (about 5e-3 for every format here); a kernel that misreads a block size, zero point
    or scale sign is off by order 1."""
    a = rng.standard_normal((8, qw.k)).astype(np.float32)
    y = matmul_nbits(qw, level).run(None, {"A": a})[0].astype(np.float64)
    if qw.mins is not None:  # the graph's min term: block sums times the mins
        y += a.reshape(8, -1, qw.block).sum(-1, dtype=np.float64) @ qw.mins.T.astype(np.float64)
    ref = a.astype(np.float64) @ expected.T.astype(np.float64)
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def format_samples(g):
    """{GGUF type: tensor name}: the first layer matrix of each quantized type (else the LM head or
    embedding), one kernel check per block format the graph uses."""
    out = {}
    for name in sorted(g, key=lambda n: (not n.startswith("blk."), n)):
        t = g[name]
        if len(t.shape) == 2 and t.tensor_type.name not in ("F32", "F16", "BF16"):
            out.setdefault(t.tensor_type.name, name)
    return out


def packed_qkv(g, hp, head_dim, layer):
    """Layer `layer`'s q, k, v as the graph packs them (q/k rows un-permuted for llama), or None
    when their formats keep them apart."""
    def part(kind, heads):
        w = block_weight(g[f"blk.{layer}.attn_{kind}.weight"])
        return w.rows(qk_row_permutation(heads * head_dim, heads)) if hp["llama"] and heads else w

    return concat_rows([part("q", hp["heads"]), part("k", hp["kv_heads"]), part("v", None)])


def check_kernels(check, g, hp, head_dim, want):
    """Step 2: ONNX Runtime's MatMulNBits on each block format of the GGUF and on a packed QKV."""
    rng = np.random.default_rng(0)
    for kind, name in format_samples(g).items():
        qw, expected = block_weight(g[name]), dequantized(g[name])
        n = min(48, qw.k)
        rows = sorted(rng.choice(qw.k, size=n, replace=False).tolist())
        what = f"{name} ({kind}: {qw.bits}-bit, block {qw.block})"
        check(f"MatMulNBits reproduces {what} bit for bit at accuracy levels 0 and 1 ({n} input rows)",
              all(kernel_exact(qw, expected, rows, level) for level in (0, 1)))
        err = kernel_error(qw, expected, rng)
        check(f"MatMulNBits at accuracy level 4 (int8 activations) on {what}: relative error <= 0.02",
              err <= 0.02, f"{err:.2e}")
    layer = min(3, hp["layers"] - 1)
    prefix = f"/model/layers.{layer}/attn/qkv_proj"
    qw = packed_qkv(g, hp, head_dim, layer)
    if qw is not None:
        n = min(48, qw.k)
        rows = sorted(rng.choice(qw.k, size=n, replace=False).tolist())
        check(f"MatMulNBits reproduces the packed {prefix} bit for bit ({n} input rows)",
              kernel_exact(qw, want[prefix], rows, 1))


def embedding_table(model):
    """float32 [V, H] the graph gathers token embeddings from, and by which op."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    if "model.embed_tokens.weight" in inits:
        return numpy_helper.to_array(inits["model.embed_tokens.weight"]), "Gather"
    table = numpy_helper.to_array(inits["model.embed_tokens.qweight"]).astype(np.float32) - 128
    scales = numpy_helper.to_array(inits["model.embed_tokens.scales"])
    emb = (scales[:, :, None] * table.reshape(table.shape[0], scales.shape[1], -1)).reshape(table.shape)
    return emb, "GatherBlockQuantized"


def patched_fp32_activations(src, dst):
    import onnx

    m = onnx.load(src)
    for n in m.graph.node:
        for a in n.attribute:
            if n.op_type == "MatMulNBits" and a.name == "accuracy_level":
                a.i = 1
    onnx.save(m, dst)


class Fused:
    def __init__(self, path, man, cap):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        so.log_severity_level = 3
        self.s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.man, self.cap = man, cap
        self.outs = ["logits", "last_hidden_state"] + list(man["io"]["hidden_layers"].values())

    def cache(self):
        import onnxruntime as ort

        shape = (1, self.man["num_kv_heads"], self.cap, self.man["head_dim"])
        return [ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32)) for _ in range(2 * self.man["num_layers"])]

    def run(self, kv, ids, past, keep):
        io = self.s.io_binding()
        total = past + len(ids)
        io.bind_cpu_input("input_ids", np.asarray([ids], np.int64))
        io.bind_cpu_input("seqlens_k", np.asarray([total - 1], np.int32))
        io.bind_cpu_input("total_sequence_length", np.asarray(total, np.int32))
        io.bind_cpu_input("logits_to_keep", np.asarray([keep], np.int64))
        for name in self.outs:
            io.bind_output(name)
        for i in range(self.man["num_layers"]):
            for j, kind in enumerate(("key", "value")):
                io.bind_ortvalue_input(f"past_key_values.{i}.{kind}", kv[2 * i + j])
                io.bind_ortvalue_output(f"present.{i}.{kind}", kv[2 * i + j])
        self.s.run_with_iobinding(io)
        return [o.numpy() for o in io.get_outputs()[: len(self.outs)]]


def reference_run(ref_dir, ids, names):
    import onnxruntime as ort

    man = json.load(open(os.path.join(ref_dir, "ngsd-model.json"), encoding="utf-8"))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    s = ort.InferenceSession(os.path.join(ref_dir, man["files"]["onnx"]), so, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
             "position_ids": np.arange(len(ids))[None]}
    for i in range(man["num_layers"]):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, man["num_kv_heads"], 0, man["head_dim"]), np.float32)
    return s.run(names, feeds)


def main(argv=None) -> int:
    import gguf
    import onnx

    ap = argparse.ArgumentParser(description="checks of a fused (q4) ngsd model folder")
    ap.add_argument("--model", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--reference", required=True, help="the fp32 package of the same GGUF")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--prompt-ids", help="JSON list of token ids [default: a SmolLM2 chat prompt]")
    args = ap.parse_args(argv)
    ok = True

    def check(name, good, extra=""):
        nonlocal ok
        ok &= bool(good)
        print(f"{'PASS' if good else 'FAIL'} {name}{': ' + extra if extra else ''}", flush=True)

    man = json.load(open(os.path.join(args.model, "ngsd-model.json"), encoding="utf-8"))
    onnx_path = os.path.join(args.model, man["files"]["onnx"])
    reader = gguf.GGUFReader(args.gguf)
    g = {t.name: t for t in reader.tensors}
    arch = reader.fields["general.architecture"].contents()
    hp = {"llama": arch == "llama", "layers": man["num_layers"], "kv_heads": man["num_kv_heads"],
          "heads": int(reader.fields[f"{arch}.attention.head_count"].contents())}

    # 1. exact weights, by the op's formula
    model = onnx.load(onnx_path)
    got, want = graph_weights(model), expected_weights(g, hp)
    check("every GGUF matrix is a MatMulNBits weight", sorted(got) == sorted(want), f"{len(got)} products")
    bad = [p for p in want if p in got and not bits_equal(got[p], want[p])]
    check("dequantized graph weights == gguf dequantize, bit for bit", not bad and len(got) == len(want),
          f"{len(want) - len(bad)} of {len(want)} equal" + (f"; first differing: {bad[0]}" if bad else ""))
    emb, how = embedding_table(model)
    check(f"embedding table ({how}) == gguf dequantize, bit for bit", bits_equal(emb, dequantized(g["token_embd.weight"])))
    del model

    # 2. through ONNX Runtime's own kernel
    check_kernels(check, g, hp, man["head_dim"], want)

    # 3. the graph's maths at fp32 activations
    ids = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
           8182, 2, 198, 1, 4093, 198, 1780, 359, 1296, 5608, 327, 9286, 2458, 47, 2, 198, 1, 520, 9531, 198]
    if args.prompt_ids:
        with open(args.prompt_ids, encoding="utf-8") as fh:
            ids = json.load(fh)
    with tempfile.TemporaryDirectory() as tmp:
        exact = os.path.join(tmp, "model.onnx")
        patched_fp32_activations(onnx_path, exact)
        f = Fused(exact, man, max(64, len(ids)))
        full = f.run(f.cache(), ids, 0, len(ids))
        ref = reference_run(args.reference, ids, f.outs)
        for name, a, b in zip(f.outs, full, ref):
            scale = max(1.0, float(np.abs(b).max()))
            err = float(np.abs(a - b).max()) / scale
            check(f"fp32 activations: {name} == fp32 reference", err <= args.tol, f"max diff / scale {err:.2e}")
        kv = f.cache()
        half = len(ids) // 2
        rows = [f.run(kv, ids[:half], 0, half)[0][0]]
        for t in range(half, len(ids)):
            rows.append(f.run(kv, [ids[t]], t, 1)[0][0])
        inc = np.concatenate(rows)
        err = float(np.abs(inc - full[0][0]).max())
        check("fp32 activations: cached steps over the shared buffer == full pass (logits)", err <= args.tol,
              f"max diff {err:.2e}")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
