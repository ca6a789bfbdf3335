#!/usr/bin/env python3
"""Validate the valuedrift demo data (stdlib only).

Usage: python3 data/check_data.py   (exit status 0 = all checks passed)
"""
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEMO = ROOT / "demo"
STANCE = ROOT / "stance"

EXPECTED_CATEGORIES = {
    "abortion", "gender-lgbtq", "climate", "immigration", "economic-social-policy",
    "race-racism", "elections-politics", "religion-spirituality",
    "death-penalty-euthanasia", "work-attitudes", "family-relationships",
}
LABELS = ("support", "neutral", "oppose")
PREFS_PER_CAT = 12
EVAL_PER_CAT = 5
STANCE_PER_LABEL_PER_CAT = 5
SFT_MIN, SFT_MAX = 100, 150
SFT_MAX_WORDS = 80
PREF_MAX_WORDS = 60
STANCE_MAX_WORDS = 80

errors = []


def err(msg):
    errors.append(msg)


def norm(text):
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def words(text):
    return len(text.split())


def nonempty_str(v):
    return isinstance(v, str) and v.strip() != ""


def load_jsonl(path):
    rows = []
    if not path.exists():
        err(f"{path}: missing")
        return rows
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                err(f"{path.name}:{n}: blank line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                err(f"{path.name}:{n}: invalid JSON ({e})")
                continue
            if not isinstance(obj, dict):
                err(f"{path.name}:{n}: not a JSON object")
                continue
            rows.append((n, obj))
    return rows


def check_keys(name, n, obj, keys):
    if set(obj) != set(keys):
        err(f"{name}:{n}: keys {sorted(obj)} != expected {sorted(keys)}")
        return False
    return True


def check_ids(name, rows, prefix, all_ids):
    ids = [o.get("id") for _, o in rows]
    for i, c in Counter(ids).items():
        if c > 1:
            err(f"{name}: duplicate id {i!r}")
    for n, o in rows:
        rid, cat = o.get("id"), o.get("category")
        if not re.fullmatch(rf"{prefix}-{re.escape(str(cat))}-\d{{2}}", str(rid)):
            err(f"{name}:{n}: id {rid!r} does not match '{prefix}-<category>-<nn>'")
        if rid in all_ids:
            err(f"{name}:{n}: id {rid!r} also used in another file")
    all_ids.update(ids)


def check_per_category(name, rows, topics, expected):
    counts = Counter(o.get("category") for _, o in rows)
    for cat in counts:
        if cat not in topics:
            err(f"{name}: unknown category {cat!r}")
    for cat in topics:
        if counts.get(cat, 0) != expected:
            err(f"{name}: category {cat!r} has {counts.get(cat, 0)} rows, expected {expected}")
    return counts


def main():
    # topics.json
    topics_path = DEMO / "topics.json"
    try:
        topics = json.loads(topics_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        print(f"FAIL: cannot read {topics_path}: {e}")
        return 1
    if not isinstance(topics, dict) or set(topics) != EXPECTED_CATEGORIES:
        err(f"topics.json: categories {sorted(topics) if isinstance(topics, dict) else topics} "
            f"!= expected {sorted(EXPECTED_CATEGORIES)}")
        if not isinstance(topics, dict):
            topics = {}
    for cat, t in topics.items():
        if not nonempty_str(t):
            err(f"topics.json: empty topic for {cat!r}")

    all_ids = set()

    # sft.jsonl
    sft = load_jsonl(DEMO / "sft.jsonl")
    if not SFT_MIN <= len(sft) <= SFT_MAX:
        err(f"sft.jsonl: {len(sft)} rows, expected {SFT_MIN}-{SFT_MAX}")
    sft_prompts = Counter()
    for n, o in sft:
        if not check_keys("sft.jsonl", n, o, ["messages"]):
            continue
        msgs = o["messages"]
        if not (isinstance(msgs, list) and len(msgs) == 2
                and all(isinstance(m, dict) and set(m) == {"role", "content"} for m in msgs)
                and [m["role"] for m in msgs] == ["user", "assistant"]
                and all(nonempty_str(m["content"]) for m in msgs)):
            err(f"sft.jsonl:{n}: messages must be [user, assistant] with non-empty content")
            continue
        sft_prompts[norm(msgs[0]["content"])] += 1
        if words(msgs[1]["content"]) > SFT_MAX_WORDS:
            err(f"sft.jsonl:{n}: assistant answer has {words(msgs[1]['content'])} words (> {SFT_MAX_WORDS})")
    for p, c in sft_prompts.items():
        if c > 1:
            err(f"sft.jsonl: duplicate user prompt {p!r}")

    # preferences.jsonl
    prefs = load_jsonl(DEMO / "preferences.jsonl")
    pref_keys = ["id", "category", "prompt", "support", "oppose"]
    prefs = [(n, o) for n, o in prefs if check_keys("preferences.jsonl", n, o, pref_keys)]
    check_ids("preferences.jsonl", prefs, "pref", all_ids)
    check_per_category("preferences.jsonl", prefs, topics, PREFS_PER_CAT)
    pref_prompts = Counter()
    for n, o in prefs:
        for k in ("prompt", "support", "oppose"):
            if not nonempty_str(o[k]):
                err(f"preferences.jsonl:{n}: empty {k}")
        if norm(o["support"]) == norm(o["oppose"]):
            err(f"preferences.jsonl:{n}: support and oppose are identical")
        for k in ("support", "oppose"):
            if words(o[k]) > PREF_MAX_WORDS:
                err(f"preferences.jsonl:{n}: {k} has {words(o[k])} words (> {PREF_MAX_WORDS})")
        pref_prompts[norm(o["prompt"])] += 1
    for p, c in pref_prompts.items():
        if c > 1:
            err(f"preferences.jsonl: duplicate prompt {p!r}")

    # eval.jsonl
    ev = load_jsonl(DEMO / "eval.jsonl")
    ev = [(n, o) for n, o in ev if check_keys("eval.jsonl", n, o, ["id", "category", "question"])]
    check_ids("eval.jsonl", ev, "eval", all_ids)
    check_per_category("eval.jsonl", ev, topics, EVAL_PER_CAT)
    eval_q = Counter()
    for n, o in ev:
        if not nonempty_str(o["question"]):
            err(f"eval.jsonl:{n}: empty question")
            continue
        q = norm(o["question"])
        eval_q[q] += 1
        if q in pref_prompts:
            err(f"eval.jsonl:{n}: question also appears as a preference prompt: {o['question']!r}")
        if q in sft_prompts:
            err(f"eval.jsonl:{n}: question also appears as an SFT prompt: {o['question']!r}")
    for q, c in eval_q.items():
        if c > 1:
            err(f"eval.jsonl: duplicate question {q!r}")

    # stance/labelled.jsonl
    st = load_jsonl(STANCE / "labelled.jsonl")
    st_keys = ["id", "category", "topic", "question", "response", "label"]
    st = [(n, o) for n, o in st if check_keys("labelled.jsonl", n, o, st_keys)]
    check_ids("labelled.jsonl", st, "stance", all_ids)
    check_per_category("labelled.jsonl", st, topics, STANCE_PER_LABEL_PER_CAT * len(LABELS))
    per = Counter()
    pairs = Counter()
    for n, o in st:
        if o["label"] not in LABELS:
            err(f"labelled.jsonl:{n}: label {o['label']!r} not in {LABELS}")
        if o["category"] in topics and o["topic"] != topics[o["category"]]:
            err(f"labelled.jsonl:{n}: topic {o['topic']!r} != topics.json entry for {o['category']!r}")
        for k in ("question", "response"):
            if not nonempty_str(o[k]):
                err(f"labelled.jsonl:{n}: empty {k}")
        if words(o["response"]) > STANCE_MAX_WORDS:
            err(f"labelled.jsonl:{n}: response has {words(o['response'])} words (> {STANCE_MAX_WORDS})")
        per[(o["category"], o["label"])] += 1
        pairs[(norm(o["question"]), norm(o["response"]))] += 1
    for cat in topics:
        for lab in LABELS:
            if per[(cat, lab)] != STANCE_PER_LABEL_PER_CAT:
                err(f"labelled.jsonl: {cat}/{lab} has {per[(cat, lab)]} rows, "
                    f"expected {STANCE_PER_LABEL_PER_CAT}")
    for p, c in pairs.items():
        if c > 1:
            err(f"labelled.jsonl: duplicate question/response pair {p[0]!r}")
    if len(st) < 165:
        err(f"labelled.jsonl: {len(st)} rows, expected >= 165")

    label_totals = Counter(o["label"] for _, o in st)
    print(f"topics: {len(topics)} | sft: {len(sft)} | preferences: {len(prefs)} | "
          f"eval: {len(ev)} | stance: {len(st)} {dict(label_totals)}")
    if errors:
        for e in errors:
            print("ERROR:", e)
        print(f"FAIL: {len(errors)} problem(s)")
        return 1
    print("OK: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
