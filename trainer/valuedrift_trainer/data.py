"""Training and prompt files: JSONL, checked row by row before any model is loaded.

Row shapes (extra top-level keys are ignored):

- sft:                 {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
                       with at least one assistant turn;
- reward, dpo, simpo:  {"prompt": [..., {"role": "user", "content": str}],
                        "chosen": [{"role": "assistant", "content": str}],
                        "rejected": [{"role": "assistant", "content": str}]};
- ppo:                 {"prompt": [..., {"role": "user", "content": str}]};
- generate prompts:    {"id": str|int, "category": str, "question": str}.

A bad row is a `dataset_schema` error naming the file, line and problem.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from .events import TrainerError

ROLES = ("system", "user", "assistant")


def _fail(path: str, line: int, message: str) -> TrainerError:
    return TrainerError("dataset_schema", f"{path}:{line}: {message}")


def _messages(value: Any, key: str, path: str, line: int, roles: tuple[str, ...] = ROLES) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _fail(path, line, f'"{key}" must be a non-empty list of {{"role", "content"}} messages')
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _fail(path, line, f'"{key}"[{i}] must be an object with string "role" and "content"')
        if m["role"] not in roles:
            raise _fail(path, line, f'"{key}"[{i}].role is {m["role"]!r}; expected one of {", ".join(roles)}')
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _prompt(value: Any, path: str, line: int) -> list[dict[str, str]]:
    msgs = _messages(value, "prompt", path, line)
    if msgs[-1]["role"] != "user":
        raise _fail(path, line, '"prompt" must end with a user message')
    return msgs


def _sft_row(row: dict[str, Any], path: str, line: int) -> dict[str, Any]:
    msgs = _messages(row.get("messages"), "messages", path, line)
    if not any(m["role"] == "assistant" for m in msgs):
        raise _fail(path, line, '"messages" has no assistant turn to learn from')
    return {"messages": msgs}


def _preference_row(row: dict[str, Any], path: str, line: int) -> dict[str, Any]:
    return {
        "prompt": _prompt(row.get("prompt"), path, line),
        "chosen": _messages(row.get("chosen"), "chosen", path, line, ("assistant",)),
        "rejected": _messages(row.get("rejected"), "rejected", path, line, ("assistant",)),
    }


def _ppo_row(row: dict[str, Any], path: str, line: int) -> dict[str, Any]:
    return {"prompt": _prompt(row.get("prompt"), path, line)}


def _prompt_row(row: dict[str, Any], path: str, line: int) -> dict[str, Any]:
    if not isinstance(row.get("id"), (str, int)) or isinstance(row.get("id"), bool):
        raise _fail(path, line, '"id" must be a string or integer')
    for key in ("category", "question"):
        if not isinstance(row.get(key), str):
            raise _fail(path, line, f'"{key}" must be a string')
    return {"id": str(row["id"]), "category": row["category"], "question": row["question"]}


ROW_CHECKS = {
    "sft": _sft_row,
    "reward": _preference_row,
    "dpo": _preference_row,
    "simpo": _preference_row,
    "ppo": _ppo_row,
    "prompts": _prompt_row,
}


def _lines(path: str, field: str) -> Iterator[tuple[int, str]]:
    if not os.path.isfile(path):
        # The activity stages the file before starting us; a wrong path is a wrong config.
        raise TrainerError("bad_config", f"{field}: file does not exist: {path}")
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if text.strip():
                yield number, text


def read_rows(path: str, kind: str, field: str = "train_file") -> list[dict[str, Any]]:
    """All rows of `path`, normalised to the shape of `kind`; the first bad row fails the whole file."""
    check = ROW_CHECKS[kind]
    rows = []
    try:
        for number, text in _lines(path, field):
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise _fail(path, number, f"not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise _fail(path, number, "each line must be a JSON object")
            rows.append(check(row, path, number))
    except UnicodeDecodeError as e:
        raise TrainerError("dataset_schema", f"{path}: not UTF-8 text ({e})") from None
    if not rows:
        raise TrainerError("dataset_schema", f"{path}: no rows")
    return rows


def truncate_prompts(rows: list[dict[str, Any]], tokenizer: Any, max_prompt_length: int) -> int:
    """Shorten the last user turn of each prompt (from its start) until the templated prompt fits.

    TRL 1.16's DPO and CPO trainers have no `max_prompt_length`; doing it here keeps the paper's
    split of 2048 tokens into ≤ 1024 prompt tokens and the rest for the response. Returns how many
    prompts were shortened.
    """
    shortened = 0
    for row in rows:
        prompt = row["prompt"]
        n = _prompt_tokens(tokenizer, prompt)
        if n <= max_prompt_length:
            continue
        shortened += 1
        last = prompt[-1]
        ids = tokenizer(last["content"], add_special_tokens=False)["input_ids"]
        while n > max_prompt_length and ids:
            ids = ids[min(len(ids), n - max_prompt_length) :]
            prompt[-1] = {"role": last["role"], "content": tokenizer.decode(ids)}
            n = _prompt_tokens(tokenizer, prompt)
            if n > max_prompt_length:
                ids = ids[1:]  # re-tokenisation can merge differently; make progress regardless
    return shortened


def _prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of `messages` rendered by the model's chat template, exactly as TRL's trainers tokenize
    conversational rows (apply_chat_template with tokenize=True)."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt)
    return list(out["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def assistant_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> dict[str, list[int]]:
    """`input_ids` of a conversation and `assistant_masks` (1 on the tokens of assistant turns).

    The paper's SFT objective is −log π(y|x): only the response carries loss. TRL's own
    `assistant_only_loss` needs a chat template with `{% generation %}` markers, which SmolLM2's and most
    models' templates lack (TRL 1.16 patches only a fixed list of known templates). So the mask is found
    from the template itself, for any template: assistant turn i starts where the conversation up to it,
    rendered with the generation prompt (`<|im_start|>assistant\\n` and the like), stops being a prefix of
    the whole conversation, and ends where the conversation up to and including turn i stops being one.
    The turn's end-of-turn token (e.g. `<|im_end|>`) is inside the mask, so the model learns to stop; the
    system prompt, user turns and the assistant header are not. Every assistant turn of a multi-turn row
    is learnt, not only the last (which a prompt/completion split would do).
    """
    ids = _chat_ids(tokenizer, messages)
    mask = [0] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = _common_prefix(_chat_ids(tokenizer, messages[:i], add_generation_prompt=True), ids) if i else 0
        end = len(ids) if i == len(messages) - 1 else _common_prefix(_chat_ids(tokenizer, messages[: i + 1]), ids)
        for t in range(start, end):
            mask[t] = 1
    return {"input_ids": ids, "assistant_masks": mask}


def cap_completion(example: dict[str, Any], max_completion_length: int) -> dict[str, Any]:
    """A DPO row as TRL's DPOTrainer tokenizes it (`prompt_ids`, `chosen_ids`, `rejected_ids`), each
    response cut to its first `max_completion_length` tokens (TRL 1.16's DPOConfig caps only the total)."""
    return {"chosen_ids": example["chosen_ids"][:max_completion_length],
            "rejected_ids": example["rejected_ids"][:max_completion_length]}


def cap_cpo_completion(row: dict[str, Any], max_completion_length: int) -> dict[str, Any]:
    """A row as TRL's CPOTrainer tokenizes it (`chosen_input_ids` = prompt + response, `chosen_labels`
    -100 over the prompt, ...), each response cut to its first `max_completion_length` tokens. TRL's
    CPOConfig.max_completion_length only applies to encoder-decoder models."""
    out = dict(row)
    for side in ("chosen", "rejected"):
        labels = row[f"{side}_labels"]
        prompt = next((i for i, label in enumerate(labels) if label != -100), len(labels))
        keep = prompt + max_completion_length
        for key in ("input_ids", "attention_mask", "labels"):
            name = f"{side}_{key}"
            if name in out:
                out[name] = out[name][:keep]
    return out
