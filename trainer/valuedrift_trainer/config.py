"""Command configs, read from the JSON file the activity writes.

A train config has two parts:

- the run's own fields (`TrainConfig` below): what to train (`stage`, `model`, `reward_model`),
  where the data and checkpoints are, the resume point, and orchestration (`checkpoint_every`,
  `num_gpus`, `seed`, `bf16`, `save_checkpoints`);
- `hyperparameters`: the stage's training settings, named as TRL names them. They are defined once,
  in the lineage spec (common/spec.ts); `npm run schema` writes them to specs/lineage.schema.json,
  and this module validates them against that file and fills the defaults from it. The trainer has
  no defaults, types or ranges of its own for them; it only checks what a JSON Schema cannot say
  (relations between fields, and the device count only known at run time).

Anything unknown, missing or mistyped is a `bad_config` error naming the field, because a misspelt
setting that silently trains with a default is worse than a refusal.

    python -m valuedrift_trainer config-schema            # every command's fields as JSON
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from . import curves
from .events import TrainerError

BACKENDS = ("auto", "vllm", "transformers")
WEIGHTS_DTYPES = ("bf16", "fp32")

# Editable install or a checkout on PYTHONPATH: the package sits at <repo>/trainer/valuedrift_trainer.
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "specs" / "lineage.schema.json"


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


# ---- hyperparameters: the generated JSON Schema is their definition


@functools.cache
def lineage_schema() -> dict[str, Any]:
    try:
        with open(SCHEMA_FILE, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise TrainerError(
            "bad_config",
            f"{SCHEMA_FILE} not found: the trainer reads the hyperparameter definitions from the valuedrift "
            "checkout it is installed from (pip install -e ./trainer; `npm run schema` writes the file)",
        ) from None


@functools.cache
def _hyperparameter_refs() -> dict[str, str]:
    """Stage kind -> its hyperparameters' `$defs` name, found the way the lineage schema links them:
    each stage variant's `kind` constant and its `hyperparameters` `$ref`."""
    prefix = "#/$defs/"
    out: dict[str, str] = {}
    for variant in lineage_schema()["properties"]["stages"]["items"]["oneOf"]:
        kind = variant["properties"]["kind"]["const"]
        ref = variant["properties"]["hyperparameters"]["$ref"]
        if not ref.startswith(prefix):
            raise TrainerError("bad_config", f"{SCHEMA_FILE}: stage {kind}'s hyperparameters are not a $defs entry")
        out[kind] = ref[len(prefix):]
    return out


def stage_kinds() -> tuple[str, ...]:
    return tuple(_hyperparameter_refs())


def hyperparameter_schema(stage: str) -> dict[str, Any]:
    """The JSON Schema of a stage kind's `hyperparameters` (its `$defs` entry)."""
    return lineage_schema()["$defs"][_hyperparameter_refs()[stage]]


@functools.cache
def _validator(stage: str) -> Any:
    import jsonschema

    doc = lineage_schema()
    return jsonschema.Draft202012Validator({"$defs": doc["$defs"], "$ref": f"#/$defs/{_hyperparameter_refs()[stage]}"})


def _admits_integer(prop: dict[str, Any]) -> bool:
    return prop.get("type") == "integer" or any(_admits_integer(p) for p in prop.get("anyOf", ()))


class Hyperparameters(Mapping[str, Any]):
    """A stage's validated hyperparameters (defaults filled in). Remembers which were read, so a test
    can show that every field the spec accepts reaches the training code."""

    def __init__(self, values: dict[str, Any]):
        self._values = values
        self._read: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        value = self._values[name]
        self._read.add(name)
        return copy.deepcopy(value) if isinstance(value, (list, dict)) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Hyperparameters({self._values!r})"

    def unread(self) -> set[str]:
        return set(self._values) - self._read


