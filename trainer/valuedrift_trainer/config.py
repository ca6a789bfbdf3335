"""Stage configs: one dataclass per stage, built from a flat JSON object that must not contain
anything the dataclass does not declare.

The TypeScript side generates these files from the lineage spec, so a misspelt hyperparameter is a
bug that must fail loudly (`bad_config`, naming the field) instead of silently training with a
default. Defaults are the paper's (Value Drifts, App. B.2/B.3).

    python -m valuedrift_trainer config-schema            # every stage's fields as JSON
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from .events import TrainerError

LR_SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
BACKENDS = ("auto", "vllm", "transformers")


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass(kw_only=True)
class TrainConfig:
    """Fields every training stage has."""

    stage: str = _help("sft | reward | ppo | dpo | simpo")
    model: str = _help("pkg:<package>, tiny:<package>, tiny-llama3b:[<tokenizer dir>], hf:<org/name> or an absolute path")
    train_file: str = _help("absolute path of the training JSONL")
    output_dir: str = _help("where checkpoint-N directories are written")
    resume_from: str | None = _help(
        "a checkpoint-N directory to continue from, optimizer and scheduler included", default=None
    )
    checkpoint_every: int = _help("save a checkpoint every N optimizer steps (the final step is always saved)", default=100)
    max_steps: int = _help("optimizer steps to train; -1 = derive from num_epochs", default=-1)
    num_epochs: float = _help("passes over train_file when max_steps is -1", default=3.0)
    learning_rate: float = _help("peak learning rate (Adam, no weight decay)", default=2e-5)
    global_batch_size: int = _help("sequences per optimizer step, realised by gradient accumulation", default=128)
    per_device_batch_size: int = _help("micro-batch per device", default=1)
    num_gpus: int = _help("GPUs to train on; 0 = CPU", default=0)
    max_length: int = _help("maximum tokens per sequence", default=2048)
    warmup_ratio: float = _help("fraction of steps with linear warmup", default=0.03)
    lr_scheduler: str = _help("one of " + ", ".join(LR_SCHEDULERS), default="cosine")
    weight_decay: float = _help("AdamW weight decay (the paper uses none)", default=0.0)
    seed: int = _help("seed for data order, initialisation and sampling", default=42)
    gradient_checkpointing: bool = _help("recompute activations in backward to save memory", default=False)
    bf16: Union[bool, str] = _help('"auto" (on when CUDA supports it), true or false', default="auto")
    save_checkpoints: bool = _help(
        "false: write no checkpoint at all (throughput measurements only; `done` then has an empty path)",
        default=True,
    )

    def processes(self) -> int:
        """Processes that share one global batch: the launcher's world size (accelerate or torchrun set
        WORLD_SIZE; one process per GPU, or several CPU processes in the distributed tests), else one
        per GPU."""
        world = os.environ.get("WORLD_SIZE", "")
        return int(world) if world.isdigit() and int(world) > 0 else max(1, self.num_gpus)

    def gradient_accumulation_steps(self) -> int:
        return self.global_batch_size // (self.per_device_batch_size * self.processes())

    def validate(self) -> None:
        _require(os.path.isabs(self.train_file), "train_file", f"must be an absolute path, got {self.train_file!r}")
        _require(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        _require(bool(self.model.strip()), "model", "must not be empty")
        _require(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        _require(self.max_steps == -1 or self.max_steps >= 1, "max_steps", "must be -1 or >= 1")
        _require(self.num_epochs > 0, "num_epochs", "must be > 0")
        _require(self.learning_rate > 0, "learning_rate", "must be > 0")
        _require(self.global_batch_size >= 1, "global_batch_size", "must be >= 1")
        _require(self.per_device_batch_size >= 1, "per_device_batch_size", "must be >= 1")
        _require(self.num_gpus >= 0, "num_gpus", "must be >= 0")
        _require(self.max_length >= 16, "max_length", "must be >= 16")
        _require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        _require(self.lr_scheduler in LR_SCHEDULERS, "lr_scheduler", f"must be one of {', '.join(LR_SCHEDULERS)}")
        _require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _require(self.bf16 in (True, False, "auto"), "bf16", 'must be "auto", true or false')
        per_step = self.per_device_batch_size * self.processes()
        _require(
            self.global_batch_size % per_step == 0,
            "global_batch_size",
            f"{self.global_batch_size} is not divisible by per_device_batch_size × processes "
            f"({self.per_device_batch_size} × {self.processes()} = {per_step})",
        )
        if self.resume_from is not None:
            _require(os.path.isabs(self.resume_from), "resume_from", "must be an absolute path")
            _require(
                os.path.isfile(os.path.join(self.resume_from, "trainer_state.json")),
                "resume_from",
                f"{self.resume_from} is not a checkpoint directory (no trainer_state.json)",
            )
            _require(
                re.fullmatch(r"checkpoint-\d+", os.path.basename(os.path.normpath(self.resume_from))) is not None,
                "resume_from",
                f"{self.resume_from} must be named checkpoint-<step>",
            )


@dataclass(kw_only=True)
class SFTConfig(TrainConfig):
    """Supervised fine-tuning (App. B.2): lr 2e-5, batch 128, 2048 tokens, cosine, 3 % warmup, 3 epochs."""


@dataclass(kw_only=True)
class RewardConfig(TrainConfig):
    """Reward model for PPO (App. B.3): one epoch, lr 1e-5, batch 128."""

    learning_rate: float = _help("peak learning rate", default=1e-5)
    num_epochs: float = _help("passes over train_file when max_steps is -1", default=1.0)


@dataclass(kw_only=True)
class PPOConfig(TrainConfig):
    """PPO (App. B.3): lr 5e-7, batch 32, 3 epochs, 10 % warmup, KL 0.05, responses ≤ 1024, T = 0.7, EOS trick."""

    learning_rate: float = _help("peak learning rate", default=5e-7)
    global_batch_size: int = _help("prompts per PPO update (rollout batch)", default=32)
    warmup_ratio: float = _help("fraction of updates with linear warmup", default=0.1)
    reward_model: str = _help("the trained reward model (a checkpoint dir or any model form)")
    kl_coef: float = _help("per-token KL penalty coefficient against the initial policy", default=0.05)
    response_length: int = _help("maximum tokens sampled per rollout", default=1024)
    temperature: float = _help("rollout sampling temperature", default=0.7)
    missing_eos_penalty: float | None = _help(
        "subtracted from the score of a rollout that never emits EOS (the EOS trick); null disables", default=1.0
    )
    num_ppo_epochs: int = _help("optimisation passes over each rollout batch (TRL default)", default=4)
    num_mini_batches: int = _help("minibatches per rollout batch, one optimizer step each (TRL default)", default=1)
    cliprange: float = _help("policy ratio clip (TRL default)", default=0.2)
    cliprange_value: float = _help("value prediction clip (TRL default)", default=0.2)
    vf_coef: float = _help("value loss coefficient (TRL default)", default=0.1)
    gamma: float = _help("discount (TRL default)", default=1.0)
    lam: float = _help("GAE lambda (TRL default)", default=0.95)
    whiten_rewards: bool = _help("whiten per-token rewards before GAE (TRL default: false)", default=False)
    kl_estimator: str = _help('"k1" (TRL default) or "k3"', default="k1")

    def validate(self) -> None:
        super().validate()
        _require(bool(self.reward_model.strip()), "reward_model", "must not be empty")
        _require(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        _require(1 <= self.response_length < self.max_length, "response_length", "must be in [1, max_length)")
        _require(self.temperature > 0, "temperature", "must be > 0")
        _require(
            self.missing_eos_penalty is None or self.missing_eos_penalty >= 0, "missing_eos_penalty", "must be >= 0"
        )
        _require(self.num_ppo_epochs >= 1, "num_ppo_epochs", "must be >= 1")
        _require(self.num_mini_batches >= 1, "num_mini_batches", "must be >= 1")
        _require(
            self.gradient_accumulation_steps() % self.num_mini_batches == 0,
            "num_mini_batches",
            f"must divide the {self.gradient_accumulation_steps()} micro-batches of an update",
        )
        _require(self.cliprange > 0, "cliprange", "must be > 0")
        _require(self.cliprange_value > 0, "cliprange_value", "must be > 0")
        _require(self.vf_coef >= 0, "vf_coef", "must be >= 0")
        _require(0 < self.gamma <= 1, "gamma", "must be in (0, 1]")
        _require(0 <= self.lam <= 1, "lam", "must be in [0, 1]")
        _require(self.kl_estimator in ("k1", "k3"), "kl_estimator", 'must be "k1" or "k3"')


@dataclass(kw_only=True)
class DPOConfig(TrainConfig):
    """DPO (App. B.3): lr 1e-5, β 0.1, batch 32, 3 epochs, 10 % warmup, prompts ≤ 1024 of 2048 tokens."""

    learning_rate: float = _help("peak learning rate", default=1e-5)
    global_batch_size: int = _help("preference pairs per optimizer step", default=32)
    warmup_ratio: float = _help("fraction of steps with linear warmup", default=0.1)
    beta: float = _help("deviation from the reference model", default=0.1)
    max_prompt_length: int = _help("prompt tokens kept (left-truncated) so responses keep the rest", default=1024)

    def validate(self) -> None:
        super().validate()
        _require(self.beta > 0, "beta", "must be > 0")
        _require(1 <= self.max_prompt_length < self.max_length, "max_prompt_length", "must be in [1, max_length)")


@dataclass(kw_only=True)
class SimPOConfig(TrainConfig):
    """SimPO via TRL's CPO trainer (loss_type="simpo", cpo_alpha=0): lr 5e-7, β 2.0, γ 0.5, batch 32."""

    learning_rate: float = _help("peak learning rate", default=5e-7)
    global_batch_size: int = _help("preference pairs per optimizer step", default=32)
    warmup_ratio: float = _help("fraction of steps with linear warmup", default=0.1)
    beta: float = _help("reward scale β", default=2.0)
    simpo_gamma: float = _help("target reward margin γ (TRL's CPOConfig.simpo_gamma)", default=0.5)
    max_prompt_length: int = _help("prompt tokens kept (left-truncated) so responses keep the rest", default=1024)

    def validate(self) -> None:
        super().validate()
        _require(self.beta > 0, "beta", "must be > 0")
        _require(self.simpo_gamma >= 0, "simpo_gamma", "must be >= 0")
        _require(1 <= self.max_prompt_length < self.max_length, "max_prompt_length", "must be in [1, max_length)")


