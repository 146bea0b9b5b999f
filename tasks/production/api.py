"""api: online scoring with the production model (FastAPI; `kdistill api`, `make api`).

- `POST /predict` with `{"text": "..."}` or `{"texts": ["...", ...]}`: label, confidence and
  probabilities per text. Limits (`api.max_texts`, `api.max_chars`) answer 413, and so does a body
  larger than the largest request they allow, before it is read; an empty text, one with no tokens
  or a wrong shape 422; malformed JSON (or a body that is not UTF-8) 400; always `{"error": "one line"}`.
- `GET /health`: "ok", "no model", or "degraded" (serving, but a reload or a log write failed: the
  reason, the retry and the rows kept are in `problems`); `GET /model`: its version and metrics from
  the registry (503 when the registry cannot be read). Anything unexpected: a JSON 500, never a traceback.

The model is loaded once. Each request is checked and tokenised on its own, with the model it
will be answered by, before it joins a batch: a text the tokenizer cannot take (a lone UTF-16
surrogate) gets its own 422 and never reaches the others. Concurrent requests are micro-batched:
a single worker collects what arrives within `api.batch_wait_ms` (up to `api.max_batch` texts)
into one forward pass, run in a thread so the event loop keeps accepting requests. When a batch
fails, its requests are retried one by one, so an error fails only the request it belongs to.
Every prediction goes to the same production log as `kdistill score` (tasks.production.api_log:
buffered, a part file written atomically every `api.flush_rows` rows or `api.flush_seconds` by a
timer whether or not requests arrive, and at shutdown, always off the event loop; a failed write
keeps the rows). A newly promoted model is picked up without a restart: each request compares
models/registry.json's modification time with the loaded one's, and the model it captured then
gives both the probabilities and the version of its answer; a failed load is retried with backoff.
Headers and bodies must arrive within `api.read_timeout_seconds` (tasks.production.api_http).
Binds 127.0.0.1 by default (`api.host`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from tasks.infra.config import Config
from tasks.infra.errors import UserError
from tasks.production.api_http import ApiError, BodyLimit, ReadTimeoutH11, body_problem, max_body_bytes
from tasks.production.api_log import TICK_S, LogBuffer, backoff_s
from tasks.production.score import ProductionModel, load_production, log_rows
from tasks.infra.storage import Paths
from tasks.infra.tables import is_blank, lone_surrogate, shorten

log = logging.getLogger("kd")


class PredictRequest(BaseModel):
    """One text or a list of texts."""

    text: str | None = None
    texts: list[str] | None = None


def check_request(body: PredictRequest, max_texts: int, max_chars: int) -> list[str]:
    """The request's texts, or an `ApiError` naming what is wrong (which text, which limit)."""
    if (body.text is None) == (body.texts is None):
        raise ApiError(422, 'give exactly one of "text" (a string) or "texts" (a list of strings)')
    texts = [body.text] if body.text is not None else body.texts
    if not texts:
        raise ApiError(422, '"texts" is empty; expected at least one text')
    if len(texts) > max_texts:
        raise ApiError(413, f"{len(texts)} texts in one request; at most {max_texts} (api.max_texts)")
    for i, text in enumerate(texts):
        if is_blank(text):
            raise ApiError(422, f"text {i} is empty or blank (whitespace or invisible characters only); "
                                "expected some words")
        if len(text) > max_chars:
            raise ApiError(413, f"text {i} has {len(text)} characters; at most {max_chars} (api.max_chars)")
        at = lone_surrogate(text)
        if at is not None:
            raise ApiError(422, f"text {i}: character {at} is a lone UTF-16 surrogate (\\u{ord(text[at]):04x}), "
                                "not valid Unicode; expected UTF-8 text")
    return texts


def encode_request(model: ProductionModel, texts: list[str]) -> list[list[int]]:
    """One request's token ids, or a 422 for this request alone when the tokenizer refuses its text
    or leaves nothing of it (only bidi marks or combining accents: `kdistill score` refuses it too)."""
    try:
        ids = model.encode(texts)
    except Exception as err:  # noqa: BLE001 - whatever the tokenizer raises, it is this request's text
        raise ApiError(422, f"the texts cannot be tokenised ({type(err).__name__}: {shorten(err, 80)})") from None
    special = model.tokenizer.num_special_tokens_to_add(pair=False)
    empty = next((i for i, row in enumerate(ids) if len(row) <= special), None)
    if empty is not None:
        raise ApiError(422, f"text {empty} has no tokens once tokenised (marks or control characters only); "
                            "expected some words")
    return ids


@dataclass
class Pending:
    """One request waiting in the queue: its texts, their token ids and the model that encoded them."""

    model: ProductionModel
    texts: list[str]
    ids: list[list[int]]
    future: asyncio.Future


