"""Peak resident memory (VmHWM) of each rank of a two-rank CPU FSDP sft launch of the trainer, read once
the model is wrapped and the optimizer built (the trainer is held at step 0 by the test-only
VALUEDRIFT_TRAINER_TEST_HANG_AT_STEP=0), after which the launch is killed. BENCHMARKS.md, "FSDP
memory-efficient loading", has the method and the figures.

    .venv/bin/python bench/fsdp_memory.py --layers 4 [--work /tmp/vd-fsdp-mem]

`--repo DIR` measures the trainer of another checkout (e.g. a `git worktree` of an older commit).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def rank_pids(launcher: int) -> list[str]:
    pids: list[str] = []
    for task in os.listdir(f"/proc/{launcher}/task"):
        with open(f"/proc/{launcher}/task/{task}/children") as f:
            pids += f.read().split()
    return pids


def memory_of(pid: str) -> tuple[str, dict[str, str]]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        rank = next(v.split(b"=", 1)[1].decode() for v in f.read().split(b"\0") if v.startswith(b"RANK="))
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    return f"rank {rank}", {"VmHWM": status["VmHWM"].strip(), "VmRSS": status["VmRSS"].strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="4", help="decoder layers of the Llama-3.2-3B-shaped model (VALUEDRIFT_LLAMA3B_LAYERS)")
    ap.add_argument("--work", default="", help="scratch folder (default: a temporary one)")
    ap.add_argument("--repo", default=str(HERE), help="the checkout whose trainer runs (default: this one)")
    args = ap.parse_args()
    repo = Path(args.repo).resolve()
    sys.path.insert(0, str(repo / "trainer" / "tests"))
    from conftest import QUESTIONS, tiny_config
    root = Path(args.work or tempfile.mkdtemp(prefix="vd-fsdp-mem-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "It depends."}]}) + "\n"
                   for q in QUESTIONS * 2)
    (root / "sft.jsonl").write_text(rows)
    cfg = tiny_config("sft", root / "sft.jsonl", root / "out", max_steps=3, global_batch_size=4, parallelism="fsdp")
    cfg["model"] = "tiny-llama3b:"
    (root / "cfg.json").write_text(json.dumps(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VALUEDRIFT_LLAMA3B_LAYERS": args.layers,
           "VALUEDRIFT_TRAINER_TEST_HANG_AT_STEP": "0", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(repo / "trainer") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.monotonic()
    ranks: list[str] = []
    with open(root / "stderr", "w") as err:
        p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                              "--master_port", str(port), "-m", "valuedrift_trainer", "train", "--config", str(root / "cfg.json")],
                             stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
        try:
            assert p.stdout is not None
            for line in p.stdout:
                e = json.loads(line)
                if e["event"] == "error":
                    sys.exit(f"trainer error: {e} (stderr: {root / 'stderr'})")
                if e["event"] == "progress" and e["step"] == 0:
                    break
            time.sleep(5)  # every rank reaches the hang
            ranks = rank_pids(p.pid)
            out = dict(sorted(memory_of(pid) for pid in ranks))
            print(json.dumps({"layers": int(args.layers), "ranks": out, "seconds": round(time.monotonic() - t)}), flush=True)
        finally:
            for pid in ranks:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


if __name__ == "__main__":
    main()
