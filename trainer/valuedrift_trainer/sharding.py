"""How a Trainer-based stage spreads over its processes (the spec's per-stage ``parallelism``).

- ``ddp`` (the default): every process holds the whole model and optimizer; gradients are averaged.
  Checkpoints are the Trainer's usual files (model.safetensors, optimizer.pt, ...).
- ``fsdp``: PyTorch FSDP2 through accelerate (transformers' ``fsdp`` / ``fsdp_config`` arguments):
  parameters, gradients and optimizer state are sharded over the processes (full shard), each
  transformer layer its own unit (auto-wrap by the model's ``_no_split_modules``, e.g.
  LlamaDecoderLayer), activations recomputed in the backward pass when the stage's
  ``activation_checkpointing`` is on (FSDP's own checkpointing, not the Trainer's), bf16 mixed
  precision on GPUs that support it. Checkpoints hold a SHARDED state dict written with
  torch.distributed.checkpoint (``pytorch_model_fsdp_0/``, ``optimizer_0/``) that a run with the same
  number of processes resumes from; every checkpoint's evaluation copy (models.write_evaluation_copy)
  holds the consolidated full weights as plain safetensors, merged from the shards on rank 0 without
  any collective, so plain ``AutoModelForCausalLM.from_pretrained`` loads it.
  Memory-efficient loading (accelerate's ``cpu_ram_efficient_loading``): only global rank 0 reads the
  weights (`loads_weights`); every other rank builds the model from its config with uninitialised
  parameters that take no resident memory (models._empty; buffers such as RoPE's are real), and
  when the model is wrapped accelerate moves it to the meta device, shards it, and rank 0
  broadcasts each parameter, of which every rank keeps its shard. DPO's frozen reference model is
  built and wrapped the same way (`fsdp_trainer`), per decoder layer. transformers' own switch for
  this (``is_fsdp_enabled``: ACCELERATE_USE_FSDP and FSDP_CPU_RAM_EFFICIENT_LOADING set and the
  process group up before ``from_pretrained``) no longer skips reading the weights in transformers
  5.x (it only fixes up buffers), so the empty model is built here rather than left to it.
- ``zero3``: DeepSpeed ZeRO stage 3 (transformers' ``deepspeed`` argument) where the ``deepspeed``
  package is importable; elsewhere the trainer refuses the config (``bad_config``, not retried).
  The lock file does not install deepspeed. Checkpoints are DeepSpeed's; the 16-bit weights are
  gathered into model.safetensors at every save, so the evaluation copy is made as under ddp.

fsdp and zero3 need at least two processes (WORLD_SIZE from accelerate or torchrun); the PPO stage
(its own loop) trains under ddp only.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from .events import TrainerError

PARALLELISMS = ("ddp", "fsdp", "zero3")
# Where accelerate's save_fsdp_model writes a SHARDED model state dict (FSDP_MODEL_NAME + "_0").
FSDP_MODEL_DIR = "pytorch_model_fsdp_0"


def deepspeed_available() -> bool:
    try:
        return importlib.util.find_spec("deepspeed") is not None
    except (ImportError, ValueError):
        return False


def check(parallelism: str, stage: str, processes: int) -> None:
    """Refuse what cannot run here, before any model is loaded."""
    if parallelism not in PARALLELISMS:
        raise TrainerError("bad_config", f"parallelism: must be one of {', '.join(PARALLELISMS)}, got {parallelism!r}")
    if parallelism == "ddp":
        return
    if stage == "ppo":
        raise TrainerError("bad_config", f"parallelism: {parallelism} is not available for ppo (its own training loop runs ddp only)")
    if processes < 2:
        raise TrainerError(
            "bad_config",
            f"parallelism: {parallelism} shards the model over processes and needs at least 2 (num_gpus >= 2, "
            f"or WORLD_SIZE >= 2 under torchrun); this launch has {processes}",
        )
    if parallelism == "zero3" and not deepspeed_available():
        raise TrainerError(
            "bad_config",
            "parallelism: zero3 needs the deepspeed package in the trainer's Python (pip install deepspeed on the "
            "GPU nodes; it is not part of the lock file), or use fsdp",
        )


def training_args(parallelism: str, args: dict[str, Any], bf16: bool) -> dict[str, Any]:
    """`args` (hftrain.training_args) with the settings of `parallelism` added."""
    if parallelism == "ddp":
        return args
    out = dict(args)
    out.pop("ddp_find_unused_parameters", None)
    if parallelism == "fsdp":
        # FSDP's own activation checkpointing per wrapped layer; the Trainer refuses both at once.
        recompute = bool(out.pop("activation_checkpointing", False))
        out["activation_checkpointing"] = False
        out["fsdp"] = True
        out["fsdp_config"] = {
            "version": 2,
            "reshard_after_forward": True,  # full shard: parameters are gathered per layer, then freed
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # the model's _no_split_modules (its decoder layer)
            "state_dict_type": "SHARDED_STATE_DICT",
            "activation_checkpointing": recompute,
            # Rank 0 alone holds the weights before wrapping; the others get theirs by broadcast.
            "cpu_ram_efficient_loading": True,
        }
        return out
    # zero3: "auto" values are filled by transformers from the Trainer's own arguments.
    out["deepspeed"] = {
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "bf16": {"enabled": bool(bf16)},
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }
    return out


def is_sharded_checkpoint(checkpoint: str) -> bool:
    return os.path.isdir(os.path.join(checkpoint, FSDP_MODEL_DIR))


def save_model_files(checkpoint: str, model: Any, tokenizer: Any) -> None:
    """config.json, generation_config.json and the tokenizer into an FSDP checkpoint (rank 0), which the
    Trainer leaves out when it saves a SHARDED state dict: the evaluation copy needs them."""
    model.config.save_pretrained(checkpoint)
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(checkpoint)
    if tokenizer is not None:
        tokenizer.save_pretrained(checkpoint)


def consolidate(checkpoint: str, out_dir: str) -> str:
    """The full model state dict of an FSDP SHARDED checkpoint as `out_dir`/model.safetensors (full
    precision, as trained); returns that path. Reads the shards in this process only (no collective,
    so rank 0 can do it while the other ranks go on training); needs the full model in CPU memory."""
    import torch
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint import format_utils

    source = os.path.join(checkpoint, FSDP_MODEL_DIR)
    state: dict[str, Any] = {}
    format_utils._load_state_dict(
        state, storage_reader=dcp.FileSystemReader(source), planner=format_utils._EmptyStateDictLoadPlanner(), no_dist=True
    )
    if len(state) == 1 and isinstance(next(iter(state.values())), dict):  # {"model": {...}}
        state = next(iter(state.values()))
    tensors: dict[str, Any] = {}
    seen: dict[tuple[int, int], str] = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().cpu().contiguous()
        # Wrappers FSDP's activation checkpointing or torch.compile may leave in the names.
        name = name.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        # Tied weights (embedding and output head) may share storage; safetensors refuses aliases.
        tensors[name] = t.clone() if key in seen else t
        seen[key] = name
    if not tensors:
        raise TrainerError("transient", f"{source}: no tensors in the sharded checkpoint")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def loads_weights(parallelism: str) -> bool:
    """Whether this process reads the model's weights: always, except under fsdp on ranks other than
    global rank 0 (the rank accelerate broadcasts from), which build the model empty (module doc)."""
    return parallelism != "fsdp" or os.environ.get("RANK", "0") in ("", "0")


_FSDP_TRAINERS: dict[type, type] = {}


def fsdp_trainer(base: type) -> type:
    """`base` (a TRL trainer class) whose FSDP state exists as soon as its accelerator does.

    - On CPU, `enable_on_cpu` runs inside the Trainer's own constructor (not after it), so the
      Trainer knows it is under FSDP from the start: it leaves the model where it is and TRL wraps
      DPO's reference model with FSDP, as on GPUs.
    - A ``ref_model`` passed to the constructor is wrapped here before TRL sees it, with accelerate's
      own preparation (one FSDP unit per decoder layer, rank 0's weights broadcast when the others
      hold an empty model); TRL then finds it already wrapped. TRL's own wrapping would shard
      whatever each rank holds (nothing, on ranks that did not load it) as one unit.
    Without fsdp the subclass behaves exactly like `base`."""
    if base in _FSDP_TRAINERS:
        return _FSDP_TRAINERS[base]

    class FsdpTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._fsdp_reference = kwargs.get("ref_model")
            super().__init__(*args, **kwargs)

        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            enable_on_cpu(self)
            reference = getattr(self, "_fsdp_reference", None)
            self._fsdp_reference = None
            if reference is not None and self.is_fsdp_enabled:
                shard_frozen(self.accelerator, reference)

    FsdpTrainer.__name__ = FsdpTrainer.__qualname__ = f"Fsdp{base.__name__}"
    _FSDP_TRAINERS[base] = FsdpTrainer
    return FsdpTrainer


def shard_frozen(accelerator: Any, model: Any) -> Any:
    """Wrap a frozen model (DPO's reference) with FSDP2 in place, as accelerate wraps the trained one:
    per-layer units, weights broadcast from rank 0 under memory-efficient loading. Its parameters
    stop requiring gradients first, so mixed precision keeps their dtype (no fp32 master copy)."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    if accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise TrainerError("bad_config", "parallelism: fsdp runs FSDP2 only (fsdp_config version 2)")
    model.requires_grad_(False)
    wrapped = fsdp2_prepare_model(accelerator, model)
    wrapped.eval()
    return wrapped


def enable_on_cpu(trainer: Any) -> None:
    """FSDP across CPU processes (gloo), which the tests and a CPU rehearsal run: accelerate builds its
    FSDP state only for GPU-like devices and leaves a multi-CPU run plain data-parallel, ignoring the
    plugin. Switch the Trainer's accelerate state to FSDP with the plugin the Trainer's arguments
    describe, from within the Trainer's constructor (`fsdp_trainer`), before the model is placed or
    anything prepared; from there on the code path (FSDP2 wrapping, memory-efficient loading, sharded
    save and load) is the one GPUs take. A no-op unless the stage asked for fsdp on CPU."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin_args = getattr(trainer.args, "fsdp_plugin_args", None)
    state = trainer.accelerator.state
    if not plugin_args or state.distributed_type != DistributedType.MULTI_CPU:
        return
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
    trainer.is_fsdp_enabled = True
