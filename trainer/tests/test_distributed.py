"""Data-parallel training: two processes under torchrun on CPU (gloo), as accelerate runs one process
per GPU. The global batch is split across ranks, so two ranks must train exactly like one; only rank
0 speaks the event protocol; checkpoints hold every rank's RNG state and resume under two ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_trained, tiny_config

RANKS = 2


def sft_config(data_dir: Path, out: Path, **extra) -> dict:
    # 12 rows, global batch 4: one epoch is 3 optimizer steps, whatever the number of ranks.
    return tiny_config("sft", data_dir / "sft.jsonl", out, max_steps=3, global_batch_size=4, **extra)


@pytest.fixture(scope="module")
def single(train, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    run = train(sft_config(data_dir, tmp_path_factory.mktemp("single") / "out"))
    assert_trained(run, steps=3, every=1)
    return run


@pytest.fixture(scope="module")
def ranks2(train, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    run = train(sft_config(data_dir, tmp_path_factory.mktemp("ranks2") / "out"), processes=RANKS)
    assert_trained(run, steps=3, every=1)
    return run


def test_two_ranks_train_like_one(single, ranks2) -> None:
    one = {e["step"]: e for e in single.of("progress")}
    two = {e["step"]: e for e in ranks2.of("progress")}
    assert sorted(two) == [0, 1, 2, 3] and len(ranks2.of("progress")) == 4  # rank 0 alone reports
    for step in (1, 2, 3):
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], rel=1e-4)
        assert two[step]["lr"] == pytest.approx(one[step]["lr"])
    for run in (single, ranks2):
        state = json.loads((Path(run.of("done")[0]["path"]) / "trainer_state.json").read_text())
        assert state["epoch"] == pytest.approx(1.0)  # 3 steps × global batch 4 = the 12 rows, once
    final = Path(ranks2.of("done")[0]["path"])
    assert sorted(p.name for p in final.glob("rng_state*.pth")) == [f"rng_state_{r}.pth" for r in range(RANKS)]


def test_two_ranks_resume(train, ranks2, data_dir: Path, tmp_path: Path) -> None:
    ckpt2 = next(e["path"] for e in ranks2.of("checkpoint") if e["step"] == 2)
    run = train(sft_config(data_dir, tmp_path / "resumed", resume_from=ckpt2), processes=RANKS)
    assert run.rc == 0, run.stderr[-4000:]
    assert [e["step"] for e in run.of("progress")] == [2, 3]
    assert [e["step"] for e in run.of("checkpoint")] == [3]
    assert run.of("progress")[-1]["loss"] == pytest.approx(ranks2.of("progress")[-1]["loss"], rel=1e-4)


@pytest.fixture(scope="module")
def reward2(train, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("reward2") / "out"
    run = train(tiny_config("reward", data_dir / "pref.jsonl", out, global_batch_size=4), processes=RANKS)
    assert_trained(run, steps=2, every=1)
    return run


@pytest.mark.parametrize("stage", ["dpo", "simpo"])
def test_preference_stages_under_two_ranks(train, data_dir: Path, tmp_path: Path, stage: str) -> None:
    cfg = tiny_config(stage, data_dir / "pref.jsonl", tmp_path / "out", max_prompt_length=64, global_batch_size=4)
    assert_trained(train(cfg, processes=RANKS), steps=2, every=1)


def test_ppo_under_two_ranks(train, reward2, data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config("ppo", data_dir / "ppo.jsonl", tmp_path / "out", reward_model=reward2.of("done")[0]["path"],
                      response_length=12, global_batch_size=4)
    run = train(cfg, processes=RANKS)
    assert_trained(run, steps=2, every=1)
    assert (Path(run.of("done")[0]["path"]) / "value_model" / "config.json").is_file()
