#!/usr/bin/env python3
"""Greedy-decoding baseline with the onnxruntime Python API (KV cache).

    bench_ort.py --model DIR --prompt-ids FILE.json --new-tokens N [--threads 2] [--warmup 1] [--text]
                 [--mode ortvalue|plain]

DIR is an ngsd model folder (ngsd-model.json; an Optimum-style folder with config.json also
works). FILE.json is a JSON list of token ids (the prompt, already chat-templated/tokenized).

What is measured (session load time is excluded and reported separately as load_ms):
  * warm-up (default 1): one prefill + one decode step on the same prompt, not timed, so
    allocator/thread-pool first-use costs do not land in the numbers.
  * prefill_ms: wall time of the prefill run over the whole prompt (empty past) plus the argmax
    that picks new token #1.
  * decode_tok_s: (N - 1) / wall time of the N - 1 following steps; each step feeds the previous
    token alone with the present.* of the last step as past_key_values.*, runs the model and
    takes the argmax of the last position. Generation is forced to exactly N tokens (EOS is
    ignored).
In the default `ortvalue` mode KV tensors stay ORT OrtValues between steps (no numpy round trip); only the last position's
logits are converted to numpy. Sessions use intra_op threads = --threads, inter_op threads = 1,
sequential execution and graph optimization level ALL.

Prints one JSON line:
  {"prefill_ms", "decode_tok_s", "new_tokens", "tokens", "ort_version", ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


class BenchError(Exception):
    pass


def load_layout(model_dir: str) -> dict:
    """Model facts from ngsd-model.json, else from an Optimum-style config.json."""
    man_path = os.path.join(model_dir, "ngsd-model.json")
    if os.path.isfile(man_path):
        with open(man_path, encoding="utf-8") as f:
            m = json.load(f)
        return {
            "onnx": os.path.join(model_dir, m["files"]["onnx"]),
            "tokenizer": os.path.join(model_dir, m["files"]["tokenizer"]),
            "num_layers": m["num_layers"],
            "num_kv_heads": m["num_kv_heads"],
            "head_dim": m["head_dim"],
            "io": m["io"],
        }
    cfg_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise BenchError(f"{model_dir}: neither ngsd-model.json nor config.json found")
    with open(cfg_path, encoding="utf-8") as f:
        c = json.load(f)
    return {
        "onnx": os.path.join(model_dir, "model.onnx"),
        "tokenizer": os.path.join(model_dir, "tokenizer.json"),
        "num_layers": c["num_hidden_layers"],
        "num_kv_heads": c["num_key_value_heads"],
        "head_dim": c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
        "io": {
            "input_ids": "input_ids",
            "attention_mask": "attention_mask",
            "position_ids": "position_ids",
            "past_key": "past_key_values.{i}.key",
            "past_value": "past_key_values.{i}.value",
            "logits": "logits",
            "present_key": "present.{i}.key",
            "present_value": "present.{i}.value",
        },
    }


class Runner:
    def __init__(self, layout: dict, threads: int):
        import onnxruntime as ort

        self.ort = ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not os.path.isfile(layout["onnx"]):
            raise BenchError(f"model file not found: {layout['onnx']}")
        t0 = time.perf_counter()
        self.sess = ort.InferenceSession(layout["onnx"], so, providers=["CPUExecutionProvider"])
        self.load_ms = (time.perf_counter() - t0) * 1e3
        io = layout["io"]
        self.io = io
        n = layout["num_layers"]
        self.past_names = [(io["past_key"].format(i=i), io["past_value"].format(i=i)) for i in range(n)]
        self.present_names = [(io["present_key"].format(i=i), io["present_value"].format(i=i)) for i in range(n)]
        self.input_names = {i.name for i in self.sess.get_inputs()}
        self.output_names = [io["logits"]] + [x for pair in self.present_names for x in pair]
        self.kv_shape = (layout["num_kv_heads"], layout["head_dim"])

    def _ov(self, arr):
        return self.ort.OrtValue.ortvalue_from_numpy(arr)

    def generate_plain(self, prompt, n_new: int):
        """The usual loop: ``session.run(None, feeds)`` with numpy arrays; the KV cache comes back
        as numpy arrays and is fed again as numpy every step. Returns (tokens, prefill_s, decode_s)."""
        import numpy as np

        io = self.io
        n_kv, d = self.kv_shape
        names = [o.name for o in self.sess.get_outputs()]
        logits_i = names.index(io["logits"])
        present_i = [(names.index(k), names.index(v)) for k, v in self.present_names]
        ids = np.asarray([prompt], dtype=np.int64)
        total = ids.shape[1]
        past = [(np.zeros((1, n_kv, 0, d), np.float32), np.zeros((1, n_kv, 0, d), np.float32)) for _ in self.past_names]
        tokens = []
        t0 = time.perf_counter()
        t1 = None
        for step in range(n_new):
            feeds = {io["input_ids"]: ids, io["attention_mask"]: np.ones((1, total), dtype=np.int64)}
            if io["position_ids"] in self.input_names:
                feeds[io["position_ids"]] = np.arange(total - ids.shape[1], total, dtype=np.int64)[None, :]
            for (k, v), (pk, pv) in zip(self.past_names, past):
                feeds[k] = pk
                feeds[v] = pv
            outs = self.sess.run(None, feeds)
            tok = int(np.argmax(outs[logits_i][0, -1]))
            tokens.append(tok)
            past = [(outs[a], outs[b]) for a, b in present_i]
            ids = np.array([[tok]], dtype=np.int64)
            total += 1
            if step == 0:
                t1 = time.perf_counter()
        t2 = time.perf_counter()
        return tokens, t1 - t0, t2 - t1

    def generate(self, prompt, n_new: int):
        """Greedy, forced n_new tokens. Returns (tokens, prefill_s, decode_s)."""
        import numpy as np

        io = self.io
        n_kv, d = self.kv_shape
        empty = np.zeros((1, n_kv, 0, d), dtype=np.float32)
        ids = np.asarray([prompt], dtype=np.int64)
        plen = ids.shape[1]
        feeds = {io["input_ids"]: self._ov(ids), io["attention_mask"]: self._ov(np.ones((1, plen), dtype=np.int64))}
        if io["position_ids"] in self.input_names:
            feeds[io["position_ids"]] = self._ov(np.arange(plen, dtype=np.int64)[None, :])
        empty_ov = self._ov(empty)
        for k, v in self.past_names:
            feeds[k] = empty_ov
            feeds[v] = empty_ov

        tokens = []
        t0 = time.perf_counter()
        outs = self.sess.run_with_ort_values(self.output_names, feeds)
        logits = outs[0].numpy()
        tok = int(np.argmax(logits[0, -1]))
        tokens.append(tok)
        t1 = time.perf_counter()

        total = plen
        # preallocated step buffers (contents rewritten every step)
        step_ids = np.zeros((1, 1), dtype=np.int64)
        step_pos = np.zeros((1, 1), dtype=np.int64)
        for _ in range(n_new - 1):
            step_ids[0, 0] = tok
            step_pos[0, 0] = total
            total += 1
            feeds = {
                io["input_ids"]: self._ov(step_ids),
                io["attention_mask"]: self._ov(np.ones((1, total), dtype=np.int64)),
            }
            if io["position_ids"] in self.input_names:
                feeds[io["position_ids"]] = self._ov(step_pos)
            for j, (k, v) in enumerate(self.past_names):
                feeds[k] = outs[1 + 2 * j]
                feeds[v] = outs[2 + 2 * j]
            outs = self.sess.run_with_ort_values(self.output_names, feeds)
            tok = int(np.argmax(outs[0].numpy()[0, -1]))
            tokens.append(tok)
        t2 = time.perf_counter()
        return tokens, t1 - t0, t2 - t1


class FusedRunner:
    """Greedy decoding of a q4 (fused graph) package with a plain onnxruntime loop, independent of
    ngsd: one KV buffer per layer and kind, [1, kv heads, capacity, head dim], bound as both
    past_key_values.* and present.* (GroupQueryAttention writes the new rows in place); each run
    feeds seqlens_k = total − 1, total_sequence_length and logits_to_keep = 1."""

    def __init__(self, layout: dict, threads: int):
        import onnxruntime as ort

        self.ort, self.layout = ort, layout
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(layout["onnx"], so, providers=["CPUExecutionProvider"])

    def _run(self, kv, ids, past: int):
        """One forward pass over `ids` after `past` cached tokens; the last row's logits."""
        import numpy as np

        io, total = self.sess.io_binding(), past + len(ids)
        io.bind_cpu_input("input_ids", np.asarray([ids], np.int64))
        io.bind_cpu_input("seqlens_k", np.asarray([total - 1], np.int32))
        io.bind_cpu_input("total_sequence_length", np.asarray(total, np.int32))
        io.bind_cpu_input("logits_to_keep", np.asarray([1], np.int64))
        io.bind_output("logits")
        for i in range(self.layout["num_layers"]):
            for j, kind in enumerate(("key", "value")):
                io.bind_ortvalue_input(f"past_key_values.{i}.{kind}", kv[2 * i + j])
                io.bind_ortvalue_output(f"present.{i}.{kind}", kv[2 * i + j])
        self.sess.run_with_iobinding(io)
        return io.get_outputs()[0].numpy()[0, -1]

    def generate_plain(self, prompt, n_new: int):
        """Greedy, forced n_new tokens: the prompt in one pass, then one token per pass.
        Returns (tokens, prefill_s, decode_s)."""
        import numpy as np

        shape = (1, self.layout["num_kv_heads"], len(prompt) + n_new, self.layout["head_dim"])
        kv = [self.ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32))
              for _ in range(2 * self.layout["num_layers"])]
        t0 = time.perf_counter()
        tokens = [int(np.argmax(self._run(kv, list(prompt), 0)))]
        t1 = time.perf_counter()
        for _ in range(n_new - 1):
            tokens.append(int(np.argmax(self._run(kv, [tokens[-1]], len(prompt) + len(tokens) - 1))))
        return tokens, t1 - t0, time.perf_counter() - t1


