"""Training curves: every stage writes TensorBoard event files (read back with TensorBoard's own
reader) and scalars.jsonl with the same scalars; `report_to` adds integrations or refuses clearly.

    .venv/bin/python -m pytest trainer/tests/test_curves.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from conftest import assert_trained, tiny_config


def read_events(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files in `directory`, as (step, value), through TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(directory.glob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file in {directory}: {sorted(p.name for p in directory.iterdir())}"
    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (directory / "scalars.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert set(row) == {"step", "wall_time", "values"}, row
        for tag, value in row["values"].items():
            out.setdefault(tag, []).append((row["step"], value))
    return out


def assert_same_curves(events: dict[str, list[tuple[int, float]]], scalars: dict[str, list[tuple[int, float]]], tags: list[str]) -> None:
    for tag in tags:
        assert tag in events, f"{tag} not among the event files' tags {sorted(events)}"
        assert [s for s, _ in events[tag]] == [s for s, _ in scalars[tag]], tag
        # Event files hold float32.
        for (_, a), (_, b) in zip(events[tag], scalars[tag]):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-7), tag


def test_sft_writes_tensorboard_event_files_with_loss_lr_and_grad_norm(train, data_dir: Path, tmp_path: Path) -> None:
    tb = tmp_path / "tb" / "attempt-1"
    run = train(tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out", max_steps=4, checkpoint_every=2,
                            tensorboard_dir=str(tb)))
    assert_trained(run, steps=4, every=2)
    events = read_events(tb)
    scalars = read_scalars(tb)
    assert [s for s, _ in events["train/loss"]] == [1, 2, 3, 4]
    assert all(math.isfinite(v) and v > 0 for _, v in events["train/loss"])
    # The loss the protocol reported is the one in the event file.
    reported = {e["step"]: e["loss"] for e in run.of("progress") if e["loss"] is not None}
    for step, value in events["train/loss"]:
        assert value == pytest.approx(reported[step], rel=1e-5)
    assert_same_curves(events, scalars, ["train/loss", "train/learning_rate", "train/grad_norm"])
    # Nothing went to the default places: the stage's output holds checkpoints only.
    assert not (tmp_path / "out" / "tensorboard").exists() and not (tmp_path / "out" / "runs").exists()


def test_event_files_default_to_the_output_folder(train, data_dir: Path, tmp_path: Path) -> None:
    run = train(tiny_config("reward", data_dir / "pref.jsonl", tmp_path / "out"))
    assert_trained(run, steps=2, every=1)
    events = read_events(tmp_path / "out" / "tensorboard")
    assert [s for s, _ in events["train/loss"]] == [1, 2]


@pytest.mark.parametrize("stage", ["dpo", "simpo"])
def test_pairwise_stages_log_rewards_and_margins(train, data_dir: Path, tmp_path: Path, stage: str) -> None:
    tb = tmp_path / "tb"
    run = train(tiny_config(stage, data_dir / "pref.jsonl", tmp_path / "out", max_prompt_length=64, tensorboard_dir=str(tb)))
    assert_trained(run, steps=2, every=1)
    events = read_events(tb)
    assert_same_curves(events, read_scalars(tb), ["train/loss", "train/learning_rate", "train/rewards/margins"])
    assert [s for s, _ in events["train/rewards/margins"]] == [1, 2]


def test_ppo_logs_kl_and_loss(train, data_dir: Path, tmp_path: Path) -> None:
    reward = train(tiny_config("reward", data_dir / "pref.jsonl", tmp_path / "rm"))
    assert_trained(reward, steps=2, every=1)
    tb = tmp_path / "tb"
    run = train(tiny_config("ppo", data_dir / "ppo.jsonl", tmp_path / "out", reward_model=reward.of("done")[0]["path"],
                            response_length=12, max_steps=2, tensorboard_dir=str(tb)))
    assert_trained(run, steps=2, every=1)
    events = read_events(tb)
    assert_same_curves(events, read_scalars(tb), ["train/loss", "train/learning_rate", "train/kl", "train/score"])
    assert [s for s, _ in events["train/kl"]] == [1, 2]


def refusal(run: Any) -> str:
    assert run.rc != 0 and run.error is not None and run.error["kind"] == "bad_config", run.stderr[-3000:]
    assert not run.of("progress"), "refused only after training had started"
    return run.error["message"]


def test_report_to_refuses_unknown_and_uninstalled_integrations(train, data_dir: Path, tmp_path: Path) -> None:
    import importlib.util

    cfg = tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out", report_to=["tensorboard", "comet"])
    assert "report_to: unknown integration 'comet' (known: tensorboard, wandb, mlflow)" in refusal(train(cfg))
    cfg = tiny_config("ppo", data_dir / "ppo.jsonl", tmp_path / "out", reward_model=str(tmp_path), report_to=["mlflow"])
    assert "the ppo stage writes TensorBoard files only, not mlflow" in refusal(train(cfg))
    cfg = tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out", report_to="wandb")
    assert "report_to: expected array of string" in refusal(train(cfg))
    if importlib.util.find_spec("wandb") is None:
        cfg = tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out", report_to=["wandb"])
        assert "report_to: wandb needs the `wandb` package in the trainer's Python environment" in refusal(train(cfg))


def test_report_to_reaches_transformers(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `report_to` the Trainer gets: TensorBoard first and once, then the spec's integrations."""
    import importlib.util

    from valuedrift_trainer import config, hftrain

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in ("wandb", "mlflow") else real(name, *a))
    cfg = config.parse_train_config(tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out", report_to=["mlflow", "tensorboard", "wandb"]))
    assert hftrain.training_args(cfg, False)["report_to"] == ["tensorboard", "mlflow", "wandb"]
    cfg = config.parse_train_config(tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out"))
    assert hftrain.training_args(cfg, False)["report_to"] == ["tensorboard"]