class Batcher:
    """Collects concurrent requests into batches; reloads the model when it is promoted."""

    def __init__(self, cfg: Config, paths: Paths):
        from tasks.infra.registry_view import registry_path

        self.cfg, self.paths, self.registry = cfg, paths, registry_path(paths)
        self.model: ProductionModel | None = None
        self.stamp: int | None = None
        # A failed (re)load: the reason /health reports, failures in a row, and when the timer retries it.
        self.load_error: str | None = None
        self.load_failures, self.retry_at = 0, 0.0
        self.queue: asyncio.Queue = asyncio.Queue()
        self.reloading = asyncio.Lock()
        self.buffer = LogBuffer(paths, cfg.api.flush_rows, cfg.api.flush_seconds)

    def _mtime(self) -> int | None:
        return self.registry.stat().st_mtime_ns if self.registry.is_file() else None

    def load(self) -> None:
        """(Re)load the production model; keeps serving the old one if the new one fails to load, says so in
        /health (`load_error`) and retries with backoff (`reload_due`) until it loads."""
        stamp = self._mtime()
        try:
            model = load_production(self.cfg, self.paths)
        except Exception as err:  # noqa: BLE001 - a broken promotion must not take the API down
            self.load_failures += 1
            wait = backoff_s(self.load_failures)
            self.load_error = f"loading the production model failed: {type(err).__name__}: {shorten(err, 200)}"
            self.retry_at, self.stamp = time.monotonic() + wait, stamp
            log.error("api: %s (try %d; next in %.1f s)", self.load_error, self.load_failures, wait)
            return
        self.buffer.flush()
        self.model, self.stamp = model, stamp
        self.load_error, self.load_failures = None, 0
        log.info("api: serving production model version %s (%s)", model.version, model.model_hash[:12])

    def reload_due(self) -> bool:
        """The registry changed since the last load, or a failed load's backoff is over."""
        return self._mtime() != self.stamp or (self.load_error is not None and time.monotonic() >= self.retry_at)

    async def reload_if_due(self) -> None:
        """Reload when due; concurrent callers wait for one reload instead of starting theirs."""
        if self.reload_due():
            async with self.reloading:
                if self.reload_due():
                    await asyncio.to_thread(self.load)

    async def housekeeping(self) -> None:
        """The timer: every TICK_S, flush log rows that are old enough (requests or not) and retry a failed load."""
        while True:
            await asyncio.sleep(TICK_S)
            try:
                if self.buffer.due():
                    await asyncio.to_thread(self.buffer.tick)
                if self.load_error is not None:
                    await self.reload_if_due()
            except Exception:  # noqa: BLE001 - the timer must outlive any one failure (each is in /health)
                log.exception("api: housekeeping failed")

    def health(self) -> dict:
        """/health's body: ok, degraded (serving, with a failed reload or log write and its reason) or no model."""
        model, logged = self.model, self.buffer.state()
        problems = {}
        if self.load_error is not None:
            problems["model"] = {"error": self.load_error, "failures": self.load_failures,
                                 "retry_in_s": round(max(self.retry_at - time.monotonic(), 0.0), 2)}
        if logged["status"] != "ok":
            problems["log"] = logged
        status = "no model" if model is None else "degraded" if problems else "ok"
        return {"status": status, "model_loaded": model is not None, "model_version": model.version if model else None,
                "problems": problems, "log": logged}

    async def current(self) -> ProductionModel:
        """The model to answer a request with, reloaded first when the registry changed; 503 without one."""
        await self.reload_if_due()
        if self.model is None:
            raise ApiError(503, "no production model loaded; run the promote stage first")
        return self.model

    async def predict(self, model: ProductionModel, texts: list[str], ids: list[list[int]]) -> np.ndarray:
        """Probabilities [N, C] of one request's texts by `model` (which encoded `ids`), in a shared batch."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(model, texts, ids, future))
        return await future

    async def run(self) -> None:
        """The worker: wait for a request, gather more for up to batch_wait_ms, predict them together."""
        loop = asyncio.get_running_loop()
        wait, limit = self.cfg.api.batch_wait_ms / 1000, self.cfg.api.max_batch
        while True:
            items = [await self.queue.get()]
            deadline, size = loop.time() + wait, len(items[0].texts)
            while size < limit and (left := deadline - loop.time()) > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                    size += len(items[-1].texts)
            groups: dict[int, list[Pending]] = {}  # by model: a reload may land between two requests
            for item in items:
                groups.setdefault(id(item.model), []).append(item)
            for group in groups.values():
                await self._answer(group)

    async def _answer(self, group: list[Pending]) -> None:
        """Predict one model's requests in one pass; after a failure, retry each alone, so a request
        that breaks the model fails by itself."""
        try:
            probs = await asyncio.to_thread(self._predict_and_log, group)
        except Exception as err:  # noqa: BLE001 - the request's own error, passed on to it
            if len(group) > 1:
                for item in group:
                    await self._answer([item])
                return
            if not group[0].future.done():
                group[0].future.set_exception(err)
            return
        start = 0
        for item in group:
            if not item.future.done():  # done: the client went away meanwhile
                item.future.set_result(probs[start:start + len(item.texts)])
            start += len(item.texts)

    def _predict_and_log(self, group: list[Pending]) -> np.ndarray:
        """Runs in a worker thread: the forward pass, then the log rows (a flush writes Parquet)."""
        model = group[0].model
        texts = [t for item in group for t in item.texts]
        probs = model.predict_ids([i for item in group for i in item.ids], self.cfg.api.max_batch)
        try:
            self.buffer.add(log_rows(model, texts, probs, "api"))
        except Exception:  # the answers are right; a log that cannot be written is logged loudly
            log.exception("api: could not write %d rows to the production log", len(texts))
        return probs


def create_app(cfg: Config, paths: Paths) -> FastAPI:
    """The FastAPI app for the workspace at `paths` (the model loads at start-up)."""
    batcher = Batcher(cfg, paths)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(batcher.buffer.drain)  # rows a previous process spooled
        await asyncio.to_thread(batcher.load)
        tasks = [asyncio.create_task(batcher.run()), asyncio.create_task(batcher.housekeeping())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.to_thread(batcher.buffer.flush)

    app = FastAPI(title="kdistill", lifespan=lifespan)
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, limit=max_body_bytes(cfg.api.max_texts, cfg.api.max_chars),
                       timeout=cfg.api.read_timeout_seconds)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        status, message = err.status_code, str(err.detail)
        if status == 400 and err.__cause__ is not None:  # FastAPI could not read the body: say why
            status, message = body_problem(err.__cause__)
        return JSONResponse({"error": message}, status_code=status, headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": f"malformed JSON: {first.get('ctx', {}).get('error', 'cannot parse')}"},
                                status_code=400)
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}; expected "
                                      '{"text": "..."} or {"texts": ["...", ...]}'}, status_code=422)

    @app.post("/predict")
    async def predict(body: PredictRequest) -> dict:
        texts = check_request(body, cfg.api.max_texts, cfg.api.max_chars)
        model = await batcher.current()  # captured once: the answer's probabilities and version both come from it
        ids = await asyncio.to_thread(encode_request, model, texts)
        try:
            probs = await batcher.predict(model, texts, ids)
        except Exception as err:  # noqa: BLE001 - this request's own failure: one line, the others go on
            log.error("api: prediction failed: %s: %s", type(err).__name__, err)
            raise ApiError(500, f"prediction failed ({type(err).__name__}: {shorten(err, 80)})") from None
        rows = [{"label": model.labels[int(p.argmax())], "confidence": round(float(p.max()), 6),
                 "probabilities": {n: round(float(v), 6) for n, v in zip(model.labels, p)}} for p in probs]
        return {"model_version": model.version, "predictions": rows}

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        # Whatever else breaks answers one JSON line too, never Starlette's text/plain 500.
        log.error("api: %s %s failed: %s: %s", request.method, request.url.path, type(err).__name__, err)
        return JSONResponse({"error": f"internal error ({type(err).__name__}: {shorten(err, 120)})"}, status_code=500)

    @app.get("/health")
    async def health() -> dict:
        return batcher.health()

    @app.get("/model")
    async def model_info() -> dict:
        from tasks.infra.registry_view import read_registry

        model = await batcher.current()
        try:
            # In a thread: reading first recovers a killed writer's swap, which may wait for the write lock.
            registry = await asyncio.to_thread(read_registry, paths)
        except (UserError, OSError, ValueError) as err:  # unreadable or not JSON: say which file, as one line
            raise ApiError(503, f"the registry cannot be read: {shorten(err, 200)}") from None
        entry = next((v for v in registry.get("versions", []) if v.get("version") == model.version), {})
        return {"version": model.version, "model_hash": model.model_hash, "labels": model.labels,
                "variant": model.predictor.variant, "metrics": entry.get("metrics"), "promoted_at": entry.get("time")}

    return app


def run_api(cfg: Config, paths: Paths) -> None:
    """Run the API with uvicorn on `api.host`:`api.port` (127.0.0.1:8000 by default) until interrupted."""
    import uvicorn

    from tasks.models.loading import check_max_length
    from tasks.infra.registry_view import production_dir

    if (production_dir(paths) / "config.json").is_file():  # none yet: the API answers 503 until a promotion
        check_max_length(cfg.base.max_length, str(production_dir(paths)), "models/production")
    log.info("api: http://%s:%d (POST /predict, GET /health, GET /model)", cfg.api.host, cfg.api.port)
    protocol = functools.partial(ReadTimeoutH11, read_timeout=cfg.api.read_timeout_seconds)
    uvicorn.run(create_app(cfg, paths), host=cfg.api.host, port=cfg.api.port, log_level="warning", http=protocol)
