#!/usr/bin/env python3
"""Numerical checks for a converted ngsd model folder (run from the xtask venv).

    test_export.py --model DIR [--gguf PATH] [--prompt-ids FILE.json] [--tol 1e-3]

Checks (each prints one line, exit status 1 if any fails):
  1. reference: with --gguf, a plain numpy forward pass over the *original* GGUF weights
     (llama.cpp-style interleaved RoPE on the still-permuted q/k rows) gives the same logits
     as the ONNX model (validates the q/k un-permutation, RoPE, GQA and the mask).
  2. cache: prefill of the first half of the prompt, then one token per step with the KV
     cache, gives the same logits and last_hidden_state as one full no-cache run.
  3. padding: a batch of two with left padding has no NaN/Inf anywhere and its real positions
     match the unpadded single-row run.
  4. outputs: logits == last_hidden_state @ lm_head weight (last_hidden_state feeds the head).
  5. layers: with --gguf, every `hidden_states.{L}` output the manifest lists equals the numpy
     pass's residual stream after layer L (tolerance relative to the residual's largest value).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

DEFAULT_IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
               19712, 8182, 2, 198, 1, 4093, 198, 1780, 359, 1296, 5608, 327, 9286, 2458, 47, 2, 198, 1,
               520, 9531, 198]


def session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class Model:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "ngsd-model.json"), encoding="utf-8") as f:
            self.m = json.load(f)
        self.sess = session(os.path.join(model_dir, self.m["files"]["onnx"]))
        self.inputs = {i.name for i in self.sess.get_inputs()}
        self.n = self.m["num_layers"]
        self.kv = (self.m["num_kv_heads"], self.m["head_dim"])

    def run(self, ids, mask, pos, past=None):
        ids = np.asarray(ids, dtype=np.int64)
        b = ids.shape[0]
        feeds = {"input_ids": ids, "attention_mask": np.asarray(mask, dtype=np.int64)}
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.asarray(pos, dtype=np.int64)
        for i in range(self.n):
            for j, kind in enumerate(("key", "value")):
                if past is None:
                    feeds[f"past_key_values.{i}.{kind}"] = np.zeros((b, self.kv[0], 0, self.kv[1]), np.float32)
                else:
                    feeds[f"past_key_values.{i}.{kind}"] = past[2 * i + j]
        names = ["logits", "last_hidden_state"] + [f"present.{i}.{k}" for i in range(self.n) for k in ("key", "value")]
        outs = self.sess.run(names, feeds)
        return outs[0], outs[1], outs[2:]

    def layer_outputs(self, ids, names):
        """The named outputs of one no-cache pass over `ids`."""
        s = len(ids)
        feeds = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, s), np.int64)}
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(s, dtype=np.int64)[None]
        for i in range(self.n):
            for kind in ("key", "value"):
                feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, self.kv[0], 0, self.kv[1]), np.float32)
        return self.sess.run(names, feeds)


def numpy_reference(gguf_path, ids):
    """Independent llama forward pass on the raw GGUF tensors (interleaved-pair RoPE)."""
    import gguf

    r = gguf.GGUFReader(gguf_path)
    t = {x.name: x for x in r.tensors}
    f = r.fields

    def val(k):
        return f[k].contents()

    arch = val("general.architecture")

    def w(name):
        x = t[name]
        return gguf.quants.dequantize(x.data, x.tensor_type).astype(np.float32).reshape(tuple(int(s) for s in reversed(x.shape)))

    L = int(val(f"{arch}.block_count"))
    nh = int(val(f"{arch}.attention.head_count"))
    nkv = int(val(f"{arch}.attention.head_count_kv"))
    H = int(val(f"{arch}.embedding_length"))
    d = H // nh
    eps = float(val(f"{arch}.attention.layer_norm_rms_epsilon"))
    theta = float(val(f"{arch}.rope.freq_base"))
    s = len(ids)
    emb = w("token_embd.weight")
    h = emb[np.asarray(ids)].astype(np.float64)
    pos = np.arange(s, dtype=np.float64)
    ang = pos[:, None] * (theta ** (-np.arange(0, d, 2, dtype=np.float64) / d))[None, :]  # [s, d/2]
    cos, sin = np.cos(ang), np.sin(ang)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x):  # x [s, heads, d]
        if arch == "llama":  # llama.cpp "normal" rope: adjacent pairs
            a, b = x[..., 0::2], x[..., 1::2]
            c, sn = cos[:, None, :], sin[:, None, :]
            out = np.empty_like(x)
            out[..., 0::2] = a * c - b * sn
            out[..., 1::2] = a * sn + b * c
            return out
        a, b = x[..., : d // 2], x[..., d // 2:]  # neox
        c, sn = cos[:, None, :], sin[:, None, :]
        return np.concatenate([a * c - b * sn, a * sn + b * c], -1)

    causal = np.tril(np.ones((s, s), dtype=bool))
    residuals = {}
    for i in range(L):
        p = f"blk.{i}."
        x = rms(h, w(p + "attn_norm.weight"))
        q = x @ w(p + "attn_q.weight").T
        k = x @ w(p + "attn_k.weight").T
        v = x @ w(p + "attn_v.weight").T
        if p + "attn_q.bias" in t:
            q, k, v = q + w(p + "attn_q.bias"), k + w(p + "attn_k.bias"), v + w(p + "attn_v.bias")
        q = rope(q.reshape(s, nh, d))
        k = rope(k.reshape(s, nkv, d))
        v = v.reshape(s, nkv, d)
        rep = nh // nkv
        out = np.zeros((s, nh, d))
        for hd in range(nh):
            kv = hd // rep
            sc = q[:, hd] @ k[:, kv].T / np.sqrt(d)
            sc = np.where(causal, sc, -np.inf)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            out[:, hd] = sc @ v[:, kv]
        h = h + out.reshape(s, H) @ w(p + "attn_output.weight").T
        x = rms(h, w(p + "ffn_norm.weight"))
        g = x @ w(p + "ffn_gate.weight").T
        u = x @ w(p + "ffn_up.weight").T
        h = h + ((g / (1 + np.exp(-g))) * u) @ w(p + "ffn_down.weight").T
        residuals[i] = h
    hs = rms(h, w("output_norm.weight"))
    head = w("output.weight") if "output.weight" in t else emb
    return hs @ head.T, hs, residuals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="numerical checks for an ngsd model folder")
    ap.add_argument("--model", required=True)
    ap.add_argument("--gguf")
    ap.add_argument("--prompt-ids")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args(argv)
    ids = DEFAULT_IDS
    if args.prompt_ids:
        with open(args.prompt_ids, encoding="utf-8") as f:
            ids = json.load(f)
    m = Model(args.model)
    s = len(ids)
    ok = True

    def report(name, err, tol):
        nonlocal ok
        good = bool(np.isfinite(err)) and err <= tol
        ok &= good
        print(f"{'PASS' if good else 'FAIL'} {name}: max abs diff {err:.3g} (tol {tol:g})")

    full_logits, full_hidden, _ = m.run([ids], np.ones((1, s)), [np.arange(s)])

    if args.gguf:
        ref_logits, ref_hidden, ref_residuals = numpy_reference(args.gguf, ids)
        report("reference logits vs numpy-on-GGUF", float(np.abs(full_logits[0] - ref_logits).max()), args.tol)
        agree = float((full_logits[0].argmax(-1) == ref_logits.argmax(-1)).mean())
        print(f"{'PASS' if agree == 1.0 else 'FAIL'} reference argmax agreement {agree:.3f}")
        ok &= agree == 1.0
        report("reference last_hidden_state", float(np.abs(full_hidden[0] - ref_hidden).max()), args.tol)
        layers = {int(k): v for k, v in m.m["io"].get("hidden_layers", {}).items()}
        print(f"INFO the manifest lists {len(layers)} layer outputs")
        if layers:
            got = m.layer_outputs(ids, list(layers.values()))
            for (layer, name), value in zip(layers.items(), got):
                ref = ref_residuals[layer]
                scale = max(1.0, float(np.abs(ref).max()))
                report(f"reference {name} (scale {scale:.3g})", float(np.abs(value[0] - ref).max()) / scale, args.tol)

    # 2. incremental with cache
    half = s // 2
    logits, hidden, past = m.run([ids[:half]], np.ones((1, half)), [np.arange(half)])
    step_logits, step_hidden = [logits[0]], [hidden[0]]
    for t in range(half, s):
        logits, hidden, past = m.run([[ids[t]]], np.ones((1, t + 1)), [[t]], past)
        step_logits.append(logits[0])
        step_hidden.append(hidden[0])
    inc_logits = np.concatenate(step_logits, 0)
    inc_hidden = np.concatenate(step_hidden, 0)
    report("cached steps vs full recompute (logits)", float(np.abs(inc_logits - full_logits[0]).max()), args.tol)
    report("cached steps vs full recompute (last_hidden_state)", float(np.abs(inc_hidden - full_hidden[0]).max()), args.tol)

    # 3. left padding in a batch of two
    pad = 5
    short = ids[pad:]
    b_ids = np.array([ids, [2] * pad + short], dtype=np.int64)
    b_mask = np.array([[1] * s, [0] * pad + [1] * len(short)], dtype=np.int64)
    b_pos = np.array([np.arange(s), np.concatenate([np.zeros(pad), np.arange(len(short))])], dtype=np.int64)
    bl, bh, bpast = m.run(b_ids, b_mask, b_pos)
    finite = all(np.isfinite(x).all() for x in [bl, bh] + list(bpast))
    print(f"{'PASS' if finite else 'FAIL'} padded batch: all outputs finite")
    ok &= finite
    sl, _, _ = m.run([short], np.ones((1, len(short))), [np.arange(len(short))])
    report("padded row vs unpadded run (logits)", float(np.abs(bl[1, pad:] - sl[0]).max()), args.tol)
    report("row 0 of batch vs single run (logits)", float(np.abs(bl[0] - full_logits[0]).max()), args.tol)
    # one cached step on the padded batch
    nxt = bl[:, -1].argmax(-1)
    st_mask = np.concatenate([b_mask, np.ones((2, 1), np.int64)], 1)
    st_pos = np.array([[s], [len(short)]], dtype=np.int64)
    stl, _, _ = m.run(nxt[:, None], st_mask, st_pos, bpast)
    sl2, _, _ = m.run([short + [int(nxt[1])]], np.ones((1, len(short) + 1)), [np.arange(len(short) + 1)])
    report("padded batch cached step vs unpadded recompute", float(np.abs(stl[1, 0] - sl2[0, -1]).max()), args.tol)

    # 4. logits are the LM head applied to last_hidden_state
    import onnx

    model_path = os.path.join(args.model, m.m["files"]["onnx"])
    proto = onnx.load(model_path, load_external_data=False)
    head = next(n for n in proto.graph.node if "logits" in n.output)
    print(f"INFO logits produced by {head.op_type} '{head.name}' from '{head.input[0]}'")
    if head.op_type == "MatMul":
        proto = onnx.load(model_path)
        w = next(onnx.numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == head.input[1])
        report("logits == last_hidden_state @ W", float(np.abs(full_hidden[0] @ w - full_logits[0]).max()), args.tol)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
