"""What the four Trainer-based stages (sft, reward, dpo, simpo) share: devices, TRL arguments from
our config, the callback that turns Trainer events into protocol events, and the run itself.

Checkpoints are the Trainer's own ``output_dir/checkpoint-N`` directories (weights, tokenizer,
optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json), each followed by its evaluation copy
``output_dir/evaluation-N`` (models.write_evaluation_copy: weights in the retention dtype, no resume
state), which is what the store keeps of every checkpoint. The Trainer saves every
``checkpoint_every`` steps and at the last step; ``resume_from`` is passed to
``Trainer.train(resume_from_checkpoint=...)``, which restores weights, optimizer, scheduler, RNG and
the step counter, and skips the batches already seen.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable

from . import curves, data, events, models, sharding
from .config import TrainConfig
from .events import TrainerError


def quiet_libraries() -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def check_devices(cfg: TrainConfig) -> bool:
    """Validate num_gpus against this machine; returns whether bf16 mixed precision is on."""
    import torch

    if cfg.num_gpus > 0:
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if visible < cfg.num_gpus:
            # The spec asks for more GPUs than this worker has; the same worker refuses again.
            raise TrainerError("bad_config", f"num_gpus: {cfg.num_gpus} requested but {visible} CUDA device(s) visible")
        # Processes on this node: a multi-node group's WORLD_SIZE is nodes × num_gpus, and torchrun sets
        # LOCAL_WORLD_SIZE to the node's share (a plain single-process run sets neither).
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        if local != cfg.num_gpus:
            raise TrainerError(
                "bad_config",
                f"num_gpus: {cfg.num_gpus} needs one process per GPU on this node (launch with `python -m "
                f"accelerate.commands.launch --num_processes {cfg.num_gpus} -m valuedrift_trainer ...`); "
                f"LOCAL_WORLD_SIZE is {local}",
            )
    if cfg.bf16 == "auto":
        return cfg.num_gpus > 0 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if cfg.bf16 and cfg.num_gpus > 0 and not torch.cuda.is_bf16_supported():
        raise TrainerError("bad_config", "bf16: true but this GPU does not support bfloat16")
    return bool(cfg.bf16)


# Hyperparameters without a TRL argument of that name: the trainer applies them itself.
#   global_batch_size -> gradient_accumulation_steps (see TrainConfig.gradient_accumulation_steps)
#   max_prompt_length -> prompts left-truncated before TRL sees them (TRL 1.16's DPO/CPO configs lack it)
#   max_completion_length -> responses cut to it after TRL tokenizes them (DPOConfig lacks it; CPOConfig's
#                            applies to encoder-decoder models only)
#   assistant_only_loss -> SFT rows tokenized with their assistant mask here (TRL's needs {% generation %})
APPLIED_HERE = frozenset({"global_batch_size", "max_prompt_length", "max_completion_length", "assistant_only_loss"})


def trl_hyperparameters(cfg: TrainConfig) -> dict[str, Any]:
    """Every hyperparameter that TRL takes under its own name, unchanged. A field added to the spec
    arrives here without any Python change; TRL refuses a name it does not know."""
    return {name: value for name, value in cfg.hyperparameters.items() if name not in APPLIED_HERE}


def training_args(cfg: TrainConfig, bf16: bool) -> dict[str, Any]:
    """Keyword arguments for a TRL config class (TrainingArguments underneath): the run's own
    settings, the derived gradient accumulation, and the hyperparameters by name; then the stage's
    parallelism (sharding.training_args: FSDP or ZeRO-3 settings)."""
    args = dict(
        output_dir=os.path.abspath(cfg.output_dir),
        gradient_accumulation_steps=cfg.gradient_accumulation_steps(),
        optim="adamw_torch",
        seed=cfg.seed,
        bf16=bf16,
        fp16=False,
        use_cpu=cfg.num_gpus == 0,
        # Every parameter takes part in each forward pass (no adapters, no unused heads), so DDP can skip
        # the extra autograd traversal that looks for unused ones on every step.
        ddp_find_unused_parameters=False,
        save_strategy="steps" if cfg.save_checkpoints else "no",
        save_steps=cfg.checkpoint_every,
        save_total_limit=None,
        save_only_model=False,
        logging_strategy="steps",
        logging_steps=1,
        logging_first_step=True,
        # TensorBoard always (TensorBoardCallback, into TENSORBOARD_LOGGING_DIR: see run_stage), plus
        # the integrations the spec's stage asked for.
        report_to=curves.report_to(cfg.report_to, cfg.stage),
        disable_tqdm=True,
        dataloader_num_workers=0,
        eval_strategy="no",
        **trl_hyperparameters(cfg),
    )
    return sharding.training_args(cfg.parallelism, args, bf16)


def load_pairwise(cfg: TrainConfig, rows: list[dict[str, Any]]) -> tuple[Any, Any, Any]:
    """Model ref, tokenizer and policy for DPO/SimPO, prompts left-truncated to max_prompt_length
    (TRL 1.16's DPO and CPO configs have no max_prompt_length of their own)."""
    ref = models.resolve(cfg.model)
    tokenizer = models.load_tokenizer(ref)
    limit = cfg.hyperparameters["max_prompt_length"]
    shortened = data.truncate_prompts(rows, tokenizer, limit)
    if shortened:
        events.log(f"{shortened} prompt(s) left-truncated to {limit} tokens")
    return ref, tokenizer, models.load_causal_lm(ref, empty=not weights_here(cfg, "policy"))


def weights_here(cfg: TrainConfig, what: str) -> bool:
    """Whether this process loads `what`'s weights (sharding.loads_weights: not on ranks other than 0
    under fsdp, which build it empty and get rank 0's by broadcast); logged per rank under fsdp."""
    here = sharding.loads_weights(cfg.parallelism)
    if cfg.parallelism == "fsdp":
        rank = os.environ.get("RANK", "0")
        events.log(f"rank {rank}: {what} " + ("weights loaded" if here else "built without weights (uninitialised), weights from rank 0"))
    return here


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def event_callback(save: bool = True, scalars: "curves.ScalarLog | None" = None, weights_dtype: str = "bf16") -> Any:
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Trainer hooks → protocol events (rank 0 only, see events.emit), and each log's scalars to
        `scalars` (the same tags and steps as the TensorBoard event files)."""

        def on_train_begin(self, args, state, control, **kw):
            events.progress(state.global_step, state.max_steps)

        def on_step_end(self, args, state, control, **kw):
            # transformers already saves at max_steps with save_strategy="steps"; the final checkpoint
            # is part of our contract, so do not depend on that default.
            if save and state.global_step >= state.max_steps:
                control.should_save = True
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if scalars is not None and state.is_world_process_zero:
                scalars.write(state.global_step, curves.tags(logs))
            if "loss" in logs:
                # The Trainer's PrinterCallback already writes the full log dict to (redirected) stderr.
                events.progress(state.global_step, state.max_steps, logs.get("loss"), logs.get("learning_rate"))

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                if sharding.is_sharded_checkpoint(path):  # FSDP saved shards only: add what loading needs
                    sharding.save_model_files(path, kw["model"], kw.get("processing_class"))
                models.write_evaluation_copy(path, weights_dtype)
                events.checkpoint(state.global_step, path)

    return EventCallback()


def run_trainer(cfg: TrainConfig, trainer: Any) -> None:
    """Train (resuming if asked), make sure the final checkpoint exists, report it."""
    if len(trainer.train_dataset) == 0:
        raise TrainerError("dataset_schema", f"{cfg.train_file}: no rows left after filtering to max_length={cfg.hyperparameters['max_length']}")
    trainer.train(resume_from_checkpoint=cfg.resume_from)
    step = trainer.state.global_step
    if not cfg.save_checkpoints:
        events.done(step, "")
        return
    final = os.path.join(os.path.abspath(cfg.output_dir), f"checkpoint-{step}")
    if not os.path.isfile(os.path.join(final, "trainer_state.json")):
        # Not expected (the Trainer saves at max_steps and finished resumes never get here), but the final
        # checkpoint is the contract, so write it rather than report a path that does not exist.
        trainer._save_checkpoint(trainer.model, trial=None)
        trainer.accelerator.wait_for_everyone()
        if _is_main_rank():
            if sharding.is_sharded_checkpoint(final):
                sharding.save_model_files(final, trainer.model, trainer.processing_class)
            models.write_evaluation_copy(final, cfg.weights_dtype)
        events.checkpoint(step, final)
    events.done(step, final)


def finished_checkpoint(cfg: TrainConfig) -> tuple[int, str] | None:
    """(step, path) when `resume_from` already is the run's last step.

    transformers 5.23 runs one extra step when resumed from a run's final checkpoint, so such a
    resume must not reach `Trainer.train`. The total is `max_steps`, or (max_steps = -1) the total
    recorded by the run that wrote the checkpoint.
    """
    if cfg.resume_from is None:
        return None
    with open(os.path.join(cfg.resume_from, "trainer_state.json"), encoding="utf-8") as f:
        state = json.load(f)
    step = int(state["global_step"])
    max_steps = cfg.hyperparameters["max_steps"]
    total = max_steps if max_steps > 0 else int(state.get("max_steps") or 0)
    return (step, cfg.resume_from) if total and step >= total else None


def report_finished(cfg: TrainConfig, step: int, source: str) -> None:
    """Nothing left to train: the resumed checkpoint is the final one; copy it into output_dir."""
    final = os.path.join(os.path.abspath(cfg.output_dir), f"checkpoint-{step}")
    if os.path.abspath(source) != final:
        if not _is_main_rank():
            return
        tmp = final + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    if _is_main_rank():
        models.write_evaluation_copy(final, cfg.weights_dtype)
    events.log(f"{source} is already step {step} of {step}; nothing to train")
    events.checkpoint(step, final)
    events.done(step, final)


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def run_stage(cfg: TrainConfig, rows: list[dict[str, Any]], build: Callable[..., Any]) -> None:
    quiet_libraries()
    bf16 = check_devices(cfg)
    finished = finished_checkpoint(cfg)
    if finished:
        report_finished(cfg, *finished)
        return
    from transformers import set_seed

    set_seed(cfg.seed)
    # transformers' TensorBoardCallback (added by report_to) writes its event files here.
    tb_dir = cfg.tensorboard_directory()
    os.environ["TENSORBOARD_LOGGING_DIR"] = tb_dir
    scalars = curves.ScalarLog(tb_dir) if _is_main_rank() else None
    try:
        trainer = build(cfg, rows, bf16, [event_callback(cfg.save_checkpoints, scalars, cfg.weights_dtype)])
        if cfg.parallelism == "fsdp" and not trainer.is_fsdp_enabled:
            # Every build makes its trainer with sharding.fsdp_trainer; this one did not.
            raise TrainerError("transient", f"stage {cfg.stage}: parallelism fsdp asked but the Trainer is not under FSDP")
        if cfg.parallelism != "ddp":
            events.log(f"rank {os.environ.get('RANK', '0')}: peak RSS {peak_rss_mib():.0f} MiB with the trainer built")
        run_trainer(cfg, trainer)
        if cfg.parallelism != "ddp":
            events.log(f"rank {os.environ.get('RANK', '0')}: peak RSS {peak_rss_mib():.0f} MiB after training")
    finally:
        if scalars is not None:
            scalars.close()
