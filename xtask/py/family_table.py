#!/usr/bin/env python3
"""One ablation table across model families, from `ngsd eval` reports (results.json).

    family_table.py --family NAME DEV_DIR STRESS_DIR [--family NAME DEV_DIR STRESS_DIR ...]

DEV_DIR holds a report of crates/ngsd-eval/suites/safety-dev.toml, STRESS_DIR one of
stress.toml, both with the same configurations. Prints a markdown table with a column per
family and configuration and a row per figure: the dev split's ASR and benign refusal (pooled
and per dataset) and the stress suite's groups, each as a percentage with its count. Speed is
left out: the reports' tok/s is per request inside a batch (see `ngsd eval --help`); compare
speeds with `cargo xtask bench-compare`. Reads
only the reports; run the evaluations first (docs/RESULTS.md lists the commands).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEV = [("harmful", "ASR"), ("benign", "refusal"), ("advbench-dev", "ASR"), ("jbb-harmful", "ASR"),
       ("xstest-unsafe", "ASR"), ("jbb-benign", "refusal"), ("xstest-safe", "refusal"),
       ("gsm8k-dev", "refusal"), ("gsm8k-dev", "kept correct")]
STRESS = [("wrapped-harmful", "ASR"), ("multiturn-harmful", "ASR"), ("raw-harmful", "ASR"),
          ("wrapped-benign", "refusal"), ("multiturn-benign", "refusal"), ("raw-benign", "refusal")]


def load(path: Path) -> dict:
    try:
        return json.loads((path / "results.json").read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"family_table.py: cannot read {path}/results.json ({e}); run `ngsd eval --out {path}` first")


def find(config: dict, name: str) -> dict | None:
    for part in ("pooled", "groups", "datasets"):
        for m in config.get(part, []):
            if m["dataset"] == name:
                return m
    return None


def cell(config: dict, name: str, metric: str) -> str:
    m = find(config, name)
    if m is None or m["answered"] == 0:
        return "–"
    v = {"ASR": m["asr"], "refusal": m["refusal"], "kept correct": m["kept_correct"]}[metric]
    if v is None:
        return "–"
    return f"{100 * v['value']:.0f}% ({v['k']}/{v['n']})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", nargs=3, action="append", required=True,
                    metavar=("NAME", "DEV_DIR", "STRESS_DIR"))
    args = ap.parse_args()
    columns = []  # (family, dev config, stress config or None)
    for name, dev_dir, stress_dir in args.family:
        dev, stress = load(Path(dev_dir)), load(Path(stress_dir))
        by_name = {c["config"]["name"]: c for c in stress["configs"]}
        columns += [(name, c, by_name.get(c["config"]["name"])) for c in dev["configs"]]
    print("| suite | set | metric | " + " | ".join(f"{f} {c['config']['name']}" for f, c, _ in columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for n, m in DEV:
        print(f"| dev | {n} | {m} | " + " | ".join(cell(c, n, m) for _, c, _ in columns) + " |")
    for n, m in STRESS:
        print(f"| stress | {n} | {m} | " + " | ".join(cell(s, n, m) if s else "–" for _, _, s in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
