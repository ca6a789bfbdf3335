"""OpenAI's Files and Batches shapes in front of the local judge, for valuedrift's Batch API mode.

    POST /v1/files                   multipart: purpose=batch, file=<JSONL>   → a file object
    GET  /v1/files/{id}              the file object
    GET  /v1/files/{id}/content      the bytes
    POST /v1/batches                 {input_file_id, endpoint: /v1/chat/completions, completion_window: 24h}
    GET  /v1/batches/{id}            the batch: validating → in_progress → finalizing → completed
    POST /v1/batches/{id}/cancel     cancelling → cancelled (the lines done so far are kept)

Each input line ``{custom_id, method: POST, url: /v1/chat/completions, body}`` is answered by the
server's own chat completion code (the same function as the HTTP route), so a batch's answers are
exactly what the online path would get. Successful answers go to the output file, failed ones to
the error file, in OpenAI's line shape ``{id, custom_id, response: {status_code, request_id, body},
error}``. Files and batches live in memory: a restarted server has forgotten them (a client polling
a forgotten batch gets 404 and its retry judges online).

Two options make the local endpoint behave like a provider for tests: ``min_seconds`` keeps every
batch in progress at least that long, and ``fail_every`` answers every Nth request of a batch with a
server error (a partial failure the client must judge again).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

#: One JSONL input file at most (OpenAI allows 200 MB; this is a local test endpoint).
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Lines of one batch answered concurrently (the judge's own batcher groups them for the model).
LINE_CONCURRENCY = 32


@dataclass
class BatchOptions:
    min_seconds: float = 0.0
    fail_every: int = 0


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def card(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "status_details": None}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name → (filename, bytes) of a multipart/form-data body (the standard library's MIME parser)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(400, "POST /v1/files wants multipart/form-data")
    msg = BytesParser(policy=default_policy).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise HTTPException(400, "malformed multipart body")
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        parts[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return parts


def add_batch_routes(app: FastAPI, complete: Callable[[Any], Awaitable[dict]], counters: dict[str, int],
                     options: BatchOptions) -> None:
    files: dict[str, StoredFile] = {}
    batches: dict[str, dict] = {}
    tasks: dict[str, asyncio.Task] = {}

    def store(filename: str, purpose: str, data: bytes) -> StoredFile:
        f = StoredFile(f"file-{uuid.uuid4().hex}", filename, purpose, data)
        files[f.id] = f
        return f

    def get_file(file_id: str) -> StoredFile:
        f = files.get(file_id)
        if f is None:
            raise HTTPException(404, f"No such File object: {file_id}")
        return f

    def get_batch(batch_id: str) -> dict:
        b = batches.get(batch_id)
        if b is None:
            raise HTTPException(404, f"No such Batch object: {batch_id}")
        return b

    @app.post("/v1/files")
    async def create_file(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_FILE_BYTES:
            raise HTTPException(413, f"file larger than {MAX_FILE_BYTES} bytes")
        parts = parse_multipart(request.headers.get("content-type", ""), body)
        purpose = parts.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
        if purpose != "batch":
            raise HTTPException(400, f"this endpoint stores batch input files only (purpose=batch), not {purpose!r}")
        if "file" not in parts:
            raise HTTPException(400, "missing the 'file' part")
        filename, data = parts["file"]
        counters["files_created"] += 1
        return JSONResponse(store(filename or "input.jsonl", purpose, data).card())

    @app.get("/v1/files/{file_id}")
    async def file_info(file_id: str) -> JSONResponse:
        return JSONResponse(get_file(file_id).card())

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        return Response(get_file(file_id).data, media_type="application/jsonl")

    async def answer_line(batch_id: str, index: int, raw: str) -> tuple[bool, dict]:
        line_id = f"batch_req_{uuid.uuid4().hex}"
        custom_id = None
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("a line must be a JSON object")
            custom_id = req.get("custom_id")
            if req.get("url") != "/v1/chat/completions" or req.get("method", "POST") != "POST":
                raise ValueError("only POST /v1/chat/completions is served")
            if options.fail_every > 0 and (index + 1) % options.fail_every == 0:
                err = {"error": {"message": "injected server error (--batch-fail-every)", "type": "server_error", "param": None, "code": None}}
                return False, {"id": line_id, "custom_id": custom_id, "response": {"status_code": 500, "request_id": line_id, "body": err}, "error": None}
            body = await complete(req.get("body"))
            return True, {"id": line_id, "custom_id": custom_id, "response": {"status_code": 200, "request_id": line_id, "body": body}, "error": None}
        except Exception as exc:  # noqa: BLE001 — every line gets an answer, failed or not
            status = getattr(exc, "status", 400)
            message = getattr(exc, "message", None) or str(exc)
            err = {"error": {"message": message, "type": "invalid_request_error", "param": getattr(exc, "param", None), "code": getattr(exc, "code", None)}}
            return False, {"id": line_id, "custom_id": custom_id, "response": {"status_code": status, "request_id": line_id, "body": err}, "error": None}

    async def run(batch_id: str, lines: list[str]) -> None:
        b = batches[batch_id]
        started = time.monotonic()
        b["status"], b["in_progress_at"] = "in_progress", int(time.time())
        out: list[str] = []
        errs: list[str] = []
        sem = asyncio.Semaphore(LINE_CONCURRENCY)

        async def one(i: int, raw: str) -> None:
            async with sem:
                if b["status"] != "in_progress":
                    return
                ok, row = await answer_line(batch_id, i, raw)
                counters["batch_requests"] += 1
                (out if ok else errs).append(json.dumps(row))
                b["request_counts"]["completed" if ok else "failed"] += 1

        await asyncio.gather(*(one(i, raw) for i, raw in enumerate(lines)))
        while b["status"] == "in_progress" and time.monotonic() - started < options.min_seconds:
            await asyncio.sleep(0.1)
        cancelled = b["status"] == "cancelling"
        if not cancelled:
            b["status"], b["finalizing_at"] = "finalizing", int(time.time())
        if out:
            b["output_file_id"] = store(f"{batch_id}_output.jsonl", "batch_output", ("\n".join(out) + "\n").encode()).id
        if errs:
            b["error_file_id"] = store(f"{batch_id}_error.jsonl", "batch_output", ("\n".join(errs) + "\n").encode()).id
        now = int(time.time())
        if cancelled:
            b["status"], b["cancelled_at"] = "cancelled", now
        else:
            b["status"], b["completed_at"] = "completed", now

    @app.post("/v1/batches")
    async def create_batch(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(400, "request body must be JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "request body must be a JSON object")
        if body.get("endpoint") != "/v1/chat/completions":
            raise HTTPException(400, f"only endpoint /v1/chat/completions is served, not {body.get('endpoint')!r}")
        if body.get("completion_window") != "24h":
            raise HTTPException(400, "completion_window must be '24h'")
        f = get_file(str(body.get("input_file_id")))
        lines = [ln for ln in f.data.decode("utf-8", "replace").split("\n") if ln.strip()]
        batch_id = f"batch_{uuid.uuid4().hex}"
        now = int(time.time())
        batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
            "input_file_id": f.id, "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 24 * 3600, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else None,
        }
        counters["batches_created"] += 1
        tasks[batch_id] = asyncio.get_running_loop().create_task(run(batch_id, lines))
        return JSONResponse(batches[batch_id])

    @app.get("/v1/batches/{batch_id}")
    async def batch_info(batch_id: str) -> JSONResponse:
        return JSONResponse(get_batch(batch_id))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str) -> JSONResponse:
        b = get_batch(batch_id)
        if b["status"] in ("validating", "in_progress"):
            b["status"], b["cancelling_at"] = "cancelling", int(time.time())
        return JSONResponse(b)
