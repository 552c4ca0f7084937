#!/usr/bin/env python3
"""Add a `last_hidden_state` output to a decoder ONNX model (e.g. a Hugging Face Optimum export).

    add_hidden_output.py --model IN.onnx --out OUT.onnx [--external-data] [--layers 5,10,22|default]

Finds the node that produces `logits` (the LM head), takes the activation that feeds it (the
final-norm output) and exposes it through `Identity -> last_hidden_state` with shape
[batch, sequence_length, hidden]. Understands a plain MatMul/Gemm head, MatMulNBits, and
onnxruntime's dynamic-int8 pattern (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul).

It also writes the LM-head matrix, [vocab, hidden] float32, as `lm_head.safetensors` beside
OUT (what `head` experts read) when the head is a plain float MatMul/Gemm without bias; for a
quantized head it says why it cannot.

With --layers it also exposes the residual stream after the given decoder layers (0-based) as
`hidden_states.{L}`, [batch, sequence_length, hidden]. The residual is found by node scope, as
Optimum and gguf2onnx.py name nodes: the `Add` inside `/model/layers.{L}/` whose result is read
inside `/model/layers.{L+1}/` (or `/model/norm/` after the last layer). Graphs named otherwise,
or whose residual adds are fused away, get an error saying so.

Models with external data are loaded with it; the result is saved with external data (one
file, `<OUT name>.data`) when it is larger than 1.8 GiB or with --external-data. When the
model already has `last_hidden_state`, it is copied unchanged (and the script says so).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

HIDDEN = "last_hidden_state"
LAYER_OUTPUT = "hidden_states.{L}"
LOGITS = "logits"
EXTERNAL_DATA_THRESHOLD = int(1.8 * 1024**3)


class SurgeryError(Exception):
    pass


def log(msg: str) -> None:
    print(f"add_hidden_output: {msg}", file=sys.stderr, flush=True)


def model_size(model) -> int:
    n = sum(len(t.raw_data) for t in model.graph.initializer)
    if n >= EXTERNAL_DATA_THRESHOLD:
        return n
    return model.ByteSize()


def save(model, out: str, force_external: bool) -> None:
    import onnx

    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(out)}.tmp-{os.getpid()}")
    size = model_size(model)
    try:
        if size < EXTERNAL_DATA_THRESHOLD and not force_external:
            log(f"writing {out} ({size / 2**20:.0f} MiB)")
            with open(tmp, "wb") as f:
                f.write(model.SerializeToString())
        else:
            location = os.path.basename(out) + ".data"
            log(f"writing {out} + {location} (external data, {size / 2**20:.0f} MiB)")
            data_path = os.path.join(folder, location)
            if os.path.exists(data_path):
                os.remove(data_path)
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=location, size_threshold=1024)
            os.chmod(data_path, 0o644)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def find_hidden(graph):
    """Name of the activation that feeds the LM head, and the hidden size if known."""
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}

    def const_dims(name):
        if name in inits:
            return list(inits[name].dims)
        n = producers.get(name)
        # weights behind DequantizeLinear / Transpose / Cast are still constants
        if n is not None and n.op_type in ("DequantizeLinear", "Cast", "Identity") and n.input[0] in inits:
            return list(inits[n.input[0]].dims)
        return None

    head = producers.get(LOGITS)
    if head is None:
        raise SurgeryError("no node produces 'logits'")
    # walk back from logits through elementwise post-processing to the head matmul
    frontier, seen = [head], set()
    for _ in range(8):
        nxt = []
        for n in frontier:
            if n.name in seen and n.name:
                continue
            seen.add(n.name)
            if n.op_type in ("MatMul", "Gemm"):
                a, b = n.input[0], n.input[1]
                dims = const_dims(b)
                if dims is not None:
                    transposed = n.op_type == "Gemm" and any(
                        at.name == "transB" and at.i == 1 for at in n.attribute
                    )
                    hidden = dims[-1] if transposed else dims[-2] if len(dims) >= 2 else None
                    return a, hidden, n
                if const_dims(a) is not None:  # logits = W @ x (unusual)
                    return b, None, n
            elif n.op_type == "MatMulNBits":
                k = next((at.i for at in n.attribute if at.name == "K"), None)
                return n.input[0], k, n
            elif n.op_type == "MatMulInteger":
                q = producers.get(n.input[0])
                if q is not None and q.op_type == "DynamicQuantizeLinear":
                    dims = const_dims(n.input[1])
                    return q.input[0], (dims[-2] if dims and len(dims) >= 2 else None), n
            for i in n.input:
                p = producers.get(i)
                if p is not None:
                    nxt.append(p)
        frontier = nxt
    raise SurgeryError(f"could not find the LM-head MatMul behind 'logits' (producer: {head.op_type} '{head.name}')")


def write_lm_head(graph, head, out: str) -> None:
    """Writes the LM-head weight as [vocab, hidden] safetensors beside `out`, when it is a
    float initializer of a MatMul/Gemm without bias."""
    import json

    import numpy as np
    from onnx import numpy_helper

    path = os.path.join(os.path.dirname(os.path.abspath(out)), "lm_head.safetensors")
    inits = {i.name: i for i in graph.initializer}
    if head.op_type not in ("MatMul", "Gemm") or head.input[1] not in inits or len(head.input) > 2:
        log(f"not writing {os.path.basename(path)}: the LM head ({head.op_type}) is not a plain float "
            "MatMul/Gemm over an initializer, so head experts cannot use this export")
        return
    w = numpy_helper.to_array(inits[head.input[1]]).astype("<f4")
    trans_b = head.op_type == "Gemm" and any(at.name == "transB" and at.i == 1 for at in head.attribute)
    if w.ndim != 2:
        log(f"not writing {os.path.basename(path)}: the LM-head weight has shape {list(w.shape)}")
        return
    w = np.ascontiguousarray(w if trans_b else w.T)
    header = {
        "__metadata__": {"format": "ngsd-lm-head/1", "source": os.path.basename(out)},
        "weight": {"dtype": "F32", "shape": list(w.shape), "data_offsets": [0, w.nbytes]},
    }
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + w.tobytes())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    log(f"wrote {path} ({w.shape[0]} x {w.shape[1]}); a folder with an ngsd-model.json needs "
        '"lm_head": "lm_head.safetensors" under "files" to use it')


LAYER_SCOPE = re.compile(r"^/model/layers\.(\d+)/")


def layer_of(node) -> int | None:
    m = LAYER_SCOPE.match(node.name)
    return int(m.group(1)) if m else None


def parse_layers(text: str, n_layers: int) -> list[int]:
    if text.strip() == "default":
        # the converter's default (gguf2onnx.default_layers): multiples of 5, plus 3/4 depth
        layers = set(range(5, n_layers, 5)) | ({round(0.75 * n_layers)} - {n_layers})
        return sorted(layers)
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise SurgeryError(f"--layers: `{part}` is not a layer index (use e.g. --layers 5,10,22, or default)")
        if int(part) >= n_layers:
            raise SurgeryError(f"--layers: layer {part} does not exist (the graph has layers 0..{n_layers - 1})")
        out.add(int(part))
    return sorted(out)


def find_residuals(graph, layers_arg: str) -> dict[int, str]:
    """{layer: tensor} of the residual stream after each asked-for decoder layer."""
    scoped = [layer_of(n) for n in graph.node]
    present = {i for i in scoped if i is not None}
    if not present:
        raise SurgeryError("no node is named `/model/layers.N/...`, so the decoder layers cannot be told apart; "
                           "export the model with Optimum (which names them so), or convert a GGUF with "
                           "gguf2onnx.py --layers")
    n_layers = max(present) + 1
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def read_after(tensor, layer):
        def next_scope(c):
            if layer + 1 < n_layers:
                return layer_of(c) == layer + 1
            return c.name.startswith("/model/norm/")
        return any(next_scope(c) for c in consumers.get(tensor, []))

    found = {}
    for layer in parse_layers(layers_arg, n_layers):
        cands = [o for n, sc in zip(graph.node, scoped) if sc == layer and n.op_type == "Add"
                 for o in n.output if read_after(o, layer)]
        if len(cands) != 1:
            fused = any(n.op_type.startswith("Skip") for n in graph.node)
            why = ("its residual additions are fused into Skip*LayerNormalization nodes (an optimized graph): "
                   "use the unoptimized export" if fused and not cands else
                   f"{len(cands)} candidate tensors ({', '.join(cands[:4])})")
            raise SurgeryError(f"cannot find the residual stream after layer {layer}: "
                               f"expected one `Add` in /model/layers.{layer}/ read by the next layer, found {why}")
        found[layer] = cands[0]
    return found


def add_layer_outputs(graph, layers_arg: str, batch: str, seq: str, hidden) -> None:
    from onnx import TensorProto, helper

    outs = {o.name for o in graph.output}
    for layer, tensor in find_residuals(graph, layers_arg).items():
        name = LAYER_OUTPUT.format(L=layer)
        if name in outs:
            log(f"'{name}' is already an output")
            continue
        if any(name in n.output for n in graph.node):
            raise SurgeryError(f"a node already produces a tensor named '{name}' that is not a graph output")
        log(f"layer {layer}: residual '{tensor}' -> '{name}'")
        graph.node.append(helper.make_node("Identity", [tensor], [name], name=f"/model/layers.{layer}/hidden_state"))
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                          [batch, seq, hidden if hidden else "hidden_size"]))


def run(args) -> None:
    import onnx
    from onnx import TensorProto, helper

    if not os.path.isfile(args.model):
        raise SurgeryError(f"model file not found: {args.model}")
    log(f"loading {args.model}")
    try:
        model = onnx.load(args.model, load_external_data=True)
    except Exception as e:  # noqa: BLE001
        raise SurgeryError(f"cannot load {args.model}: {e}") from None
    g = model.graph
    outs = [o.name for o in g.output]
    if LOGITS not in outs:
        raise SurgeryError(f"model has no 'logits' output (outputs: {', '.join(outs[:6])}{', ...' if len(outs) > 6 else ''})")
    logits_vi = next(o for o in g.output if o.name == LOGITS)
    dims = list(logits_vi.type.tensor_type.shape.dim)
    batch = (dims[0].dim_param or "batch_size") if dims else "batch_size"
    seq = (dims[1].dim_param or "sequence_length") if len(dims) > 1 else "sequence_length"
    changed = False
    if HIDDEN in outs:
        log(f"'{HIDDEN}' is already an output")
        try:
            src, hidden, head = find_hidden(g)
        except SurgeryError as e:
            log(f"not writing lm_head.safetensors: {e}")
            src, hidden, head = None, None, None
    else:
        if any(HIDDEN in n.output for n in g.node):
            raise SurgeryError(f"a node already produces a tensor named '{HIDDEN}' that is not a graph output")
        src, hidden, head = find_hidden(g)
        log(f"LM head: {head.op_type} '{head.name}', activation '{src}', hidden size {hidden}")
        g.node.append(helper.make_node("Identity", [src], [HIDDEN], name="/model/last_hidden_state"))
        g.output.append(helper.make_tensor_value_info(HIDDEN, TensorProto.FLOAT, [batch, seq, hidden if hidden else "hidden_size"]))
        changed = True
    if args.layers:
        before = len(g.output)
        add_layer_outputs(g, args.layers, batch, seq, hidden)
        changed |= len(g.output) != before
    # before saving: saving with external data empties the in-memory initializers
    if head is not None:
        write_lm_head(g, head, args.out)
    if changed or os.path.abspath(args.model) != os.path.abspath(args.out):
        if not changed:
            log("nothing to add; copying the model unchanged")
        save(model, args.out, args.external_data)
    log("done")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="expose the LM head input as a 'last_hidden_state' output")
    ap.add_argument("--model", required=True, help="input ONNX model")
    ap.add_argument("--out", required=True, help="output ONNX model")
    ap.add_argument("--external-data", action="store_true", help="always save weights as external data")
    ap.add_argument("--layers", help="also expose the residual stream after these 0-based decoder layers as "
                    "hidden_states.{L}: a comma-separated list, or `default` (multiples of 5, plus 3/4 depth)")
    args = ap.parse_args(argv)
    try:
        run(args)
    except SurgeryError as e:
        print(f"add_hidden_output: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"add_hidden_output: error: missing Python package ({e}); install xtask/py/requirements.txt", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
