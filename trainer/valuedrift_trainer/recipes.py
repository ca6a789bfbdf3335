"""Dataset recipes: a corpus in its published raw schema → the project's chat or preference rows.

    python -m valuedrift_trainer prepare-dataset --config cfg.json

`cfg` (or {"jobs": [cfg, ...]}: several in one process):

    source      hf:<owner>/<name>[@revision][:split]  or  an absolute path to a JSONL/Parquet/CSV file
    split       hub split when the source names none (default "train")
    recipe      wildchat | alpaca | ultrafeedback | hh-rlhf | prism | columns
    format      chat | preference | prompts (what the rows become; prism makes prompts)
    columns     for `columns`: {"messages": col} or {"prompt": col|[cols], "response": col[, "system": col]}
                for chat; {"prompt"?: col|[cols], "chosen": col, "rejected": col} for preference
    language    keep rows whose `language` column equals this (WildChat's English subset: "English")
    holdout     fraction held out as validation (ceil(n × holdout) rows), 0 for none
    limit       keep exactly min(limit, n) rows, chosen uniformly with `seed` (before the holdout split)
    seed        the lineage seed: the same inputs give the same rows, in source order
    output_dir  gets train.jsonl, validation.jsonl (holdout > 0) and manifest.json
    fingerprint_only  write fingerprint.json (resolved revision and files) and stop

Hub sources are resolved by the `datasets` library (`load_dataset_builder`: the repository's
`configs:` and split patterns, exactly as `load_dataset` would), and each data file is fetched with
huggingface_hub into HF_HOME (HF_TOKEN for gated sets; HF_HUB_OFFLINE=1 reads the cache only). With
VALUEDRIFT_HF_MIRROR=<dir>, `hf:<owner>/<name>` is read from `<dir>/<owner>/<name>/` when that
folder exists: the same files as on the hub (raw schema, hub layout), resolved by the same code.

Memory stays flat in the dataset's size: files are read row by row (Parquet by record batch), rows
are converted and written as they arrive into a scratch file, and `limit`/`holdout` pick rows by
selection sampling (Knuth's algorithm S) on a second pass over that file, which needs only the count.

Structural problems (a missing column, a cell of the wrong type or nesting, a bad JSONL line, an
empty file) fail the whole run as `dataset_schema`, naming the file, row and field. Rows that are
well formed but carry nothing to learn (an HH-RLHF pair with no shared human turn) are dropped and
counted in the manifest, by reason.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator

from . import events
from .events import TrainerError

VERSION = 1
RECIPES = ("wildchat", "alpaca", "ultrafeedback", "hh-rlhf", "prism", "columns")
MIRROR_ENV = "VALUEDRIFT_HF_MIRROR"
ROLES = ("system", "user", "assistant")

# Presets: each named recipe is a column mapping plus defaults (the paper, App. B.1).
PRESETS: dict[str, dict[str, Any]] = {
    "wildchat": {"format": "chat", "columns": {"messages": "conversation"}, "language": "English", "holdout": 0.1},
    "alpaca": {"format": "chat", "columns": {"prompt": ["instruction", "input"], "response": "output"}, "holdout": 0.1},
    "ultrafeedback": {"format": "preference", "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}},
    "hh-rlhf": {"format": "preference", "columns": {"chosen": "chosen", "rejected": "rejected"}},
    # PRISM (Kirk et al. 2024; hf:HannahRoseKirk/prism-alignment), its `conversations` config
    # (conversations.jsonl): one row per conversation with `conversation_id`, `user_id`,
    # `conversation_type` ("unguided", "values guided", "controversy guided"), `opening_prompt` (the
    # participant's first message), `conversation_turns`, `conversation_history` (a list of
    # {turn, role, content, model_provider, model_name, score, if_chosen, within_turn_id}) and the
    # ratings/feedback columns. V-PRISM (App. A.1) starts from the opening prompts of the value- and
    # controversy-guided conversations.
    "prism": {"format": "prompts", "columns": {"prompt": "opening_prompt"},
              "conversation_types": ["values guided", "controversy guided"]},
}

# Hub repositories of several configs (none of them the default): the config a source there reads.
# The fingerprint pass knows only the source, so the choice goes by repository, not by recipe.
HUB_CONFIGS = {"HannahRoseKirk/prism-alignment": "conversations"}

HF_RE = re.compile(r"^hf:(?P<id>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w.-]+))?(?::(?P<split>[\w.\[\]%-]+))?$")


class RowError(Exception):
    """A row's problem; the reader adds the file and row number."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


