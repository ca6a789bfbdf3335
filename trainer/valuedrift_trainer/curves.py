"""Training curves: each run's scalars as TensorBoard event files and as a compact JSON-lines file.

Both live in the run's TensorBoard directory (`TrainConfig.tensorboard_directory()`):

- ``events.out.tfevents.*``: TensorBoard event files. The four Trainer-based stages get them from
  transformers' ``TensorBoardCallback`` (``report_to`` always includes ``"tensorboard"``; its
  directory comes from ``TENSORBOARD_LOGGING_DIR``); the PPO loop writes them itself through
  ``torch.utils.tensorboard.SummaryWriter``. Tags are transformers' (``train/loss``,
  ``train/learning_rate``, ``train/grad_norm``, TRL's ``train/rewards/margins``, PPO's ``train/kl``).
- ``scalars.jsonl``: the same scalars, one ``{"step", "wall_time", "values": {tag: number}}`` line
  per logging step, so that code without a TensorBoard reader (the report activity) can plot them.

Both are flushed on every write, so a copy taken at a checkpoint holds everything logged so far.
Only the main process writes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from typing import Any, Mapping

from .events import TrainerError

SCALARS_FILE = "scalars.jsonl"

# Integrations `report_to` may add to TensorBoard, and the package each needs in the trainer's Python.
INTEGRATIONS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def report_to(extra: list[str], stage: str) -> list[str]:
    """transformers' `report_to`: TensorBoard always, then what the spec asked for (each once)."""
    out = ["tensorboard"]
    for name in extra:
        if name not in INTEGRATIONS:
            raise TrainerError("bad_config", f"report_to: unknown integration {name!r} (known: {', '.join(INTEGRATIONS)})")
        if name not in out:
            out.append(name)
    if stage == "ppo" and out != ["tensorboard"]:
        raise TrainerError("bad_config", f"report_to: the ppo stage writes TensorBoard files only, not {', '.join(out[1:])}")
    for name in out:
        package = INTEGRATIONS[name]
        if importlib.util.find_spec(package) is None:
            raise TrainerError(
                "bad_config",
                f"report_to: {name} needs the `{package}` package in the trainer's Python environment "
                f"(pip install {package})",
            )
    return out


def tags(logs: Mapping[str, Any]) -> dict[str, float]:
    """Finite numbers of a Trainer log dict under the names TensorBoardCallback gives them."""
    from transformers.integrations.integration_utils import rewrite_logs

    out: dict[str, float] = {}
    for name, value in rewrite_logs(dict(logs)).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


class ScalarLog:
    """Appends scalars to ``scalars.jsonl`` (and, with ``tensorboard``, to an event file) in ``directory``."""

    def __init__(self, directory: str, tensorboard: bool = False) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._file = open(os.path.join(directory, SCALARS_FILE), "a", encoding="utf-8")
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=directory)

    def write(self, step: int, values: Mapping[str, float]) -> None:
        values = {k: float(v) for k, v in values.items() if math.isfinite(float(v))}
        if not values:
            return
        now = time.time()
        self._file.write(json.dumps({"step": int(step), "wall_time": now, "values": values}, sort_keys=True) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, int(step), walltime=now)
            self._writer.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
