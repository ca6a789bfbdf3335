"""Evaluation copies of checkpoints (models.write_evaluation_copy): what the store keeps of every
checkpoint, bf16 or fp32 weights and no resume state, loadable as the model it was saved from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from valuedrift_trainer import models
from valuedrift_trainer.events import TrainerError


def _checkpoint(root: Path) -> tuple[Path, object]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=97, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    ckpt = root / "checkpoint-7"
    model.save_pretrained(ckpt)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth", "trainer_state.json", "training_args.bin"):
        (ckpt / name).write_bytes(b"state")
    (ckpt / "value_model").mkdir()
    (ckpt / "value_model" / "model.safetensors").write_bytes(b"resume only")
    return ckpt, model


def _dtypes(file: Path) -> set[str]:
    body = file.read_bytes()
    header = json.loads(body[8 : 8 + int.from_bytes(body[:8], "little")])
    return {t["dtype"] for k, t in header.items() if k != "__metadata__"}


def test_bf16_copy_drops_resume_state_and_loads_close_to_the_fp32_model(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    ckpt, model = _checkpoint(tmp_path)
    out = Path(models.write_evaluation_copy(str(ckpt), "bf16"))
    assert out == tmp_path / "evaluation-7"
    assert sorted(os.listdir(out)) == sorted(n for n in os.listdir(ckpt) if n in ("config.json", "generation_config.json", "model.safetensors"))
    assert _dtypes(out / "model.safetensors") == {"BF16"}
    assert _dtypes(ckpt / "model.safetensors") == {"F32"}  # the resume state keeps full precision
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert (out / "model.safetensors").stat().st_size < 0.6 * (ckpt / "model.safetensors").stat().st_size
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 13, 40]])
    with torch.no_grad():
        a, b = model(ids).logits, loaded(ids).logits
    assert not torch.equal(a, b)  # rounded to bf16...
    assert torch.allclose(a, b, atol=0.05)  # ...and still the same model
    # Idempotent: a second call keeps the complete copy.
    before = (out / "model.safetensors").stat().st_mtime_ns
    models.write_evaluation_copy(str(ckpt), "bf16")
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def test_fp32_copy_keeps_the_weights_as_trained(tmp_path: Path) -> None:
    ckpt, _ = _checkpoint(tmp_path)
    out = Path(models.write_evaluation_copy(str(ckpt), "fp32"))
    assert (out / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    assert not (out / "optimizer.pt").exists() and not (out / "value_model").exists()


def test_refuses_a_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    with pytest.raises(TrainerError):
        models.write_evaluation_copy(str(tmp_path / "weights"), "bf16")