class Skip(Exception):
    """A well-formed row with nothing to learn from: dropped and counted under `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Recipe:
    name: str
    format: str
    columns: dict[str, Any]
    language: str | None
    holdout: float
    limit: int | None
    seed: int
    conversation_types: list[str] | None = None  # prism: keep rows whose `conversation_type` is one of these

    @staticmethod
    def from_config(cfg: dict[str, Any]) -> "Recipe":
        name = cfg.get("recipe") or "columns"
        if name not in RECIPES:
            raise TrainerError("bad_config", f"recipe must be one of {', '.join(RECIPES)}, got {name!r}")
        preset = PRESETS.get(name, {})
        fmt = cfg.get("format") or preset.get("format")
        if fmt not in ("chat", "preference", "prompts"):
            raise TrainerError("bad_config", f"recipe {name}: format must be chat, preference or prompts, got {fmt!r}")
        if preset and preset["format"] != fmt:
            raise TrainerError("bad_config", f"recipe {name} makes {preset['format']} rows, the dataset is declared {fmt}")
        columns = cfg.get("columns") or preset.get("columns")
        if not isinstance(columns, dict) or not columns:
            raise TrainerError("bad_config", f"recipe {name}: a column mapping is needed (columns)")
        need = ("chosen", "rejected") if fmt == "preference" else ("prompt",) if fmt == "prompts" else (("messages",) if "messages" in columns else ("prompt", "response"))
        missing = [k for k in need if k not in columns]
        if missing:
            raise TrainerError("bad_config", f"recipe {name}: columns needs {', '.join(missing)} for {fmt} rows")
        holdout = cfg.get("holdout")
        holdout = preset.get("holdout", 0.0) if holdout is None else float(holdout)
        if not 0 <= holdout < 1:
            raise TrainerError("bad_config", f"holdout must be in [0, 1), got {holdout}")
        language = cfg["language"] if "language" in cfg and cfg["language"] is not None else preset.get("language")
        limit = cfg.get("limit")
        return Recipe(name, fmt, columns, language, holdout, int(limit) if limit else None, int(cfg.get("seed", 0)),
                      preset.get("conversation_types"))

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.name, "format": self.format, "columns": self.columns,
                "filters": {**({"language": self.language} if self.language else {}),
                            **({"conversation_type": self.conversation_types} if self.conversation_types else {})},
                "holdout": self.holdout, "limit": self.limit, "seed": self.seed}


# ---------------------------------------------------------------- sources


@dataclass
class Source:
    kind: str  # hub | mirror | file
    uri: str
    split: str
    revision: str | None
    files: list[str] = field(default_factory=list)  # local paths (hub: after download) or hf:// URLs before


def _sha256_files(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        fh = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                fh.update(chunk)
        h.update(f"{os.path.basename(p)}:{fh.hexdigest()}\n".encode())
    return h.hexdigest()


def resolve(uri: str, split: str) -> Source:
    """Which files make up the split, and the revision they are at."""
    if not uri.startswith("hf:"):
        if not os.path.isfile(uri):
            raise TrainerError("bad_config", f"source file does not exist: {uri}")
        return Source("file", uri, split, f"sha256:{_sha256_files([uri])}", [uri])
    m = HF_RE.match(uri)
    if not m:
        raise TrainerError("bad_config", f"source {uri!r} is not hf:<owner>/<name>[@revision][:split]")
    repo, rev, split = m["id"], m["rev"], m["split"] or split
    config_name = HUB_CONFIGS.get(repo)
    from datasets import load_dataset_builder  # noqa: PLC0415 — a few seconds to import

    mirror = os.environ.get(MIRROR_ENV)
    folder = os.path.join(mirror, *repo.split("/")) if mirror else None
    if folder and os.path.isdir(folder):
        files = _split_files(load_dataset_builder(folder, name=config_name), uri, split)
        return Source("mirror", uri, split, f"mirror-sha256:{_sha256_files(files)}", files)
    try:
        builder = load_dataset_builder(repo, name=config_name, revision=rev, token=os.environ.get("HF_TOKEN") or None)
    except Exception as e:  # noqa: BLE001 — the hub's errors come in many classes
        text = f"{type(e).__name__}: {e}"
        kind = "bad_config" if any(s in text for s in ("DatasetNotFound", "doesn't exist", "RepositoryNotFound", "GatedRepo", "Offline")) else "hub_unreachable"
        hint = f" (no folder {folder} under {MIRROR_ENV})" if folder else ""
        raise TrainerError(kind, f"{uri}: cannot resolve on the hub{hint}: {text}") from None
    urls = _split_files(builder, uri, split)
    resolved = rev
    for u in urls:
        hm = re.match(r"^hf://datasets/[^@]+@([0-9a-f]{40})/", u)
        if hm:
            resolved = hm.group(1)
            break
    return Source("hub", uri, split, resolved, urls)


def _split_files(builder: Any, uri: str, split: str) -> list[str]:
    data_files = builder.config.data_files or {}
    by_name = {str(k): list(v) for k, v in data_files.items()}
    if split not in by_name:
        raise TrainerError("bad_config", f"{uri}: no split {split!r} (splits: {', '.join(sorted(by_name)) or 'none'})")
    return sorted(by_name[split])


def _local_files(src: Source) -> list[str]:
    if src.kind != "hub":
        return src.files
    from huggingface_hub import hf_hub_download  # noqa: PLC0415

    out = []
    for url in src.files:
        hm = re.match(r"^hf://datasets/(?P<repo>[^@]+/[^@/]+)@(?P<rev>[^/]+)/(?P<path>.+)$", url)
        if not hm:
            raise TrainerError("bad_config", f"{src.uri}: unexpected data file URL {url}")
        events.log(f"fetching {url}")
        out.append(hf_hub_download(hm["repo"], hm["path"], repo_type="dataset", revision=hm["rev"],
                                   token=os.environ.get("HF_TOKEN") or None))
    return out


# ---------------------------------------------------------------- reading raw rows


def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def read_raw(path: str, label: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, row) of one data file; JSON Lines, Parquet or CSV, gzip allowed for text."""
    name = label or path
    base = path[:-3] if path.endswith(".gz") else path
    n = 0
    try:
        if base.endswith(".parquet"):
            import pyarrow.parquet as pq  # noqa: PLC0415

            try:
                pf = pq.ParquetFile(path)
            except Exception as e:  # noqa: BLE001
                raise TrainerError("dataset_schema", f"{name}: not a readable Parquet file ({e})") from None
            for batch in pf.iter_batches(batch_size=512):
                for row in batch.to_pylist():
                    n += 1
                    yield n, row
        elif base.endswith(".csv"):
            with _open_text(path) as f:
                for row in csv.DictReader(f):
                    n += 1
                    yield n, dict(row)
        else:  # .jsonl / .json: one object per line
            with _open_text(path) as f:
                for line_no, text in enumerate(f, start=1):
                    if not text.strip():
                        continue
                    try:
                        row = json.loads(text)
                    except json.JSONDecodeError as e:
                        raise TrainerError("dataset_schema", f"{name} line {line_no}: not valid JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise TrainerError("dataset_schema", f"{name} line {line_no}: each line must be a JSON object")
                    n = line_no
                    yield n, row
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise TrainerError("dataset_schema", f"{name}: unreadable after row {n} ({type(e).__name__}: {e})") from None
    if n == 0:
        raise TrainerError("dataset_schema", f"{name}: empty file (no rows)")


# ---------------------------------------------------------------- conversion


def _cell(row: dict[str, Any], col: str) -> Any:
    if col not in row:
        raise RowError(col, f"missing column (columns: {', '.join(sorted(map(str, row)))})")
    return row[col]


def _text(row: dict[str, Any], col: str) -> str:
    v = _cell(row, col)
    if not isinstance(v, str):
        raise RowError(col, f"must be a string, got {type(v).__name__}")
    return v


def _messages(value: Any, col: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError(col, f"must be a non-empty list of {{role, content}} messages, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RowError(f"{col}[{i}]", "must be an object with string role and content")
        if m["role"] not in ROLES:
            raise RowError(f"{col}[{i}].role", f"is {m['role']!r}; expected one of {', '.join(ROLES)}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _joined(row: dict[str, Any], spec: Any) -> str:
    """A column, or several joined by a blank line with empty ones left out (Alpaca's instruction + input)."""
    cols = [spec] if isinstance(spec, str) else list(spec)
    parts = [_text(row, c) for c in cols]
    return "\n\n".join(p for p in parts if p.strip())


TURN_RE = re.compile(r"\n\n(Human|Assistant):[ ]?")


def transcript(text: str, col: str) -> list[dict[str, str]]:
    """`\\n\\nHuman: …\\n\\nAssistant: …` → messages (HH-RLHF's raw form)."""
    parts = TURN_RE.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise RowError(col, 'is not a "\\n\\nHuman: … \\n\\nAssistant: …" transcript')
    return [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
            for who, body in zip(parts[1::2], parts[2::2])]


def _side(value: Any, col: str, has_prompt: bool) -> list[dict[str, str]]:
    """A response cell: a message list; a string is the response itself beside a prompt column, and a
    whole Human/Assistant transcript without one (HH-RLHF)."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}] if has_prompt else transcript(value, col)
    return _messages(value, col)


def _after_prompt(prompt: list[dict[str, str]], side: list[dict[str, str]]) -> list[dict[str, str]]:
    """A response list without the prompt turns it repeats (UltraFeedback's chosen = [user, assistant])."""
    if side[: len(prompt)] == prompt:
        return side[len(prompt):]
    if len(prompt) == 1 and side[0]["role"] == "user" and side[0]["content"].strip() == prompt[0]["content"].strip():
        return side[1:]
    return side


def _split_pair(prompt: list[dict[str, str]] | None, chosen: list[dict[str, str]], rejected: list[dict[str, str]]):
    """The prompt (given, or the shared prefix of both sides ending with a user turn, HH-RLHF's multi-turn
    context) and the two responses that follow it."""
    if prompt is None:
        k = 0
        while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
            k += 1
        while k > 0 and chosen[k - 1]["role"] != "user":
            k -= 1
        if k == 0:
            raise Skip("no shared human turn before the responses")
        prompt, c, r = chosen[:k], chosen[k:], rejected[k:]
    else:
        c, r = _after_prompt(prompt, chosen), _after_prompt(prompt, rejected)
    if not c or not r:
        raise Skip("a response is empty after the shared prompt")
    if any(m["role"] != "assistant" for m in c + r):
        raise Skip("a response has turns other than the assistant's after the shared prompt")
    if prompt[-1]["role"] != "user":
        raise Skip("the prompt does not end with a user turn")
    return prompt, c, r


def convert(recipe: Recipe, row: dict[str, Any]) -> dict[str, Any] | None:
    """One raw row → one project row; None when the row is filtered out."""
    if recipe.language is not None and _cell(row, "language") != recipe.language:
        return None
    if recipe.conversation_types is not None:
        kind = _text(row, "conversation_type")
        if re.sub(r"[\s_-]+", " ", kind.strip().lower()) not in recipe.conversation_types:
            return None
    cols = recipe.columns
    if recipe.format == "prompts":
        prompt = _joined(row, cols["prompt"])
        if not prompt.strip():
            raise Skip("empty prompt")
        return {"prompt": prompt}
    if recipe.format == "chat":
        if "messages" in cols:
            msgs = _messages(_cell(row, cols["messages"]), cols["messages"])
        else:
            msgs = []
            if cols.get("system"):
                system = _text(row, cols["system"])
                if system.strip():
                    msgs.append({"role": "system", "content": system})
            msgs += [{"role": "user", "content": _joined(row, cols["prompt"])},
                     {"role": "assistant", "content": _text(row, cols["response"])}]
        if len(msgs) < 2 or not any(m["role"] == "assistant" for m in msgs):
            raise Skip("no assistant turn")
        return {"messages": msgs}
    prompt = None
    if cols.get("prompt"):
        spec = cols["prompt"]
        value = _cell(row, spec) if isinstance(spec, str) else None
        prompt = _messages(value, spec) if isinstance(value, list) else [{"role": "user", "content": _joined(row, spec)}]
    chosen = _side(_cell(row, cols["chosen"]), cols["chosen"], prompt is not None)
    rejected = _side(_cell(row, cols["rejected"]), cols["rejected"], prompt is not None)
    p, c, r = _split_pair(prompt, chosen, rejected)
    return {"prompt": p, "chosen": c, "rejected": r}


# ---------------------------------------------------------------- selection


def selection(n: int, k: int, rng: random.Random) -> Iterator[bool]:
    """Knuth's algorithm S: for each of n items in order, whether it is among exactly k chosen uniformly."""
    chosen = 0
    for seen in range(n):
        pick = rng.random() * (n - seen) < (k - chosen)
        chosen += pick
        yield pick


def holdout_count(n: int, fraction: float) -> int:
    """ceil(n × fraction), exactly (the paper's 284,168 English WildChat rows → 28,417 held out)."""
    return math.ceil(Fraction(str(fraction)) * n) if fraction else 0


# ---------------------------------------------------------------- the command


def prepare(cfg: dict[str, Any]) -> dict[str, Any]:
    out_dir = cfg.get("output_dir")
    if not isinstance(out_dir, str) or not out_dir:
        raise TrainerError("bad_config", "output_dir is required")
    os.makedirs(out_dir, exist_ok=True)
    uri = cfg.get("source")
    if not isinstance(uri, str):
        raise TrainerError("bad_config", "source is required")
    src = resolve(uri, cfg.get("split") or "train")
    if cfg.get("fingerprint_only"):
        fp = {"kind": src.kind, "revision": src.revision, "split": src.split,
              "files": [os.path.basename(f) if src.kind != "hub" else f for f in src.files]}
        _write_json(os.path.join(out_dir, "fingerprint.json"), fp)
        return fp
    recipe = Recipe.from_config(cfg)
    files = _local_files(src)
    scratch = os.path.join(out_dir, "converted.jsonl.tmp")
    read = filtered = kept = 0
    dropped: dict[str, int] = {}
    with open(scratch, "w", encoding="utf-8") as w:
        for path, label in zip(files, src.files):
            shown = label if src.kind == "hub" else path
            for n, row in read_raw(path, shown):
                read += 1
                try:
                    out = convert(recipe, row)
                except RowError as e:
                    raise TrainerError("dataset_schema", f"{shown} row {n}: field {e.field!r}: {e.message}") from None
                except Skip as s:
                    dropped[s.reason] = dropped.get(s.reason, 0) + 1
                    continue
                if out is None:
                    filtered += 1
                    continue
                w.write(json.dumps(out, ensure_ascii=False) + "\n")
                kept += 1
                if read % 50_000 == 0:
                    events.log(f"{uri}: {read} rows read, {kept} kept")
    if kept == 0:
        raise TrainerError("dataset_schema", f"{uri} ({src.split}): no rows left after filters ({read} read, {filtered} filtered out, dropped {dropped})")
    chosen = min(recipe.limit, kept) if recipe.limit else kept
    held = holdout_count(chosen, recipe.holdout)
    rng = random.Random(recipe.seed)
    take = selection(kept, chosen, rng)
    hold = selection(chosen, held, random.Random(recipe.seed + 1))
    train_n = val_n = 0
    train_path = os.path.join(out_dir, "train.jsonl")
    val_path = os.path.join(out_dir, "validation.jsonl")
    with open(scratch, encoding="utf-8") as r, open(train_path, "w", encoding="utf-8") as tw, \
            (open(val_path, "w", encoding="utf-8") if held else open(os.devnull, "w")) as vw:
        for line in r:
            if not next(take):
                continue
            if next(hold):
                vw.write(line)
                val_n += 1
            else:
                tw.write(line)
                train_n += 1
    os.remove(scratch)
    manifest = {
        "version": VERSION,
        "source": {"uri": uri, "kind": src.kind, "split": src.split, "revision": src.revision,
                   "files": [os.path.basename(f) if src.kind != "hub" else f for f in src.files]},
        **recipe.describe(),
        "rows": {"read": read, "filtered_out": filtered, "dropped": dropped, "converted": kept,
                 "selected": chosen, "train": train_n, "validation": val_n},
    }
    _write_json(os.path.join(out_dir, "manifest.json"), manifest)
    events.log(f"{uri}: {train_n} train / {val_n} validation rows (of {read} read)")
    return manifest


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
