"""Retrieval for the dataset stance analysis (App. K.1): which datapoints of a dataset are about the
eval set's questions.

    python -m valuedrift_trainer.analysis retrieve --config cfg.json

Config (JSON): ``candidates_file`` (JSONL ``{"text": ...}``: one datapoint's text per line, by line
number), ``questions_file`` (JSONL ``{"category", "question"}``), ``threshold`` (cosine similarity a
datapoint needs to some question), ``output_file``. The output is JSON: the embedding model used,
the number of candidates, and every retained datapoint ``{"index", "category", "question",
"similarity"}`` in line order, where ``question`` is the line number of its most similar question,
whose category it is analysed under.

The encoder is derived.py's: all-mpnet-base-v2 from the local Hugging Face cache (the paper's),
else the packaged MiniLM; nothing is downloaded. Embeddings are normalised, so a dot product is the
cosine. Candidates are embedded in chunks so memory stays flat in the dataset's size.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .derived import embed, load_encoder, read_jsonl

CHUNK = 4096


def retrieve(candidates: list[str], questions: list[dict], threshold: float, encoder: Any) -> list[dict]:
    """Each candidate whose best cosine to a question is ≥ ``threshold``, with that question."""
    import numpy as np

    q_emb = embed(encoder, [q["question"] for q in questions])
    kept: list[dict] = []
    for start in range(0, len(candidates), CHUNK):
        sims = embed(encoder, candidates[start:start + CHUNK]) @ q_emb.T
        best = np.argmax(sims, axis=1)
        for k, j in enumerate(best):
            s = float(sims[k, j])
            if s >= threshold:
                kept.append({"index": start + k, "category": questions[int(j)]["category"], "question": int(j),
                             "similarity": round(s, 6)})
    return kept


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m valuedrift_trainer.analysis")
    p.add_argument("command", choices=["retrieve"])
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text(encoding="utf-8"))
    try:
        threshold = float(cfg["threshold"])
        if not -1.0 <= threshold <= 1.0:
            raise ValueError("threshold must be within [-1, 1]")
        cands = [r["text"] for r in read_jsonl(cfg["candidates_file"], "candidates", ("text",))]
        questions = read_jsonl(cfg["questions_file"], "questions", ("category", "question"))
        if not questions:
            raise ValueError("questions: the eval set is empty")
    except (KeyError, ValueError, TypeError) as e:
        print(json.dumps({"event": "error", "kind": "bad_input", "message": str(e)}), flush=True)
        return 2
    encoder, name = load_encoder()
    kept = retrieve(cands, questions, threshold, encoder)
    Path(cfg["output_file"]).write_text(json.dumps({"embedder": name, "candidates": len(cands), "kept": kept}), encoding="utf-8")
    print(json.dumps({"event": "done", "embedder": name, "kept": len(kept)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
