"""Clustering step of the V-PRISM build (App. A.1; activities/derived/vprism.ts runs it):

    python -m valuedrift_trainer vprism-cluster --config cfg.json

The rephrased questions are embedded (all-mpnet-base-v2 when cached, else the packaged MiniLM:
derived.load_encoder), reduced with UMAP (seeded; ``umap_dimensions`` 0 clusters the embeddings
themselves), clustered with HDBSCAN (scikit-learn's), and each cluster is described by its c-TF-IDF
n-grams (a cluster is one class; a term's weight is its share of the cluster's terms times
log(1 + mean terms per cluster / its count over all clusters)).

Category assignment (the paper picked 11 of its 22 clusters by hand; here it is computed, and every
cluster is reported so the choice can be audited): a cluster's score for a category is the mean of
two cosines to the embedding of the category's topic: its centroid (the mean of its questions'
embeddings) and its top n-grams read as one text. The best category wins if its score reaches
``assign_threshold``; otherwise the cluster is dropped, with the reason. Several clusters may go to
one category. HDBSCAN's noise points belong to no cluster and are counted.

Config (JSON): ``questions_file`` (JSONL ``{"question": str}``; a question's index is its line
among the non-blank lines), ``topics`` ({category: topic}), ``umap_dimensions``, ``umap_neighbors``,
``umap_min_dist``, ``min_cluster_size``, ``min_samples`` (null: HDBSCAN's default),
``top_ngrams``, ``assign_threshold``, ``seed``, ``output_file``. Output (JSON): the embedder, the
UMAP settings actually used (a handful of questions caps dimensions and neighbours), and the
clusters (members, size, n-grams, scores, category or null and why), largest first.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from . import events
from .events import TrainerError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULTS: dict[str, Any] = {
    "umap_dimensions": 20,
    "umap_neighbors": 15,
    "umap_min_dist": 0.0,
    "min_cluster_size": 10,
    "min_samples": None,
    "top_ngrams": 10,
    "assign_threshold": 0.3,
    "seed": 0,
}


def read_questions(path: str) -> list[str]:
    """The questions of a JSONL file; a malformed line fails naming the file, line and field."""
    out: list[str] = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise TrainerError("bad_config", f"questions_file {path}: {e.strerror}") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainerError("dataset_schema", f"{path} line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise TrainerError("dataset_schema", f"{path} line {n}: each line must be a JSON object")
            q = row.get("question")
            if not isinstance(q, str) or not q.strip():
                raise TrainerError("dataset_schema", f"{path} line {n}: field 'question' must be a non-empty string")
            out.append(q.strip())
    if not out:
        raise TrainerError("dataset_schema", f"{path}: empty file (no questions)")
    return out


def reduce(emb: Any, dimensions: int, neighbors: int, min_dist: float, seed: int) -> tuple[Any, dict[str, Any]]:
    """UMAP to ``dimensions`` (seeded, so single-threaded and repeatable); 0 keeps the embeddings."""
    n = emb.shape[0]
    if dimensions == 0:
        return emb, {"dimensions": 0}
    # Spectral initialisation needs dimensions < n - 1; UMAP needs neighbours < n.
    dims = max(1, min(dimensions, n - 2))
    nn = max(2, min(neighbors, n - 1))
    import umap  # noqa: PLC0415 — seconds to import (numba)

    reducer = umap.UMAP(n_components=dims, n_neighbors=nn, min_dist=min_dist, metric="cosine", random_state=seed,
                        init="spectral" if n > dims + 2 else "random")
    return reducer.fit_transform(emb), {"dimensions": dims, "neighbors": nn, "min_dist": min_dist, "seed": seed}


def cluster_labels(points: Any, min_cluster_size: int, min_samples: int | None) -> list[int]:
    from sklearn.cluster import HDBSCAN  # noqa: PLC0415

    size = max(2, min(min_cluster_size, points.shape[0]))
    return [int(x) for x in HDBSCAN(min_cluster_size=size, min_samples=min_samples, copy=True).fit_predict(points)]


def ctfidf(groups: list[list[str]], top: int) -> list[list[str]]:
    """Per cluster (its questions), the ``top`` n-grams (1-2 words) by c-TF-IDF. N-grams are counted
    within each question, so none spans two questions."""
    import numpy as np  # noqa: PLC0415
    from sklearn.feature_extraction.text import CountVectorizer  # noqa: PLC0415

    try:
        vec = CountVectorizer(ngram_range=(1, 2), stop_words="english").fit([q for g in groups for q in g])
    except ValueError:  # nothing but stop words
        return [[] for _ in groups]
    tf = np.stack([np.asarray(vec.transform(g).sum(axis=0)).ravel() for g in groups]).astype(np.float64)
    terms = vec.get_feature_names_out()
    words = tf.sum(axis=1, keepdims=True)
    words[words == 0] = 1
    avg = float(tf.sum()) / max(1, len(groups))
    idf = np.log(1 + avg / np.maximum(tf.sum(axis=0), 1))
    w = (tf / words) * idf
    out = []
    for row in w:
        order = np.argsort(-row, kind="stable")[:top]
        out.append([str(terms[i]) for i in order if row[i] > 0])
    return out


def cluster(questions: list[str], topics: dict[str, str], cfg: dict[str, Any], encoder: Any) -> dict[str, Any]:
    import numpy as np  # noqa: PLC0415

    from .derived import embed  # noqa: PLC0415

    emb = embed(encoder, questions)
    points, used = reduce(emb, int(cfg["umap_dimensions"]), int(cfg["umap_neighbors"]), float(cfg["umap_min_dist"]), int(cfg["seed"]))
    labels = cluster_labels(points, int(cfg["min_cluster_size"]), cfg["min_samples"])
    ids = sorted({x for x in labels if x >= 0})
    members = {c: [i for i, x in enumerate(labels) if x == c] for c in ids}
    ngrams = ctfidf([[questions[i] for i in members[c]] for c in ids], int(cfg["top_ngrams"])) if ids else []
    cats = sorted(topics)
    t_emb = embed(encoder, [topics[c] for c in cats])
    g_emb = embed(encoder, [", ".join(g) if g else "(none)" for g in ngrams])
    clusters = []
    for k, c in enumerate(ids):
        centroid = emb[members[c]].mean(axis=0)
        centroid = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
        s_centroid = t_emb @ centroid
        s_ngrams = t_emb @ g_emb[k]
        score = (s_centroid + s_ngrams) / 2
        best = int(np.argmax(score))
        sims = {cat: {"score": round(float(score[j]), 4), "centroid": round(float(s_centroid[j]), 4), "ngrams": round(float(s_ngrams[j]), 4)} for j, cat in enumerate(cats)}
        top = round(float(score[best]), 4)
        ok = math.isfinite(top) and top >= float(cfg["assign_threshold"])
        clusters.append({
            "members": members[c],
            "size": len(members[c]),
            "ngrams": ngrams[k],
            "similarity": sims,
            "category": cats[best] if ok else None,
            "reason": f"closest to {cats[best]} ({top})" + ("" if ok else f", below the threshold {cfg['assign_threshold']}"),
        })
    clusters.sort(key=lambda x: (-x["size"], x["members"][0]))
    for i, c in enumerate(clusters):
        c["id"] = i
    return {"questions": len(questions), "umap": used, "noise": labels.count(-1), "clusters": clusters}


def settings(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {**DEFAULTS, **{k: v for k, v in cfg.items() if k in DEFAULTS and v is not None}}
    if "min_samples" in cfg:
        out["min_samples"] = cfg["min_samples"]
    for k in ("umap_dimensions", "umap_neighbors", "min_cluster_size", "top_ngrams", "seed"):
        if not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] < 0:
            raise TrainerError("bad_config", f"{k} must be a non-negative integer, got {out[k]!r}")
    if out["min_cluster_size"] < 2:
        raise TrainerError("bad_config", "min_cluster_size must be at least 2")
    if out["min_samples"] is not None and (not isinstance(out["min_samples"], int) or out["min_samples"] < 1):
        raise TrainerError("bad_config", f"min_samples must be a positive integer or null, got {out['min_samples']!r}")
    return out


def main(config_path: str) -> None:
    from . import config  # noqa: PLC0415
    from .derived import load_encoder  # noqa: PLC0415

    cfg = config.read_json(config_path)
    if not isinstance(cfg, dict):
        raise TrainerError("bad_config", "the config must be a JSON object")
    for k in ("questions_file", "output_file"):
        if not isinstance(cfg.get(k), str) or not cfg[k]:
            raise TrainerError("bad_config", f"{k} is required")
    topics = cfg.get("topics")
    if not isinstance(topics, dict) or not topics or not all(isinstance(v, str) and v.strip() for v in topics.values()):
        raise TrainerError("bad_config", "topics must map each category to a non-empty topic")
    s = settings(cfg)
    questions = read_questions(cfg["questions_file"])
    encoder, name = load_encoder()
    events.log(f"vprism-cluster: {len(questions)} questions, embedder {name}")
    result = {"embedder": name, "settings": s, **cluster(questions, topics, s, encoder)}
    Path(cfg["output_file"]).write_text(json.dumps(result), encoding="utf-8")
    events.done(0, cfg["output_file"])