@dataclass(kw_only=True)
class GenerateConfig:
    """Sampling for evaluation (paper §3): n = 5 per prompt, T = 0.7, ≤ 256 new tokens, stop at EOS."""

    model: str = _help("pkg:<package>, tiny:<package>, tiny-llama3b:[<tokenizer dir>], hf:<org/name> or an absolute path")
    prompts_file: str = _help('JSONL rows {"id", "category", "question"}')
    output_file: str = _help("JSONL written here (atomically, when complete)")
    n: int = _help("samples per prompt", default=5)
    temperature: float = _help("sampling temperature; 0 = greedy", default=0.7)
    max_new_tokens: int = _help("maximum tokens per sample", default=256)
    seed: int = _help("base seed; each row records the seed of its batch", default=42)
    chat_template: bool = _help(
        "true: the question is the user turn of the model's chat template; false: raw "
        "`question + \\n + response_suffix` (the paper's base-model rule)",
        default=True,
    )
    response_suffix: str = _help("appended after the question when chat_template is false", default="Response:")
    batch_size: int = _help("prompts per generate call (transformers backend)", default=8)
    backend: str = _help('"auto" (vLLM when importable and CUDA is present), "vllm" or "transformers"', default="auto")

    def validate(self) -> None:
        _require(bool(self.model.strip()), "model", "must not be empty")
        _require(os.path.isabs(self.prompts_file), "prompts_file", "must be an absolute path")
        _require(bool(self.output_file.strip()), "output_file", "must not be empty")
        _require(self.n >= 1, "n", "must be >= 1")
        _require(self.temperature >= 0, "temperature", "must be >= 0")
        _require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        _require(self.batch_size >= 1, "batch_size", "must be >= 1")
        _require(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}")


