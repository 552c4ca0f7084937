#!/usr/bin/env python3
"""Write a tiny, deterministic GGUF model for tests: random weights, a real tokenizer layout.

    synthetic_gguf.py --out FILE.gguf [--arch qwen2|llama] [--seed 0] [--drop TENSOR ...]
                      [--reshape TENSOR=ROWS,COLS ...]

qwen2 (the default) has what sets Qwen2.5 apart from the default llama model: q/k/v biases,
an untied `output.weight`, rope base 1e6, the `qwen2` pre-tokenizer, ChatML control tokens with
eos = `<|im_end|>`, no BOS prepended, and a Qwen-style ChatML chat template with a default system
message. llama has no biases, a tied LM head and rope base 1e4. Both: 2 layers, hidden 64,
4 heads / 2 KV heads, FFN 128, a byte-level BPE vocabulary (the 256 byte tokens, a few merges,
the three control tokens). Matrices are quantized to a mix of Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0
(the block formats the q4 variant of gguf2onnx.py keeps exact; norms and biases F32); the
embedding is Q8_0. The same arguments always give the same bytes.

`--drop` and `--reshape` write deliberately broken files, for the converter's error tests.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

LAYERS, HIDDEN, HEADS, KV_HEADS, FFN, CONTEXT = 2, 64, 4, 2, 128, 4096
HEAD_DIM = HIDDEN // HEADS
CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Words whose byte-level BPE merges join the vocabulary (multi-byte characters included, so
# merged tokens that decode to 2- and 3-byte UTF-8 exist next to the lone bytes).
MERGE_WORDS = ("system", "user", "assistant", "Qwen", " are", " a", " helpful", "hé", "llo", "日本", " 日本")

# Qwen2.5's ChatML template without its tool branches (same markup, same default system message).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'system' and loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Block format of each layer matrix, by layer (q, k and v share a packing width per layer: all
# 4-bit or all 8-bit, so the q4 graph packs them into one product).
LAYER_TYPES = (
    {"attn_q": "Q4_0", "attn_k": "Q4_1", "attn_v": "Q4_0", "attn_output": "Q5_0",
     "ffn_gate": "Q4_1", "ffn_up": "Q4_0", "ffn_down": "Q8_0"},
    {"attn_q": "Q5_0", "attn_k": "Q5_1", "attn_v": "Q8_0", "attn_output": "Q4_1",
     "ffn_gate": "Q8_0", "ffn_up": "Q5_1", "ffn_down": "Q4_0"},
)


def byte_chars() -> list[str]:
    """GPT-2's byte -> printable character map (byte-level BPE), indexed by byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges): the byte tokens, each MERGE_WORDS prefix merged left to
    right, then the control tokens (types as llama.cpp: 1 normal, 3 control)."""
    bc = byte_chars()
    tokens, merges = list(bc), []
    for word in MERGE_WORDS:
        pieces = [bc[b] for b in word.encode("utf-8")]
        left = pieces[0]
        for right in pieces[1:]:
            if left + right not in tokens:
                merges.append(f"{left} {right}")
                tokens.append(left + right)
            left += right
    types = [1] * len(tokens) + [3] * len(CONTROL_TOKENS)
    return tokens + list(CONTROL_TOKENS), types, merges


def tensor_plan(arch: str, vocab: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, row-major shape [out, in] or [n], GGUF type) of every tensor, in file order."""
    q_rows, kv_rows = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    plan = [("token_embd.weight", (vocab, HIDDEN), "Q8_0")]
    for i, types in enumerate(LAYER_TYPES[:LAYERS]):
        p = f"blk.{i}."
        plan.append((p + "attn_norm.weight", (HIDDEN,), "F32"))
        for kind, rows in (("attn_q", q_rows), ("attn_k", kv_rows), ("attn_v", kv_rows)):
            plan.append((p + kind + ".weight", (rows, HIDDEN), types[kind]))
            if arch == "qwen2":
                plan.append((p + kind + ".bias", (rows,), "F32"))
        plan += [
            (p + "attn_output.weight", (HIDDEN, q_rows), types["attn_output"]),
            (p + "ffn_norm.weight", (HIDDEN,), "F32"),
            (p + "ffn_gate.weight", (FFN, HIDDEN), types["ffn_gate"]),
            (p + "ffn_up.weight", (FFN, HIDDEN), types["ffn_up"]),
            (p + "ffn_down.weight", (HIDDEN, FFN), types["ffn_down"]),
        ]
    plan.append(("output_norm.weight", (HIDDEN,), "F32"))
    if arch == "qwen2":
        plan.append(("output.weight", (vocab, HIDDEN), "Q5_1"))
    return plan


