#!/usr/bin/env python3
"""What batching the fused q4 graph would give, measured with onnxruntime alone.

    fused_batch.py --model Q4_DIR [--batch 1,4,16,32] [--steps 32] [--threads 2]

The fused graph (fused_graph.py) declares every input with a batch dimension: `seqlens_k [b]`
gives each row its own length in a shared `[b, kv_heads, C, head_dim]` cache. ngsd-runtime
does not batch it yet; this script measures what it would give:

  * speed: for each B, B rows of 40 random tokens are prefilled together, then `--steps`
    greedy decode steps of all rows run with the cache bound in place (IO binding, past and
    present on the same buffer, as ngsd-runtime binds it). Prints one JSON line per B with the
    aggregate decode tok/s.
  * agreement: two prompts of different lengths are decoded alone, then prefilled alone,
    copied into a two-row cache and decoded together with per-row `seqlens_k`. Prints the
    greedy tokens of both ways and the largest logit difference up to the first token where
    they part.
  * kernel paths: one prompt in 1, 2, 4 and 8 identical rows, prefilled together, then one
    decode step. Prints the largest logit difference of each against 2 rows, for the prefill
    and for the step: it shows whether a difference comes from the batch (rows, lengths) or
    from ONNX Runtime taking another kernel for a single row.
  * admissions prefilled together: prompts sharing a head, each prefilled alone after a copy
    of the head's rows (as `Model::prefill_prompt` does), against all of them in one pass of
    S = the longest rest: row b feeds its last S tokens after its first len_b - S positions
    (taken from the head, whose last tokens it recomputes), so every row's S tokens are real
    and `logits_to_keep` 1 gives each row's last position. Prints the largest logit
    difference and both ways' times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

CAPACITY = 256


class Fused:
    """A session over a q4 package and its cache geometry."""

    def __init__(self, model: Path, threads: int):
        manifest = json.loads((model / "ngsd-model.json").read_text())
        self.layers = manifest["num_layers"]
        self.heads = manifest["num_kv_heads"]
        self.dim = manifest["head_dim"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model / manifest["files"]["onnx"]), so,
                                            providers=["CPUExecutionProvider"])
        self.read_back = [o.name for o in self.session.get_outputs() if not o.name.startswith("present.")]

    def cache(self, rows: int) -> tuple[ort.IOBinding, dict]:
        """A binding whose past and present of every layer are one zeroed buffer."""
        io = self.session.io_binding()
        # the outputs read back first, so that the logits are output 0 of every run
        for name in self.read_back:
            io.bind_output(name)
        buffers = {}
        for i in range(self.layers):
            for kind in ("key", "value"):
                v = ort.OrtValue.ortvalue_from_numpy(np.zeros((rows, self.heads, CAPACITY, self.dim), np.float32))
                buffers[(i, kind)] = v
                io.bind_ortvalue_input(f"past_key_values.{i}.{kind}", v)
                io.bind_ortvalue_output(f"present.{i}.{kind}", v)
        return io, buffers

    def step(self, io: ort.IOBinding, ids: list[list[int]], lens: list[int]) -> np.ndarray:
        """Feeds `ids` (equal length per row) after `lens` positions; the last logits per row."""
        n = len(ids[0])
        io.bind_cpu_input("input_ids", np.array(ids, dtype=np.int64))
        io.bind_cpu_input("seqlens_k", np.array([l + n - 1 for l in lens], dtype=np.int32))
        io.bind_cpu_input("total_sequence_length", np.array(max(lens) + n, dtype=np.int32))
        io.bind_cpu_input("logits_to_keep", np.array([1], dtype=np.int64))
        for name in self.read_back:
            io.bind_output(name)
        self.session.run_with_iobinding(io)
        return io.get_outputs()[0].numpy()[:, -1]


def speed(f: Fused, rows: int, steps: int) -> dict:
    rng = np.random.default_rng(rows)
    io, _ = f.cache(rows)
    prompts = [[int(x) for x in rng.integers(100, 10000, size=40)] for _ in range(rows)]
    logits = f.step(io, prompts, [0] * rows)
    lens = [40] * rows
    t = time.perf_counter()
    for _ in range(steps):
        logits = f.step(io, [[int(r.argmax())] for r in logits], lens)
        lens = [l + 1 for l in lens]
    dt = time.perf_counter() - t
    return {"batch": rows, "tok_s": rows * steps / dt, "ms_per_step": dt / steps * 1e3}


def agreement(f: Fused, steps: int) -> dict:
    prompts = [[1, 504, 3458, 314, 2994, 28, 17, 30, 2], [1, 1111, 2222, 33, 44, 555, 66, 7, 8, 99, 100, 101]]
    alone = []
    for p in prompts:
        io, _ = f.cache(1)
        logits = f.step(io, [p], [0])[0]
        rows, n = [], len(p)
        for _ in range(steps):
            logits = f.step(io, [[int(logits.argmax())]], [n])[0]
            n += 1
            rows.append(logits)
        alone.append(rows)
    io, buffers = f.cache(2)
    lens, logits = [], []
    for b, p in enumerate(prompts):
        one, own = f.cache(1)
        logits.append(f.step(one, [p], [0])[0])
        for key, v in own.items():
            whole = buffers[key].numpy()
            whole[b] = v.numpy()[0]
            buffers[key].update_inplace(whole)
        lens.append(len(p))
    together = [[], []]
    for _ in range(steps):
        out = f.step(io, [[int(l.argmax())] for l in logits], lens)
        lens = [l + 1 for l in lens]
        logits = [out[0], out[1]]
        for b in range(2):
            together[b].append(out[b])
    tokens = lambda rows: [int(r.argmax()) for r in rows]  # noqa: E731
    diff = 0.0
    for a_rows, b_rows in zip(alone, together):
        # logits compare only while both ways were fed the same tokens
        for a, b in zip(a_rows, b_rows):
            diff = max(diff, float(np.abs(a - b).max()))
            if a.argmax() != b.argmax():
                break
    return {"alone": [tokens(r) for r in alone], "together": [tokens(r) for r in together],
            "max_logit_diff_while_same": diff}


def kernel_paths(f: Fused, prompt: list[int]) -> dict:
    out = {}
    for rows in (1, 2, 4, 8):
        io, _ = f.cache(rows)
        first = f.step(io, [prompt] * rows, [0] * rows)
        step = f.step(io, [[int(first[0].argmax())]] * rows, [len(prompt)] * rows)
        out[rows] = (first[0], step[0], float(np.abs(step - step[0]).max()))
    diff = lambda a, b: float(np.abs(a - b).max())  # noqa: E731
    return {"prompt_tokens": len(prompt),
            "prefill_diff_vs_2_rows": {r: diff(v[0], out[2][0]) for r, v in out.items()},
            "step_diff_vs_2_rows": {r: diff(v[1], out[2][1]) for r, v in out.items()},
            "rows_differ_within_a_step": max(v[2] for v in out.values())}


def admissions(f: Fused, rows: int) -> dict:
    rng = np.random.default_rng(7)
    head = [int(x) for x in rng.integers(100, 10000, size=21)]
    prompts = [head + [int(x) for x in rng.integers(100, 10000, size=int(n))]
               for n in rng.integers(8, 24, size=rows)]
    one, head_rows = f.cache(1)
    f.step(one, [head], [0])
    alone, t = [], time.perf_counter()
    for p in prompts:
        io, own = f.cache(1)
        for key, v in own.items():
            v.update_inplace(head_rows[key].numpy())
        alone.append(f.step(io, [p[len(head):]], [len(head)])[0])
    t_alone = time.perf_counter() - t
    out = {"admissions": rows, "head_tokens": len(head),
           "rest_tokens": [len(p) - len(head) for p in prompts], "alone_with_head_ms": t_alone * 1e3}
    # The rests in one pass after the head's rows: ONNX Runtime 1.31's GroupQueryAttention
    # refuses several rows of more than one token after a past.
    io, buffers = f.cache(rows)
    for key, v in buffers.items():
        v.update_inplace(np.repeat(head_rows[key].numpy(), rows, axis=0))
    width = max(len(p) - len(head) for p in prompts)
    try:
        f.step(io, [p[len(p) - width:] for p in prompts], [len(p) - width for p in prompts])
        out["rests_together"] = "ran"
    except Exception as e:  # noqa: BLE001 - the refusal is the result
        out["rests_together"] = f"refused: {str(e).split('Status Message: ')[-1]}"
    # Whole prompts in one pass without a past, right-padded, every position's logits kept.
    t = time.perf_counter()
    io, _ = f.cache(rows)
    width = max(len(p) for p in prompts)
    ids = np.array([p + [0] * (width - len(p)) for p in prompts], dtype=np.int64)
    io.bind_cpu_input("input_ids", ids)
    io.bind_cpu_input("seqlens_k", np.array([len(p) - 1 for p in prompts], dtype=np.int32))
    io.bind_cpu_input("total_sequence_length", np.array(width, dtype=np.int32))
    io.bind_cpu_input("logits_to_keep", np.array([width], dtype=np.int64))
    for name in f.read_back:
        io.bind_output(name)
    f.session.run_with_iobinding(io)
    logits = io.get_outputs()[0].numpy()
    out["whole_prompts_together_ms"] = (time.perf_counter() - t) * 1e3
    out["whole_prompts_max_logit_diff"] = max(
        float(np.abs(logits[b, len(p) - 1] - alone[b]).max()) for b, p in enumerate(prompts))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--batch", default="1,4,16,32")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    try:
        f = Fused(args.model, args.threads)
    except (OSError, KeyError, ValueError, ort.capi.onnxruntime_pybind11_state.Fail) as e:
        print(f"fused_batch.py: cannot open {args.model} as a q4 package: {e}", file=sys.stderr)
        return 2
    print(json.dumps(agreement(f, 8)), flush=True)
    for rows in (4, 16):
        print(json.dumps(admissions(f, rows)), flush=True)
    for prompt in ([1, 504, 3458, 314, 2994, 28, 17, 30, 2], [1, 1111, 2222, 33, 44, 555, 66, 7, 8, 99, 100, 101]):
        print(json.dumps(kernel_paths(f, prompt)), flush=True)
    for b in (int(x) for x in args.batch.split(",")):
        print(json.dumps(speed(f, b, args.steps)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