def runner_for(layout: dict, threads: int):
    """The plain loop for the package's layout: FusedRunner for q4 (a shared KV buffer fed through
    seqlens_k), Runner for Optimum-style decoders (fp32, int8)."""
    return FusedRunner(layout, threads) if "seqlens_k" in layout["io"] else Runner(layout, threads)


def read_prompt_ids(path: str):
    if not os.path.isfile(path):
        raise BenchError(f"prompt ids file not found: {path}")
    with open(path, encoding="utf-8") as f:
        ids = json.load(f)
    if not isinstance(ids, list) or not ids or not all(isinstance(x, int) and not isinstance(x, bool) for x in ids):
        raise BenchError(f"{path}: expected a non-empty JSON list of integers")
    return ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="onnxruntime greedy KV-cache decode benchmark")
    ap.add_argument("--model", required=True, help="model folder (ngsd-model.json)")
    ap.add_argument("--prompt-ids", required=True, help="JSON list of prompt token ids")
    ap.add_argument("--new-tokens", type=int, required=True, help="exact number of tokens to generate (>= 1)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up generations (default 1)")
    ap.add_argument("--text", action="store_true", help="also decode the generated text (adds \"text\")")
    ap.add_argument(
        "--mode",
        choices=["ortvalue", "plain"],
        default="ortvalue",
        help="ortvalue: KV cache kept in OrtValues (tuned); plain: session.run with numpy feeds, "
        "the loop most Python code uses (default ortvalue)",
    )
    args = ap.parse_args(argv)
    try:
        if args.new_tokens < 1:
            raise BenchError("--new-tokens must be >= 1")
        if not os.path.isdir(args.model):
            raise BenchError(f"model folder not found: {args.model}")
        import numpy as np
        import onnxruntime as ort

        prompt = read_prompt_ids(args.prompt_ids)
        layout = load_layout(args.model)
        runner = Runner(layout, args.threads)
        gen = runner.generate_plain if args.mode == "plain" else runner.generate
        for _ in range(max(0, args.warmup)):
            gen(prompt, min(2, args.new_tokens))
        tokens, prefill_s, decode_s = gen(prompt, args.new_tokens)
        res = {
            "prefill_ms": round(prefill_s * 1e3, 3),
            "decode_tok_s": round((args.new_tokens - 1) / decode_s, 3) if args.new_tokens > 1 and decode_s > 0 else None,
            "new_tokens": args.new_tokens,
            "tokens": tokens,
            "ort_version": ort.__version__,
            "runtime": "onnxruntime-python",
            "mode": args.mode,
            "prompt_tokens": len(prompt),
            "threads": args.threads,
            "load_ms": round(runner.load_ms, 1),
            "numpy_version": np.__version__,
        }
        if args.text:
            from tokenizers import Tokenizer

            tk = Tokenizer.from_file(layout["tokenizer"])
            res["text"] = tk.decode(tokens, skip_special_tokens=False)
    except BenchError as e:
        print(f"bench_ort: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