def random_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values of a plausible scale: norms near 1, matrices ~ N(0, 1/fan_in), embeddings
    ~ N(0, 1), the LM head scaled up so the logits spread (greedy picks are never near-ties)."""
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith(".bias"):
        return (0.5 * rng.standard_normal(shape)).astype(np.float32)
    scale = 1.0 if name == "token_embd.weight" else shape[-1] ** -0.5
    if name == "output.weight":
        scale *= 4.0
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def add_metadata(w, arch: str, tokens: list[str], types: list[int], merges: list[str]) -> None:
    """The keys gguf2onnx.py and test_export.py read, as llama.cpp's converter writes them."""
    import gguf

    w.add_name(f"synthetic {arch} (random weights, tests only)")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(1e6 if arch == "qwen2" else 1e4)
    w.add_layer_norm_rms_eps(1e-6 if arch == "qwen2" else 1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    endoftext, _, im_end = (tokens.index(t) for t in CONTROL_TOKENS)
    w.add_bos_token_id(endoftext)
    w.add_eos_token_id(im_end)
    w.add_pad_token_id(endoftext)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)


def write_gguf(path: str, arch: str = "qwen2", seed: int = 0, drop=(), reshape=None) -> None:
    """Writes the synthetic model to `path` (through a temporary file and a rename).

    `drop`: tensor names left out; `reshape`: {name: row-major shape} written instead of the
    planned one (both for the converter's error tests)."""
    import gguf

    reshape = reshape or {}
    tokens, types, merges = vocabulary()
    plan = tensor_plan(arch, len(tokens))
    unknown = (set(drop) | set(reshape)) - {name for name, _, _ in plan}
    if unknown:
        raise ValueError(f"no such tensor in the {arch} plan: {', '.join(sorted(unknown))}")
    rng = np.random.default_rng(seed)
    tmp = f"{path}.tmp-{os.getpid()}"
    w = gguf.GGUFWriter(tmp, arch)
    add_metadata(w, arch, tokens, types, merges)
    for name, shape, kind in plan:
        values = random_tensor(rng, name, tuple(reshape.get(name, shape)))  # drawn even when dropped
        if name in drop:
            continue
        qtype = gguf.GGMLQuantizationType[kind]
        w.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=None if kind == "F32" else qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def parse_reshape(items: list[str]) -> dict[str, tuple[int, ...]]:
    """`NAME=ROWS,COLS` items -> {NAME: (ROWS, COLS)}."""
    out = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            out[name] = tuple(int(x) for x in dims.split(","))
        except ValueError:
            raise SystemExit(f"synthetic_gguf: error: --reshape wants NAME=ROWS,COLS, got {item!r}") from None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the GGUF file to write")
    ap.add_argument("--arch", choices=["qwen2", "llama"], default="qwen2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--drop", action="append", default=[], help="leave this tensor out (repeatable)")
    ap.add_argument("--reshape", action="append", default=[], help="NAME=ROWS,COLS: write this shape instead")
    args = ap.parse_args(argv)
    try:
        write_gguf(args.out, args.arch, args.seed, args.drop, parse_reshape(args.reshape))
    except ValueError as e:
        print(f"synthetic_gguf: error: {e}", file=sys.stderr)
        return 2
    print(f"synthetic_gguf: wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
