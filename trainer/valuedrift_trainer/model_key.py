"""Content keys of base models: what the stage and evaluation caches key a starting point by.

A model's key must change whenever its weights can, and only then:

- ``pkg:<package>``  — sha256 of the shipped GGUF file;
- ``tiny:<package>`` — the GGUF's sha256 too (the tiny model is built from its config and tokenizer
  with a fixed seed) plus the tiny shape, so a change to the shrunk architecture changes the key;
- ``tiny-llama3b:[dir]`` — the Llama-3.2-3B shape, the layer count in force and the tokenizer files;
- ``hf:<org>/<name>`` — the hub id and the commit it resolves to (asked of the hub when reachable,
  else the commit of the local hub cache's snapshot); refused when neither is known;
- ``/abs/dir`` — sha256 over every file's relative path and content.

Printed as one JSON object on stdout: ``{"key": ..., "basis": ...}``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from . import models
from .events import TrainerError

_CHUNK = 1 << 20


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _dir_sha256(root: str) -> str:
    """Hash of (relative path, file hash) for every file under root, in sorted order."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            h.update(f"{rel}\0{_file_sha256(full)}\n".encode())
    return h.hexdigest()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _hub_revision(repo: str) -> str:
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(repo).sha
        if sha:
            return str(sha)
    except Exception:  # noqa: BLE001 — offline or unreachable: fall back to the local cache
        pass
    try:
        from huggingface_hub import snapshot_download

        return os.path.basename(os.path.normpath(snapshot_download(repo, local_files_only=True)))
    except Exception as exc:  # noqa: BLE001
        raise TrainerError(
            "model_not_found",
            f"model hf:{repo}: cannot tell which revision it is (hub unreachable and not in the local hub cache): {exc}",
        ) from exc


def model_key(spec: str) -> dict[str, str]:
    ref = models.resolve(spec)
    if ref.kind == "pkg":
        gguf = os.path.join(ref.path or "", ref.gguf_file or "")
        basis = {"kind": "pkg", "gguf": ref.gguf_file, "sha256": _file_sha256(gguf)}
    elif ref.kind == "tiny":
        gguf = os.path.join(ref.path or "", ref.gguf_file or "")
        basis = {"kind": "tiny", "gguf": ref.gguf_file, "sha256": _file_sha256(gguf), "shape": models.TINY_SHAPE,
                 "version": models.TINY_VERSION, "seed": models.TINY_SEED}
    elif ref.kind == "tiny-llama3b":
        tokenizer = (_file_sha256(os.path.join(ref.path or "", ref.gguf_file)) if ref.gguf_file
                     else _dir_sha256(ref.path or ""))
        basis = {"kind": "tiny-llama3b", "shape": models.LLAMA3B_SHAPE, "layers": models.llama3b_layers(),
                 "tokenizer": tokenizer}
    elif ref.kind == "hf":
        basis = {"kind": "hf", "id": ref.path, "revision": _hub_revision(ref.path or "")}
    else:
        basis = {"kind": "path", "sha256": _dir_sha256(ref.path or "")}
    return {"key": f"{ref.kind}:{_digest(basis)}", "basis": json.dumps(basis, sort_keys=True)}