def parse_hyperparameters(stage: str, raw: Any) -> Hyperparameters:
    """Validate `raw` against the stage's schema after filling in the schema's defaults."""
    if not isinstance(raw, dict):
        raise TrainerError("bad_config", "hyperparameters: must be a JSON object")
    props: dict[str, Any] = hyperparameter_schema(stage)["properties"]
    values = dict(raw)
    for name, prop in props.items():
        if name not in values and "default" in prop:
            values[name] = copy.deepcopy(prop["default"])
    errors = sorted(_validator(stage).iter_errors(values), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise TrainerError("bad_config", "; ".join(_describe(e, stage, props) for e in errors[:5]))
    missing = sorted(set(props) - set(values))
    if missing:  # a field without a default in the spec is required there too
        raise TrainerError("bad_config", f"hyperparameters: missing {', '.join(missing)} for stage {stage}")
    for name, value in values.items():
        # JSON has one number type: 4.0 is a valid integer for the schema, but TRL wants an int.
        if isinstance(value, float) and value.is_integer() and _admits_integer(props[name]):
            values[name] = int(value)
    return Hyperparameters(values)


def _describe(error: Any, stage: str, props: dict[str, Any]) -> str:
    path = [str(p) for p in error.absolute_path]
    where = ".".join(["hyperparameters", *path])
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(props))
        return (f"hyperparameters: unknown field{'s' if len(unknown) > 1 else ''} for stage {stage}: "
                f"{', '.join(unknown)} (known: {', '.join(props)})")
    if error.validator == "anyOf" and path and path[0] in props:
        # e.g. warmup_steps 1.5: jsonschema only says "not valid under any of the given schemas"
        return f"{where}: {json.dumps(error.instance)[:80]} is not allowed ({props[path[0]].get('description', '')})"
    return f"{where}: {error.message}"


# ---- LoRA (the stage spec's `lora`; its JSON Schema is `$defs.LoraSettings`)


@dataclass(frozen=True)
class LoraSettings:
    """A stage's validated LoRA settings (lora.peft_config turns them into peft's LoraConfig)."""

    r: int
    alpha: float
    dropout: float
    target_modules: Union[str, list[str]]


