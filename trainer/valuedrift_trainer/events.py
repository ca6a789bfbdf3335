"""The trainer's only protocol with the activity that started it: one JSON event per stdout line.

    {"event": "progress",   "step": int, "total": int, "loss": float|null, "lr": float|null}
    {"event": "checkpoint", "step": int, "path": str}      # emitted after the directory is complete
    {"event": "done",       "finalStep": int, "path": str}
    {"event": "error",      "kind": str, "message": str}   # then a non-zero exit

Everything else (library logs, warnings, progress bars, stray ``print``s, even C-level writes) must
reach stderr, so `guard_stdout()` moves file descriptor 1 onto stderr and keeps a private duplicate
of the original stdout for events. Under a multi-process launcher only rank 0 reports progress,
checkpoints and completion; any rank may report an error (the activity keeps the first).

Test-only fault: with VALUEDRIFT_TRAINER_TEST_HANG_AT_STEP=N set, the trainer reports progress at
step N and then blocks for good, printing nothing more (as a deadlocked collective would), so tests
can show that the activity kills a silent trainer (VALUEDRIFT_TRAINER_STALL_SECONDS). It reaches the
trainer only when the worker's environment sets it (the VALUEDRIFT_ prefix is allow-listed); never set
it outside tests.

Error kinds: `bad_config`, `dataset_schema`, `model_not_found` and `out_of_memory` are refusals a
retry would compute again with the same config, data and model; `transient` is everything else.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from typing import IO, Any

KINDS = ("bad_config", "dataset_schema", "model_not_found", "out_of_memory", "transient")

_lock = threading.Lock()
_stream: IO[str] | None = None


class TrainerError(Exception):
    """A failure already classified into one of `KINDS`."""

    def __init__(self, kind: str, message: str):
        if kind not in KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message


def guard_stdout() -> None:
    """Reserve the real stdout for events and send every other write on fd 1 to stderr."""
    global _stream
    if _stream is not None:
        return
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    _stream = os.fdopen(events_fd, "w", buffering=1, encoding="utf-8")
    sys.stdout = sys.stderr


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    # JSON has no NaN/Infinity; a diverged loss is reported as null (the stderr log keeps the value).
    return f if math.isfinite(f) else None


def emit(event: dict[str, Any], *, all_ranks: bool = False) -> None:
    if not all_ranks and not _is_main_rank():
        return
    line = json.dumps(event, separators=(",", ":"), allow_nan=False)
    with _lock:
        stream = _stream or sys.__stdout__
        stream.write(line + "\n")
        stream.flush()


def progress(step: int, total: int, loss: float | None = None, lr: float | None = None) -> None:
    emit({"event": "progress", "step": int(step), "total": int(total), "loss": _finite(loss), "lr": _finite(lr)})
    _test_hang(int(step))


def _test_hang(step: int) -> None:
    """The test-only fault above: block forever once step N has been reported (every rank)."""
    at = os.environ.get("VALUEDRIFT_TRAINER_TEST_HANG_AT_STEP", "")
    if not at or step < int(at):
        return
    log(f"VALUEDRIFT_TRAINER_TEST_HANG_AT_STEP={at}: hanging at step {step} (test-only fault)")
    threading.Event().wait()


def checkpoint(step: int, path: str) -> None:
    emit({"event": "checkpoint", "step": int(step), "path": os.path.abspath(path)})


def done(final_step: int, path: str) -> None:
    # An empty path means no checkpoint was written (save_checkpoints false); keep it empty.
    emit({"event": "done", "finalStep": int(final_step), "path": os.path.abspath(path) if path else ""})


def error(kind: str, message: str) -> None:
    emit({"event": "error", "kind": kind, "message": message}, all_ranks=True)


def log(message: str) -> None:
    """Human-readable diagnostics: stderr only."""
    print(f"[valuedrift_trainer] {message}", file=sys.stderr, flush=True)


def classify(exc: BaseException) -> tuple[str, str]:
    """Map an exception to (kind, message)."""
    if isinstance(exc, TrainerError):
        return exc.kind, exc.message
    if isinstance(exc, MemoryError):
        return "out_of_memory", f"host memory exhausted: {exc}"
    name = type(exc).__name__
    text = str(exc)
    if name == "OutOfMemoryError" or "CUDA out of memory" in text or "DefaultCPUAllocator: can't allocate" in text:
        # The same batch size on the same device runs out again; the config has to change.
        first = text.strip().splitlines()[0] if text.strip() else name
        return "out_of_memory", first[:500]
    return "transient", f"{name}: {text}"[:2000]