STAGES: dict[str, type[TrainConfig]] = {
    "sft": SFTConfig,
    "reward": RewardConfig,
    "ppo": PPOConfig,
    "dpo": DPOConfig,
    "simpo": SimPOConfig,
}


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise TrainerError("bad_config", f"{name}: {message}")


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(annotation, str(annotation))


def build(cls: type, raw: Any, what: str) -> Any:
    """Instantiate `cls` from a JSON object, rejecting unknown, missing and mistyped fields."""
    if not isinstance(raw, dict):
        raise TrainerError("bad_config", f"{what} config must be a JSON object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise TrainerError(
            "bad_config",
            f"unknown field{'s' if len(unknown) > 1 else ''} for {what}: {', '.join(unknown)} "
            f"(known: {', '.join(fields)})",
        )
    missing = [
        n
        for n, f in fields.items()
        if n not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise TrainerError("bad_config", f"missing required field(s) for {what}: {', '.join(missing)}")
    values = {}
    for name, value in raw.items():
        if not _type_ok(value, hints[name]):
            raise TrainerError(
                "bad_config", f"{name}: expected {_type_name(hints[name])}, got {json.dumps(value)[:80]}"
            )
        values[name] = float(value) if hints[name] is float else value
    obj = cls(**values)
    obj.validate()
    return obj


def parse_train_config(raw: Any) -> TrainConfig:
    if not isinstance(raw, dict):
        raise TrainerError("bad_config", "train config must be a JSON object")
    stage = raw.get("stage")
    if stage not in STAGES:
        raise TrainerError("bad_config", f"stage: must be one of {', '.join(STAGES)}, got {json.dumps(stage)}")
    return build(STAGES[stage], raw, f"stage {stage}")


def parse_generate_config(raw: Any) -> GenerateConfig:
    return build(GenerateConfig, raw, "generate")


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise TrainerError("bad_config", f"config file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrainerError("bad_config", f"config file {path} is not valid JSON: {e}") from None


def schema() -> dict[str, Any]:
    """Every command's fields with type, default and help (for the TypeScript side to check against)."""

    def describe(cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        out = {}
        for f in dataclasses.fields(cls):
            entry: dict[str, Any] = {"type": _type_name(hints[f.name]), "help": f.metadata.get("help", "")}
            if f.default is dataclasses.MISSING:
                entry["required"] = True
            else:
                entry["default"] = f.default
            out[f.name] = entry
        return out

    return {
        "train": {name: describe(cls) for name, cls in STAGES.items()},
        "generate": describe(GenerateConfig),
    }
