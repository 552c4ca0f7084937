#!/usr/bin/env python3
"""Copy a q4 package with another MatMulNBits `accuracy_level`, to measure what int8 activations
cost in faithfulness and gain in speed.

    set_accuracy_level.py --src Q4_DIR --out DIR [--level 0] [--only lm_head]

The q4 graph computes its products at accuracy level 4 (activations rounded to int8 per block,
as llama.cpp does for Q4 dot products); level 0 keeps the activations in fp32 (the weights are
exact either way). `--only SUBSTR` changes only the nodes whose name contains it. The other
files of the package are linked, not copied; the manifest's checksum of model.onnx is updated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--level", type=int, default=0, choices=[0, 1, 2, 3, 4])
    ap.add_argument("--only", default="")
    args = ap.parse_args(argv)
    import onnx

    model = onnx.load(os.path.join(args.src, "model.onnx"))
    changed = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or args.only not in node.name:
            continue
        for a in node.attribute:
            if a.name == "accuracy_level":
                a.i = args.level
                changed += 1
    if changed == 0:
        print("set_accuracy_level: error: no MatMulNBits node matched", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    onnx.save(model, onnx_path)
    for f in os.listdir(args.src):
        dst = os.path.join(args.out, f)
        if f not in ("model.onnx", "ngsd-model.json") and not os.path.lexists(dst):
            os.symlink(os.path.abspath(os.path.join(args.src, f)), dst)
    with open(os.path.join(args.src, "ngsd-model.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(onnx_path, "rb") as f:
        manifest["checksums"]["model.onnx"] = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(args.out, "ngsd-model.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"set_accuracy_level: {changed} MatMulNBits nodes at level {args.level} -> {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
