#!/usr/bin/env python3
"""Bytes of weights a decoder reads per generated token, for the memory-bandwidth fraction of
`cargo xtask bench-compare`.

    weight_bytes.py --onnx MODEL.onnx | --gguf FILE.gguf

ONNX: every initializer read by a matrix product (MatMul, Gemm, MatMulNBits: weights, scales,
zero points; the Q4_1 min terms) or a normalization, once; tables only gathered from
(embeddings, rotary caches) are not read whole per token and are left out. GGUF: every tensor,
except an untied token embedding (gathered, one row per token). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

READ_WHOLE = {"MatMul", "Gemm", "MatMulNBits", "SimplifiedLayerNormalization",
              "SkipSimplifiedLayerNormalization", "Mul", "Add"}


def onnx_bytes(path: str) -> dict:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    inits = {i.name: i for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}

    def source(name):
        """The initializer behind `name` (through a Reshape of a constant)."""
        if name in inits:
            return name
        node = producers.get(name)
        if node is not None and node.op_type == "Reshape" and node.input[0] in inits:
            return node.input[0]
        return None

    read = set()
    for node in m.graph.node:
        if node.op_type in READ_WHOLE:
            for i in node.input:
                s = source(i)
                if s is not None:
                    read.add(s)
    total = sum(numpy_helper.to_array(inits[n]).nbytes for n in read)
    every = sum(numpy_helper.to_array(i).nbytes for i in m.graph.initializer)
    del np
    return {"weight_bytes_per_token": total, "initializer_bytes": every, "tensors_read": len(read)}


def gguf_bytes(path: str) -> dict:
    import gguf

    r = gguf.GGUFReader(path)
    tied = "output.weight" not in {t.name for t in r.tensors}
    total = sum(int(t.n_bytes) for t in r.tensors if tied or t.name != "token_embd.weight")
    return {"weight_bytes_per_token": total, "tensors_read": len(r.tensors)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="weight bytes read per generated token")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--onnx")
    g.add_argument("--gguf")
    args = ap.parse_args(argv)
    print(json.dumps(onnx_bytes(args.onnx) if args.onnx else gguf_bytes(args.gguf)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
