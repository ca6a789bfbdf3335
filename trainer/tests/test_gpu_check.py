"""The GPU check script (infra/gpu/check.py) runs end to end in its CPU smoke mode, so the script a GPU
machine gets is known to work before device time is spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
