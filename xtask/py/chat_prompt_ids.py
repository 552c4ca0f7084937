#!/usr/bin/env python3
"""Render a model folder's chat template for one user message and write the token ids.

    chat_prompt_ids.py --model DIR --prompt TEXT [--system TEXT] --out FILE.json

Test helper for bench_ort.py (the Rust side normally writes the ids).
The template is rendered like Hugging Face does (jinja2 sandbox, trim_blocks, lstrip_blocks,
add_generation_prompt=True); the text is encoded with tokenizer.json without adding specials.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def render(model_dir: str, prompt: str, system: str | None) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    with open(os.path.join(model_dir, "chat_template.jinja"), encoding="utf-8") as f:
        template = f.read()
    with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        tcfg = json.load(f)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": prompt}
    ]
    return env.from_string(template).render(
        messages=messages,
        add_generation_prompt=True,
        bos_token=tcfg.get("bos_token") or "",
        eos_token=tcfg.get("eos_token") or "",
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--system")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if not os.path.isfile(os.path.join(args.model, "tokenizer.json")):
        print(f"chat_prompt_ids: error: no tokenizer.json in {args.model}", file=sys.stderr)
        return 2
    from tokenizers import Tokenizer

    text = render(args.model, args.prompt, args.system)
    tk = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    ids = tk.encode(text, add_special_tokens=False).ids
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(ids, f)
        f.write("\n")
    print(f"chat_prompt_ids: {len(ids)} tokens -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
