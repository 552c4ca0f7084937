#!/usr/bin/env python3
"""Checks of synthetic_gguf.py and of the files gguf2onnx.py must refuse (run from the xtask venv).

    test_synthetic.py

1. determinism: the same seed writes the same bytes, another seed other bytes;
2. refusals: broken qwen2 files (a q/k/v bias missing half-way, an LM head of the wrong shape)
   are refused by both variants with exit status 2, one clear line on stderr, and no output
   folder left behind.
Each check prints one line; exit status 1 if any fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gguf2onnx  # noqa: E402
from synthetic_gguf import write_gguf  # noqa: E402

# (what is broken, write_gguf arguments, the error line gguf2onnx must print)
REFUSALS = [
    ("a k bias missing in layer 1", {"drop": ["blk.1.attn_k.bias"]},
     "gguf2onnx: error: GGUF tensor 'blk.1.attn_k.bias' is missing while 'blk.0.attn_q.bias' exists: "
     "q, k and v biases must be in every layer or in none"),
    ("every bias of layer 0 missing", {"drop": ["blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"]},
     "gguf2onnx: error: GGUF tensor 'blk.0.attn_q.bias' is missing while 'blk.1.attn_q.bias' exists: "
     "q, k and v biases must be in every layer or in none"),
    ("output.weight with too few rows", {"reshape": {"output.weight": (300, 64)}},
     "gguf2onnx: error: GGUF tensor 'output.weight' has shape (300, 64), expected (303, 64) (from the GGUF metadata)"),
    ("output.weight too wide", {"reshape": {"output.weight": (303, 96)}},
     "gguf2onnx: error: GGUF tensor 'output.weight' has shape (303, 96), expected (303, 64) (from the GGUF metadata)"),
]


def same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def convert(gguf_path: str, out: str, variant: str) -> tuple[int, str]:
    """gguf2onnx.py run in this process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = gguf2onnx.main(["--gguf", gguf_path, "--out", out, "--name", "broken", "--variant", variant])
    return code, err.getvalue()


def main() -> int:
    ok = True

    def check(name: str, good: bool, extra: str = "") -> None:
        nonlocal ok
        ok &= bool(good)
        print(f"{'PASS' if good else 'FAIL'} {name}{': ' + extra if extra else ''}", flush=True)

    with tempfile.TemporaryDirectory(prefix="ngsd-synthetic-") as tmp:
        paths = [os.path.join(tmp, f"{name}.gguf") for name in ("a", "b", "c")]
        for path, seed in zip(paths, (0, 0, 1)):
            write_gguf(path, seed=seed)
        check("the same seed writes the same bytes", same_bytes(paths[0], paths[1]))
        check("another seed writes other bytes", not same_bytes(paths[0], paths[2]))

        for what, broken, expected in REFUSALS:
            path = os.path.join(tmp, "broken.gguf")
            write_gguf(path, **broken)
            for variant in ("fp32", "q4"):
                out = os.path.join(tmp, f"out-{variant}")
                code, err = convert(path, out, variant)
                last = err.strip().splitlines()[-1] if err.strip() else ""
                good = code == 2 and last == expected and "Traceback" not in err
                check(f"{variant} refuses {what}", good, "" if good else f"exit {code}, stderr ends {last!r}")
                left = sorted(set(os.listdir(tmp)) - {"a.gguf", "b.gguf", "c.gguf", "broken.gguf"})
                check(f"{variant} leaves no folder after refusing {what}", not left, ", ".join(left))
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
