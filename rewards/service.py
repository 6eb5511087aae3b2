"""Reward-as-a-Service: the router behind HTTP (FastAPI + uvicorn).

    python -m rewards.service --host 127.0.0.1 --port 8300 [--config morl] [--set math.workers=4 ...]

POST /v1/rewards  {"items": [{"id", "task", "response", "target"}, ...]}
               -> {"results": [{"id", "reward", "reason", "latency_ms"}, ...]}  (same order)
GET  /health      {"status": "ok", "tasks": [...], "math_workers": n}
GET  /metrics     Prometheus text (rewards.metrics)

Answers 401 without the bearer token when the variable named by rewards.service.auth_token_env is set;
413 when the body exceeds service.max_body_bytes or the batch service.max_items; 422 naming the field
when the body is not JSON of that shape. Inside a well-formed batch a bad item (unknown task, malformed
target, unreadable response) scores 0 with its reason and never fails the batch.
"""
from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from rewards.config import RewardsConfig, load_rewards_config
from rewards.functions import PREFERENCE
from rewards.metrics import CONTENT_TYPE, RewardMetrics
from rewards.result import RewardItem
from rewards.router import RewardRouter

log = logging.getLogger(__name__)


class RequestRejected(Exception):
    """A request answered with an error status before any item is scored."""

    def __init__(self, status_code: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


def _invalid(loc: list[str | int], msg: str, kind: str) -> RequestRejected:
    return RequestRejected(422, [{"loc": ["body", *loc], "msg": msg, "type": kind}])


def parse_items(payload: Any, max_items: int) -> list[RewardItem]:
    """Check the request's shape and build the items; RequestRejected (413 or 422) names what is wrong."""
    if not isinstance(payload, dict):
        raise _invalid([], f"expected a JSON object with 'items', got {type(payload).__name__}", "object_type")
    if "items" not in payload:
        raise _invalid(["items"], "field required", "missing")
    raw = payload["items"]
    if not isinstance(raw, list):
        raise _invalid(["items"], f"expected a list, got {type(raw).__name__}", "list_type")
    if len(raw) > max_items:
        raise RequestRejected(413, f"{len(raw)} items exceed the service limit of {max_items} "
                                   f"(rewards.service.max_items); split the batch")
    items: list[RewardItem] = []
    for entry in raw:  # the common case, checked fast; the first doubt sends the batch to the slow path
        try:
            ident, task, response, target = entry["id"], entry["task"], entry["response"], entry["target"]
        except (TypeError, KeyError):
            break
        if type(task) is not str or type(response) is not str or (type(ident) is not str and type(ident) is not int):
            break
        items.append(RewardItem(ident, task, response, target))
    else:
        return items
    return _parse_items_slowly(raw)


def _parse_items_slowly(raw: list[Any]) -> list[RewardItem]:
    """parse_items for a batch with (possibly) bad entries: name every bad field."""
    errors: list[dict[str, Any]] = []
    items: list[RewardItem] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            errors.append({"loc": ["body", "items", index], "msg": "expected an object", "type": "object_type"})
            continue
        bad = False
        for field, types, type_name in (("id", (str, int), "a string or an integer"), ("task", str, "a string"),
                                        ("response", str, "a string")):
            value = entry.get(field)
            if field not in entry:
                errors.append({"loc": ["body", "items", index, field], "msg": "field required", "type": "missing"})
                bad = True
            elif not isinstance(value, types) or isinstance(value, bool):
                errors.append({"loc": ["body", "items", index, field],
                               "msg": f"expected {type_name}, got {type(value).__name__}", "type": "type_error"})
                bad = True
        if "target" not in entry:
            errors.append({"loc": ["body", "items", index, "target"], "msg": "field required", "type": "missing"})
            bad = True
        if not bad:
            items.append(RewardItem(entry["id"], entry["task"], entry["response"], entry["target"]))
    if errors:
        raise RequestRejected(422, errors)
    return items


def create_app(cfg: RewardsConfig, router: RewardRouter | None = None) -> FastAPI:
    """The service app. Without `router` the app builds one at startup (warm: workers started, models
    loaded) and closes it at shutdown."""
    limits = cfg.service
    token = os.environ.get(limits.auth_token_env) or None
    state: dict[str, Any] = {"router": router}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = state["router"] is None
        if owned:
            state["router"] = RewardRouter.from_config(cfg)
        current: RewardRouter = state["router"]
        await run_in_threadpool(current.warm_up)
        pool = current.math_pool
        state["metrics"] = RewardMetrics(current.tasks, limits.item_latency_buckets_s,
                                         limits.request_latency_buckets_s,
                                         (lambda: pool.replaced) if pool is not None else (lambda: 0))
        log.info("reward service ready: tasks %s, auth %s", current.tasks, "on" if token else "off")
        try:
            yield
        finally:
            if owned:
                await run_in_threadpool(current.close)

    app = FastAPI(title="mimovl rewards", lifespan=lifespan)

    def check_auth(request: Request) -> None:
        if token is None:
            return
        supplied = request.headers.get("authorization", "")
        if not (supplied.startswith("Bearer ") and hmac.compare_digest(supplied[7:].encode(), token.encode())):
            raise RequestRejected(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise RequestRejected(413, f"request body of {declared} bytes exceeds the service limit of "
                                       f"{limits.max_body_bytes} bytes (rewards.service.max_body_bytes)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise RequestRejected(413, f"request body exceeds the service limit of {limits.max_body_bytes} "
                                           f"bytes (rewards.service.max_body_bytes)")
        return bytes(body)

    @app.post("/v1/rewards")
    async def score(request: Request) -> Response:
        start = time.perf_counter()
        try:
            check_auth(request)
            body = await read_body(request)
            try:
                payload = json.loads(body)
            except ValueError as exc:
                raise _invalid([], f"malformed JSON: {exc}", "json_invalid") from None
            items = parse_items(payload, limits.max_items)
            results = await run_in_threadpool(state["router"].score, items)
            state["metrics"].observe_items(items, results)
            answer = Response(
                json.dumps({"results": [
                    {"id": r.id, "reward": r.reward, "reason": r.reason, "latency_ms": r.latency_ms} for r in results
                ]}),
                media_type="application/json",
            )
        except RequestRejected as exc:
            answer = JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        state["metrics"].observe_request(answer.status_code, time.perf_counter() - start)
        return answer

    @app.get("/health")
    async def health() -> dict[str, Any]:
        current: RewardRouter = state["router"]
        pool = current.math_pool
        return {"status": "ok", "tasks": current.tasks, "math_workers": len(pool.pids) if pool else 0}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        try:
            check_auth(request)
        except RequestRejected as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return Response(state["metrics"].render(), media_type=CONTENT_TYPE)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mimovl Reward-as-a-Service")
    parser.add_argument("--config", default="morl", help="conf/rl/<config>.yaml whose rewards: section to use")
    parser.add_argument("--host", help="bind address (default: rewards.service.host)")
    parser.add_argument("--port", type=int, help="port (default: rewards.service.port)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the rewards: section, e.g. --set math.workers=4")
    args = parser.parse_args(argv)
    cfg = load_rewards_config(args.config, args.overrides)
    host = args.host if args.host is not None else cfg.service.host
    port = args.port if args.port is not None else cfg.service.port
    logging.basicConfig(level=cfg.service.log_level.upper() if cfg.service.log_level != "trace" else "DEBUG",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if any(route.fn == PREFERENCE for route in cfg.routes.values()):
        import torch  # only for the preference model, which the service loads at startup

        torch.set_num_threads(cfg.service.torch_threads)

    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, log_level=cfg.service.log_level,
                access_log=cfg.service.access_log)


if __name__ == "__main__":
    main()
