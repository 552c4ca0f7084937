#!/usr/bin/env python3
"""Greedy-decoding baseline with llama.cpp (llama-cpp-python), same protocol as bench_ort.py.

    bench_llamacpp.py --gguf PATH --prompt-ids FILE.json --new-tokens N [--threads 2] [--warmup 1] [--text]

Needs requirements-bench.txt (llama-cpp-python builds llama.cpp from source).

What is measured (model load excluded, reported as load_ms):
  * warm-up (default 1): one prefill + one decode step, not timed; the KV cache is then cleared.
  * prefill_ms: wall time of llama_decode over the whole prompt (n_batch >= prompt length, so
    one batch) plus the argmax over the last position's logits that picks new token #1.
  * decode_tok_s: (N - 1) / wall time of the N - 1 following single-token llama_decode calls,
    each followed by a numpy argmax over the last logits (read in place, no copy). Exactly N
    tokens are generated (EOS ignored). n_threads = n_threads_batch = --threads.
The GGUF weights are used as stored (e.g. Q4_1), so the token stream can drift from the fp32
ONNX model after a while.

Prints one JSON line with the same keys as bench_ort.py ("ort_version" is null here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ort import BenchError, read_prompt_ids  # noqa: E402  (same folder, stdlib-only imports)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="llama.cpp greedy KV-cache decode benchmark")
    ap.add_argument("--gguf", required=True, help="GGUF model file")
    ap.add_argument("--prompt-ids", required=True, help="JSON list of prompt token ids")
    ap.add_argument("--new-tokens", type=int, required=True, help="exact number of tokens to generate (>= 1)")
    ap.add_argument("--threads", type=int, default=2, help="n_threads and n_threads_batch (default 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up generations (default 1)")
    ap.add_argument("--text", action="store_true", help="also detokenize the generated text (adds \"text\")")
    args = ap.parse_args(argv)
    try:
        if args.new_tokens < 1:
            raise BenchError("--new-tokens must be >= 1")
        if not os.path.isfile(args.gguf):
            raise BenchError(f"GGUF file not found: {args.gguf}")
        prompt = read_prompt_ids(args.prompt_ids)
        try:
            import llama_cpp
            import numpy as np
        except ImportError as e:
            raise BenchError(f"missing Python package ({e}); install xtask/py/requirements-bench.txt") from None

        n_ctx = len(prompt) + args.new_tokens + 16
        t0 = time.perf_counter()
        llm = llama_cpp.Llama(
            model_path=args.gguf,
            n_ctx=n_ctx,
            n_batch=max(512, len(prompt)),
            n_threads=args.threads,
            n_threads_batch=args.threads,
            logits_all=False,
            verbose=False,
        )
        load_ms = (time.perf_counter() - t0) * 1e3
        n_vocab = llm.n_vocab()
        ctx = llm.ctx

        def last_argmax() -> int:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            return int(np.argmax(logits))

        def generate(n_new):
            llm.reset()
            tokens = []
            t_a = time.perf_counter()
            llm.eval(prompt)
            tok = last_argmax()
            tokens.append(tok)
            t_b = time.perf_counter()
            for _ in range(n_new - 1):
                llm.eval([tok])
                tok = last_argmax()
                tokens.append(tok)
            t_c = time.perf_counter()
            return tokens, t_b - t_a, t_c - t_b

        for _ in range(max(0, args.warmup)):
            generate(min(2, args.new_tokens))
        tokens, prefill_s, decode_s = generate(args.new_tokens)
        res = {
            "prefill_ms": round(prefill_s * 1e3, 3),
            "decode_tok_s": round((args.new_tokens - 1) / decode_s, 3) if args.new_tokens > 1 and decode_s > 0 else None,
            "new_tokens": args.new_tokens,
            "tokens": tokens,
            "ort_version": None,
            "runtime": "llama.cpp",
            "llama_cpp_python_version": llama_cpp.__version__,
            "prompt_tokens": len(prompt),
            "threads": args.threads,
            "load_ms": round(load_ms, 1),
        }
        if args.text:
            res["text"] = llm.detokenize(tokens, special=True).decode("utf-8", errors="replace")
    except BenchError as e:
        print(f"bench_llamacpp: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
