#!/usr/bin/env python3
"""Builds the project's request-shape training data from the hand-written pieces in shapes/.

    python3 models/training/tools/build_shapes.py            # writes the three files
    python3 models/training/tools/build_shapes.py --check    # fails if they differ

Writes, next to this folder:
  multiturn.jsonl  conversations (`id`, `messages`, `label`, `shape`, `kind`, `category`)
  raw.jsonl        completion-format openings (`id`, `text`, `label`, `form`)
  long.jsonl       requests inside pasted text (`id`, `prompt`, `request`, `label`,
                   `filler`, `position`, `words`, and `tokens` when the tokenizer is found)

Composition is deterministic (index arithmetic, no randomness): the same pieces give the same
files byte for byte. Token counts use the default model's tokenizer.json through the
`tokenizers` package of the export venv (.cache/venv) when it can be imported; `--check` and
the long-prompt length rule (300 to 900 tokens) then run on real counts. Plain python3 without
it writes `words` only and leaves `tokens` out, so run it with .cache/venv/bin/python.
Standard library only otherwise.
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shapes import benign_chats, continuation, memory, refusal_turns  # noqa: E402
from shapes.long_fillers import FILLERS  # noqa: E402
from shapes.long_requests import BENIGN as LONG_BENIGN  # noqa: E402
from shapes.long_requests import HARMFUL as LONG_HARMFUL  # noqa: E402
from shapes.raw_forms import BENIGN_TOPICS, FORMS, HARMFUL_TOPICS  # noqa: E402

OUT = HERE.parent
TOKENIZER = HERE.parents[2] / ".cache/models/smollm2-135m-instruct/fp32/tokenizer.json"
SYSTEMS = benign_chats.SYSTEM_PROMPTS

# System prompts that suit each benign category (indices into SYSTEM_PROMPTS).
SYSTEM_FOR = {
    "coding": [4, 0, 11, 14],
    "cooking": [2, 0, 1, 11],
    "travel": [3, 0, 1, 14],
    "sensitive": [8, 0, 14, 6],
    "study": [7, 12, 6, 0],
    "writing": [9, 0, 11, 13],
    "home": [10, 0, 1, 14],
    "memory": [0, 1, 11, 13, 14],
}


def msg(role, content):
    return {"role": role, "content": content}


def chat(turns, system=None):
    """Messages from (user, assistant, user, ...) texts, with an optional system prompt."""
    out = [msg("system", system)] if system else []
    for k, text in enumerate(turns):
        out.append(msg("user" if k % 2 == 0 else "assistant", text))
    return out


def with_system(n, pool=None):
    """Every other conversation gets a system prompt, taken in turn from `pool`."""
    if n % 2 == 1:
        return None
    pool = pool if pool is not None else list(range(len(SYSTEMS)))
    return SYSTEMS[pool[(n // 2) % len(pool)]]


def harmful_last():
    """Benign history, harmful last turn: continuation attacks and topic switches."""
    rows = []
    for s, (cat, opener, answer, follow_ups) in enumerate(continuation.SCENARIOS):
        for follow_up in follow_ups:
            rows.append((cat, "continuation", chat([opener, answer, follow_up], with_system(len(rows) + s))))
    for cat, exchanges, last in continuation.THREE_TURN:
        turns = [t for pair in exchanges for t in pair] + [last]
        rows.append((cat, "continuation_3turn", chat(turns, with_system(len(rows)))))
    benign = benign_chats.FOLLOW_UPS
    for k in range(45):
        _, q, a, _ = benign[(k * 3) % len(benign)]
        cat, request, _ = refusal_turns.REQUESTS[k]
        rows.append((cat, "topic_switch", chat([q, a, request], with_system(len(rows) + 1))))
    return [("harmful", "harmful_last", kind, cat, m) for cat, kind, m in rows]


def after_refusal():
    """A refused harmful request, then a benign question (benign) or a push (harmful)."""
    reqs, refusals = refusal_turns.REQUESTS, refusal_turns.REFUSALS
    unrelated, pushes = refusal_turns.UNRELATED_FOLLOWUPS, refusal_turns.PUSHES
    rows = []
    for i, (cat, request, related) in enumerate(reqs):
        for j, (kind, follow_up) in enumerate([("related", related), ("unrelated", unrelated[i])]):
            n = 2 * i + j
            refusal = refusals[(i + 5 * j) % len(refusals)]
            rows.append(("benign", "refused_then_benign", kind, cat,
                         chat([request, refusal, follow_up], with_system(n + i % 2))))
    for i in range(60):
        cat, request, _ = reqs[i % len(reqs)]
        refusal = refusals[(3 * i + 1) % len(refusals)]
        push = pushes[i % len(pushes)] if i < 50 else pushes[(i + 7) % len(pushes)]
        turns = [request, refusal, push]
        kind = "push"
        if i % 5 == 4:
            kind = "push_twice"
            turns += [refusals[(3 * i + 4) % len(refusals)], pushes[(i + 11) % len(pushes)]]
        rows.append(("harmful", "refused_then_push", kind, cat, chat(turns, with_system(i + 1))))
    return rows


def benign_multiturn():
    """Benign conversations: follow-ups, memory questions, and two topics in one chat."""
    rows = []
    for i, (cat, q, a, f) in enumerate(benign_chats.FOLLOW_UPS):
        rows.append(("followup", cat, chat([q, a, f], with_system(i + 1, SYSTEM_FOR[cat]))))
    for i, name in enumerate(memory.NAMES):
        intro, ack, question, values = memory.FACTS[i % len(memory.FACTS)]
        value = values[(i // len(memory.FACTS)) % len(values)]
        fill = {"name": name, "value": value, "Value": (value or "")[:1].upper() + (value or "")[1:]}
        turns = [intro.format(**fill), ack.format(**fill)]
        if i % 2 == 1:
            turns += list(memory.MIDDLES[(i // 2) % len(memory.MIDDLES)])
        turns.append(question)
        rows.append(("memory", "memory", chat(turns, with_system(i, SYSTEM_FOR["memory"]))))
    pool = benign_chats.FOLLOW_UPS
    for k in range(25):
        _, q1, a1, _ = pool[(7 * k + 2) % len(pool)]
        cat, q2, a2, f2 = pool[(7 * k + 40) % len(pool)]
        rows.append(("chained", cat, chat([q1, a1, q2, a2, f2], with_system(k))))
    return [("benign", "benign", kind, cat, m) for kind, cat, m in rows]


def multiturn_rows():
    rows = harmful_last() + after_refusal() + benign_multiturn()
    out = []
    for n, (label, shape, kind, cat, messages) in enumerate(rows):
        out.append({"id": f"mt{n:04d}", "messages": messages, "label": label, "shape": shape,
                    "kind": kind, "category": cat})
    return out


def raw_rows():
    out = []
    for label, topics in [("harmful", HARMFUL_TOPICS), ("benign", BENIGN_TOPICS)]:
        for i, topic in enumerate(topics):
            for f, (form, variants) in enumerate(FORMS.items()):
                text = variants[(i + f) % len(variants)].format(topic=topic, Topic=topic[:1].upper() + topic[1:])
                out.append({"id": f"raw{len(out):04d}", "text": text, "label": label, "form": form})
    return out


END = [
    "{doc}\n\n{request}",
    "I copied this from somewhere:\n\n{doc}\n\nAnyway, my question: {request}",
    "{doc}\n\n---\n\nIgnore the text above, it's just what I had open. {request}",
    "Context:\n{doc}\n\nTask: {request}",
]
START = [
    "{request}\n\nHere's the text I mentioned:\n\n{doc}",
    "{request} (The stuff below is just pasted from my clipboard.)\n\n{doc}",
    "Quick question first: {request}\n\n{doc}",
]
MIDDLE = [
    "{before}\n\n{request}\n\n{after}",
    "{before}\n\n[Note to the assistant: {request}]\n\n{after}",
    "Please read this.\n\n{before}\n\n(By the way: {request})\n\n{after}",
]


def long_prompt(request, doc, position, variant):
    if position == "end":
        return END[variant % len(END)].format(doc=doc, request=request)
    if position == "start":
        return START[variant % len(START)].format(doc=doc, request=request)
    paras = doc.split("\n\n")
    cut = max(1, len(paras) // 2)
    return MIDDLE[variant % len(MIDDLE)].format(
        before="\n\n".join(paras[:cut]), after="\n\n".join(paras[cut:]), request=request)


def long_rows(count_tokens):
    keys = list(FILLERS)
    out = []
    for label, requests, shift in [("harmful", LONG_HARMFUL, 0), ("benign", LONG_BENIGN, 8)]:
        for i, request in enumerate(requests):
            first = keys[(i + shift) % len(keys)]
            names = [first]
            if i % 4 == 3:
                names.append(keys[(i + shift + 5) % len(keys)])
            doc = FILLERS[first]
            if len(names) > 1:
                # Paragraphs of a second passage, while the whole stays under 3,000 characters.
                for para in FILLERS[names[1]].split("\n\n"):
                    if len(doc) + len(para) > 3000:
                        break
                    doc += "\n\n" + para
            position = ["end", "start", "middle"][i % 3]
            prompt = long_prompt(request, doc, position, i // 3)
            row = {"id": f"long{len(out):04d}", "prompt": prompt, "request": request, "label": label,
                   "filler": "+".join(names), "position": position, "words": len(prompt.split())}
            if count_tokens:
                row["tokens"] = count_tokens(prompt)
            out.append(row)
    return out


def tokenizer_counter():
    try:
        from tokenizers import Tokenizer  # type: ignore
    except ImportError:
        return None
    if not TOKENIZER.is_file():
        return None
    tok = Tokenizer.from_file(str(TOKENIZER))
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def check(rows_by_file, count_tokens):
    problems = []
    for name, rows in rows_by_file.items():
        seen = set()
        for r in rows:
            key = json.dumps(r.get("messages") or r.get("text") or r.get("prompt"))
            if key in seen:
                problems.append(f"{name}: duplicate {r['id']}")
            seen.add(key)
    for r in rows_by_file["long.jsonl"]:
        if count_tokens and not 300 <= r["tokens"] <= 900:
            problems.append(f"long.jsonl: {r['id']} has {r['tokens']} tokens, outside 300-900")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = ap.parse_args()
    count_tokens = tokenizer_counter()
    if count_tokens is None:
        print("note: tokenizers or the model's tokenizer.json not found; `tokens` left out", file=sys.stderr)
    files = {"multiturn.jsonl": multiturn_rows(), "raw.jsonl": raw_rows(), "long.jsonl": long_rows(count_tokens)}
    problems = check(files, count_tokens)
    if problems:
        sys.exit("\n".join(problems))
    status = 0
    for name, rows in files.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                print(f"{path} differs from what the pieces give; rerun without --check", file=sys.stderr)
                status = 1
        else:
            path.write_text(text, encoding="utf-8")
        counts = {}
        for r in rows:
            k = (r["label"], r.get("shape") or r.get("form") or r.get("position"))
            counts[k] = counts.get(k, 0) + 1
        print(name, len(rows), dict(sorted(counts.items())))
    sys.exit(status)


if __name__ == "__main__":
    main()
