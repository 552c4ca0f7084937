#!/usr/bin/env python3
"""End-to-end test of add_hidden_output.py on a converted ngsd model folder.

    test_add_hidden.py --model DIR [--work TMPDIR]

Strips `last_hidden_state` and the `hidden_states.{L}` layer outputs from DIR's model.onnx, runs
add_hidden_output.py on the result (single file and forced external data, `--layers` as the
manifest lists them), and checks that the restored outputs equal the original ones; also checks
the error paths (missing file, no logits, output already present, a layer that does not exist,
a graph without layer-scoped node names).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def is_added(name):
    return name == "last_hidden_state" or name.startswith("hidden_states.")


def strip_hidden(src, dst, rename_nodes=False):
    import onnx

    m = onnx.load(src)
    keep = [o for o in m.graph.output if not is_added(o.name)]
    del m.graph.output[:]
    m.graph.output.extend(keep)
    nodes = [n for n in m.graph.node if not any(is_added(o) for o in n.output)]
    if rename_nodes:  # a graph whose node names say nothing about layers
        for i, n in enumerate(nodes):
            n.name = f"node_{i}"
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, dst)


def outputs(path, names, n_kv, d, n_layers):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ids = np.array([[1, 9690, 198, 2683, 359, 253, 5356]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    for i in range(n_layers):
        for k in ("key", "value"):
            feeds[f"past_key_values.{i}.{k}"] = np.zeros((1, n_kv, 0, d), np.float32)
    return s.run(names, feeds)


def script(*args):
    r = subprocess.run([sys.executable, os.path.join(HERE, "add_hidden_output.py"), *args], capture_output=True, text=True)
    return r.returncode, r.stderr.strip()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--work")
    args = ap.parse_args()
    man = json.load(open(os.path.join(args.model, "ngsd-model.json"), encoding="utf-8"))
    n_kv, d, n_layers = man["num_kv_heads"], man["head_dim"], man["num_layers"]
    orig = os.path.join(args.model, man["files"]["onnx"])
    ok = True

    def check(name, cond, extra=""):
        nonlocal ok
        ok &= bool(cond)
        print(f"{'PASS' if cond else 'FAIL'} {name}{': ' + extra if extra else ''}")

    with tempfile.TemporaryDirectory(dir=args.work) as work:
        stripped = os.path.join(work, "stripped.onnx")
        strip_hidden(orig, stripped)
        layer_names = list(man["io"].get("hidden_layers", {}).values())
        layer_list = ",".join(man["io"].get("hidden_layers", {}).keys())
        check("the manifest lists layer outputs", bool(layer_names), str(layer_names))
        ref_logits, ref_hidden = outputs(orig, ["logits", "last_hidden_state"], n_kv, d, n_layers)
        ref_layers = outputs(orig, layer_names, n_kv, d, n_layers) if layer_names else []
        surgery_logs = []
        for variant, extra in (("single file", []), ("external data", ["--external-data"])):
            out = os.path.join(work, f"restored-{len(extra)}.onnx")
            rc, err = script("--model", stripped, "--out", out, "--layers", layer_list or "default", *extra)
            surgery_logs.append(err)
            check(f"surgery ({variant}) exit 0", rc == 0, err.splitlines()[-2] if rc == 0 else err)
            if rc:
                continue
            logits, hidden = outputs(out, ["logits", "last_hidden_state"], n_kv, d, n_layers)
            check(f"restored last_hidden_state == original ({variant})",
                  np.array_equal(hidden, ref_hidden) and np.array_equal(logits, ref_logits))
            if layer_names:
                got = outputs(out, layer_names, n_kv, d, n_layers)
                check(f"restored {len(layer_names)} layer outputs == original ({variant})",
                      all(np.array_equal(a, b) for a, b in zip(got, ref_layers)))
            import onnx

            shape = [x.dim_param or x.dim_value for x in
                     next(o for o in onnx.load(out, load_external_data=False).graph.output
                          if o.name == "last_hidden_state").type.tensor_type.shape.dim]
            check(f"declared shape ({variant})", shape == ["batch_size", "sequence_length", man["hidden_size"]], str(shape))
            if extra:
                check("external data file written", os.path.isfile(out + ".data"))
        # the LM-head matrix beside the output equals the converter's own lm_head file
        written = os.path.join(work, "lm_head.safetensors")
        ref = os.path.join(args.model, man["files"].get("lm_head") or "lm_head.safetensors")
        quantized_head = any("not writing lm_head.safetensors" in e for e in surgery_logs)
        if quantized_head:
            # a quantized LM head (int8 MatMulNBits) cannot give the float matrix: it says so
            check("quantized LM head: says why no lm_head.safetensors", not os.path.isfile(written))
        elif os.path.isfile(ref):
            def tensor_bytes(path):
                with open(path, "rb") as f:
                    data = f.read()
                n = int.from_bytes(data[:8], "little")
                return json.loads(data[8:8 + n])["weight"]["shape"], data[8 + n:]
            check("lm_head.safetensors written beside the output", os.path.isfile(written))
            if os.path.isfile(written):
                check("lm_head.safetensors equals the converter's", tensor_bytes(written) == tensor_bytes(ref))
        # already present -> copied
        out = os.path.join(work, "again.onnx")
        rc, err = script("--model", orig, "--out", out)
        check("already present: copies and says so", rc == 0 and "already" in err and os.path.isfile(out), err.splitlines()[0])
        rc, err = script("--model", stripped, "--out", out, "--layers", str(n_layers))
        check("a layer that does not exist: clean error", rc == 2 and "does not exist" in err and "Traceback" not in err, err)
        anonymous = os.path.join(work, "anonymous.onnx")
        strip_hidden(orig, anonymous, rename_nodes=True)
        rc, err = script("--model", anonymous, "--out", out, "--layers", "default")
        check("no layer-scoped node names: clean error", rc == 2 and "/model/layers.N/" in err and "Traceback" not in err, err)
        rc, err = script("--model", os.path.join(work, "missing.onnx"), "--out", out)
        check("missing file: clean error", rc == 2 and "not found" in err and "Traceback" not in err, err)
        import onnx
        from onnx import TensorProto, helper

        tiny = helper.make_model(helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
        tiny_path = os.path.join(work, "tiny.onnx")
        onnx.save(tiny, tiny_path)
        rc, err = script("--model", tiny_path, "--out", out)
        check("no logits: clean error", rc == 2 and "no 'logits' output" in err and "Traceback" not in err, err)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