def parse_lora(raw: Any) -> LoraSettings | None:
    """The spec's `lora` object as the activity passes it (camelCase, as for hyperparameters): the
    schema's defaults filled in, then validated against `$defs.LoraSettings`. Absent: no LoRA."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TrainerError("bad_config", f"lora: must be a JSON object, got {json.dumps(raw)[:80]}")
    import jsonschema

    schema = lineage_schema()["$defs"]["LoraSettings"]
    values = dict(raw)
    for name, prop in schema["properties"].items():
        if name not in values and "default" in prop:
            values[name] = copy.deepcopy(prop["default"])
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(values), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        def describe(e: Any) -> str:
            if e.validator == "additionalProperties":
                unknown = sorted(set(e.instance) - set(schema["properties"]))
                return f"lora: unknown field(s) {', '.join(unknown)} (known: {', '.join(schema['properties'])})"
            return f"{'.'.join(['lora', *(str(p) for p in e.absolute_path)])}: {e.message}"

        raise TrainerError("bad_config", "; ".join(describe(e) for e in errors[:5]))
    return LoraSettings(r=int(values["r"]), alpha=float(values["alpha"]), dropout=float(values["dropout"]),
                        target_modules=values["targetModules"])


# ---- the run's own fields


@dataclass(kw_only=True)
class TrainConfig:
    """One training stage: what, where, and how it is orchestrated; `hyperparameters` are the rest."""

    stage: str = _help("sft | reward | ppo | dpo | simpo (the stage kinds of specs/lineage.schema.json)")
    model: str = _help("pkg:<package>, tiny:<package>, tiny-llama3b:[<tokenizer dir>], hf:<org/name> or an absolute path")
    reward_model: str | None = _help("ppo only (required there): the trained reward model, in any model form", default=None)
    train_file: str = _help("absolute path of the training JSONL")
    output_dir: str = _help("where checkpoint-N directories are written")
    resume_from: str | None = _help(
        "a checkpoint-N directory to continue from, optimizer and scheduler included", default=None
    )
    checkpoint_every: int = _help("save a checkpoint every N optimizer steps (the final step is always saved)", default=100)
    num_gpus: int = _help("GPUs to train on; 0 = CPU", default=0)
    seed: int = _help("seed for data order, initialisation and sampling", default=42)
    bf16: Union[bool, str] = _help('"auto" (on when CUDA supports it), true or false', default="auto")
    weights_dtype: str = _help(
        '"bf16" | "fp32": the dtype of the weights in each checkpoint\'s evaluation copy (evaluation-<N> beside '
        "checkpoint-<N>), which is what is kept and evaluated; checkpoint-<N> itself stays full precision for resuming",
        default="bf16",
    )
    save_checkpoints: bool = _help(
        "false: write no checkpoint at all (throughput measurements only; `done` then has an empty path)",
        default=True,
    )
    tensorboard_dir: str | None = _help(
        "where this run's TensorBoard event files and scalars.jsonl go (default: <output_dir>/tensorboard)",
        default=None,
    )
    report_to: list[str] = _help(
        "integrations besides TensorBoard (always on) that get the training logs: wandb, mlflow",
        default_factory=list,
    )
    lora: Union[LoraSettings, None] = _help(
        "LoRA through PEFT (the spec's `lora`, checked against specs/lineage.schema.json $defs.LoraSettings): "
        "checkpoints hold the adapter, evaluation copies the merged model; not for ppo",
        default=None,
    )
    parallelism: str = _help(
        '"ddp" (every process holds the whole model), "fsdp" (parameters, gradients and optimizer state sharded '
        'over the processes; sharded checkpoints, consolidated evaluation copies) or "zero3" (DeepSpeed ZeRO-3, only '
        "where deepspeed is installed): see sharding.py",
        default="ddp",
    )
    hyperparameters: Hyperparameters = _help(
        "the stage's hyperparameters, checked against specs/lineage.schema.json ($defs); omitted ones (or "
        "the whole object) take the spec's defaults"
    )

    def tensorboard_directory(self) -> str:
        return os.path.abspath(self.tensorboard_dir or os.path.join(self.output_dir, "tensorboard"))

    def processes(self) -> int:
        """Processes that share one global batch: the launcher's world size (accelerate or torchrun set
        WORLD_SIZE; one process per GPU, or several CPU processes in the distributed tests), else one
        per GPU."""
        world = os.environ.get("WORLD_SIZE", "")
        return int(world) if world.isdigit() and int(world) > 0 else max(1, self.num_gpus)

    def gradient_accumulation_steps(self) -> int:
        h = self.hyperparameters
        return h["global_batch_size"] // (h["per_device_train_batch_size"] * self.processes())

    def validate(self) -> None:
        _require(os.path.isabs(self.train_file), "train_file", f"must be an absolute path, got {self.train_file!r}")
        _require(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        _require(bool(self.model.strip()), "model", "must not be empty")
        if self.stage == "ppo":
            _require(self.reward_model is not None, "reward_model", "missing: a ppo stage needs its reward model")
            _require(bool(self.reward_model.strip()), "reward_model", "must not be empty")
        else:
            _require(self.reward_model is None, "reward_model", f"only a ppo stage takes one, not {self.stage}")
        _require(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        _require(self.num_gpus >= 0, "num_gpus", "must be >= 0")
        _require(self.bf16 in (True, False, "auto"), "bf16", 'must be "auto", true or false')
        _require(self.weights_dtype in WEIGHTS_DTYPES, "weights_dtype", f"must be one of {', '.join(WEIGHTS_DTYPES)}")
        if self.tensorboard_dir is not None:
            _require(os.path.isabs(self.tensorboard_dir), "tensorboard_dir", "must be an absolute path")
        # Unknown names, integrations the ppo loop lacks, and packages missing here: refused before any loading.
        curves.report_to(self.report_to, self.stage)
        if self.lora is not None:
            _require(self.stage != "ppo", "lora",
                     "the ppo stage has its own training loop and no LoRA support; use it on sft, reward, dpo or simpo")
        from . import sharding

        sharding.check(self.parallelism, self.stage, self.processes())
        _require(self.parallelism == "ddp" or self.lora is None, "parallelism",
                 f"{self.parallelism} with lora is not supported (the adapters are small: train them under ddp)")
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
        self._validate_relations()

    def _validate_relations(self) -> None:
        """What the schema cannot say: relations between hyperparameters and the launch's processes
        (common/spec.ts checks the same relations for a whole lineage, with gpus for processes)."""
        h = self.hyperparameters
        per_step = h["per_device_train_batch_size"] * self.processes()
        _require(
            h["global_batch_size"] % per_step == 0,
            "hyperparameters.global_batch_size",
            f"{h['global_batch_size']} is not divisible by per_device_train_batch_size × processes "
            f"({h['per_device_train_batch_size']} × {self.processes()} = {per_step})",
        )
        if "max_prompt_length" in h:
            _require(h["max_prompt_length"] < h["max_length"], "hyperparameters.max_prompt_length",
                     f"must be < max_length ({h['max_length']})")
        if self.stage == "ppo":
            _require(h["response_length"] < h["max_length"], "hyperparameters.response_length",
                     f"must be < max_length ({h['max_length']}): the prompt needs room")
            _require(
                self.gradient_accumulation_steps() % h["num_mini_batches"] == 0,
                "hyperparameters.num_mini_batches",
                f"must divide the {self.gradient_accumulation_steps()} micro-batches of an update",
            )


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
    tensor_parallel: int = _help("GPUs one vLLM engine shards the model over (vLLM only)", default=1)
    data_parallel: int = _help(
        "processes, one per GPU (or on CPU), each sampling a contiguous share of the prompts; the rows "
        "are those of one process (same seeds)",
        default=1,
    )
    first_index: int = _help("index of this file's first prompt in the whole set (seeds follow it)", default=0)

    def validate(self) -> None:
        _require(bool(self.model.strip()), "model", "must not be empty")
        _require(self.tensor_parallel >= 1, "tensor_parallel", "must be >= 1")
        _require(self.data_parallel >= 1, "data_parallel", "must be >= 1")
        _require(self.tensor_parallel == 1 or self.data_parallel == 1, "data_parallel",
                 "tensor_parallel and data_parallel cannot both be above 1")
        _require(self.first_index >= 0, "first_index", "must be >= 0")
        _require(os.path.isabs(self.prompts_file), "prompts_file", "must be an absolute path")
        _require(bool(self.output_file.strip()), "output_file", "must not be empty")
        _require(self.n >= 1, "n", "must be >= 1")
        _require(self.temperature >= 0, "temperature", "must be >= 0")
        _require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        _require(self.batch_size >= 1, "batch_size", "must be >= 1")
        _require(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}")


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise TrainerError("bad_config", f"{name}: {message}")


def _type_ok(value: Any, annotation: Any) -> bool:
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
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is list:
        return f"array of {_type_name(typing.get_args(annotation)[0])}"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def build(cls: type, raw: Any, what: str, **parsed: Any) -> Any:
    """Instantiate `cls` from a JSON object, rejecting unknown, missing and mistyped fields; `parsed`
    holds fields already checked by their own parser."""
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
        if n not in raw and n not in parsed
        and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise TrainerError("bad_config", f"missing required field(s) for {what}: {', '.join(missing)}")
    values = dict(parsed)
    for name, value in raw.items():
        if name in parsed:
            continue
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
    if stage not in stage_kinds():
        raise TrainerError("bad_config", f"stage: must be one of {', '.join(stage_kinds())}, got {json.dumps(stage)}")
    misplaced = sorted(set(raw) & set(hyperparameter_schema(stage)["properties"]))
    if misplaced:
        raise TrainerError("bad_config", f"{', '.join(misplaced)}: belongs in hyperparameters, not at the top level")
    hyperparameters = parse_hyperparameters(stage, raw.get("hyperparameters", {}))
    return build(TrainConfig, raw, f"stage {stage}", hyperparameters=hyperparameters, lora=parse_lora(raw.get("lora")))


def parse_generate_config(raw: Any) -> GenerateConfig:
    return build(GenerateConfig, raw, "generate")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, parse_constant=_no_constants)  # NaN / Infinity pass every range check
    except FileNotFoundError:
        raise TrainerError("bad_config", f"config file not found: {path}") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise TrainerError("bad_config", f"config file {path} is not valid JSON: {e}") from None


def schema() -> dict[str, Any]:
    """Every command's fields (for people and code generators): the run's own fields with type,
    default and help; each stage's hyperparameters as their JSON Schema."""

    def describe(cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        out = {}
        for f in dataclasses.fields(cls):
            if f.name == "hyperparameters":
                continue
            entry: dict[str, Any] = {"type": _type_name(hints[f.name]), "help": f.metadata.get("help", "")}
            if f.default_factory is not dataclasses.MISSING:
                entry["default"] = f.default_factory()
            elif f.default is dataclasses.MISSING:
                entry["required"] = True
            else:
                entry["default"] = f.default
            out[f.name] = entry
        return out

    return {
        "train": {
            "fields": describe(TrainConfig),
            "hyperparameters": {kind: hyperparameter_schema(kind) for kind in stage_kinds()},
        },
        "generate": describe(GenerateConfig),
    }
