#!/usr/bin/env python3
"""Greedy agreement: a plain onnxruntime loop against `ngsd generate` on the same model folder.

    greedy_check.py --model DIR --ngsd BIN [--new-tokens 32] [--threads 1] [--prompt TEXT ...]

For each prompt (rendered with the folder's chat template, as chat_prompt_ids.py does) it runs
bench_ort.py's plain greedy KV-cache loop for N steps (its FusedRunner for q4 packages), and
`ngsd generate --gate never --expert prompt --reflection off --temperature 0 --trace FILE` for N
tokens, and compares the token ids (ngsd stops at an EOS id; the comparison covers the tokens
ngsd generated). Prints one JSON line per prompt and exits 1 when any prompt disagrees.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_ort import load_layout, runner_for  # noqa: E402
from chat_prompt_ids import render  # noqa: E402

PROMPTS = [
    "Write a Python function that reverses a string.",
    "What is the difference between a list and a tuple in Python?",
    "Explain recursion in one paragraph.",
]


def ngsd_tokens(ngsd: str, model: str, prompt: str, n: int, threads: int) -> list[int]:
    """Token ids of `ngsd generate`, read from its --trace file (one line per step, then a summary)."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "trace.jsonl")
        cmd = [ngsd, "generate", "--model", model, "--gate", "never", "--expert", "prompt",
               "--reflection", "off", "--temperature", "0", "-n", str(n), "--trace", trace, "-p", prompt]
        env = dict(os.environ, NGSD_THREADS=str(threads))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        with open(trace, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
    return [line["token"] for line in lines if "step" in line]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ngsd", required=True, help="the ngsd binary")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", action="append", help="repeatable [default: three built-in prompts]")
    args = ap.parse_args(argv)
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    runner = runner_for(load_layout(args.model), args.threads)
    all_equal = True
    for prompt in args.prompt or PROMPTS:
        ids = tk.encode(render(args.model, prompt, None), add_special_tokens=False).ids
        ort_ids, _, _ = runner.generate_plain(ids, args.new_tokens)
        ngsd_ids = ngsd_tokens(args.ngsd, args.model, prompt, args.new_tokens, args.threads)
        equal = bool(ngsd_ids) and ngsd_ids == ort_ids[: len(ngsd_ids)]
        all_equal &= equal
        first_diff = next((i for i, (a, b) in enumerate(zip(ngsd_ids, ort_ids)) if a != b), None)
        print(json.dumps({"prompt": prompt, "prompt_tokens": len(ids), "ngsd_tokens": len(ngsd_ids),
                          "equal": equal, "first_difference": first_diff, "ngsd": ngsd_ids,
                          "ort": ort_ids, "text": tk.decode(ort_ids)}), flush=True)
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())
