"""Client of the reward service: same `score(items) -> list[RewardResult]` as RewardRouter.

    with RewardClient("http://127.0.0.1:8300", load_rewards_config("morl")) as client:
        results = client.score(items)

One httpx.Client keeps connections alive between calls. Batches larger than client.batch_items are
split. An attempt that fails to connect, times out, or gets 5xx/429 is retried after backoff_s * 2**k
(capped at backoff_max_s) up to client.retries times, all within client.deadline_s; other errors
(401, 413, 422) are not retried and raise RewardServiceError with the server's message.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import httpx

from rewards.config import RewardsConfig
from rewards.result import RewardItem, RewardResult

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class RewardServiceError(RuntimeError):
    """The reward service refused a request, or no answer came within the retries and the deadline."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RewardClient:
    def __init__(self, base_url: str, cfg: RewardsConfig, token: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        """`token` defaults to the environment variable named by rewards.service.auth_token_env;
        `transport` replaces httpx's network transport (tests)."""
        self._cfg = cfg.client
        token = token if token is not None else os.environ.get(cfg.service.auth_token_env) or None
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        limits = httpx.Limits(max_connections=self._cfg.max_connections,
                              max_keepalive_connections=self._cfg.max_connections)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, limits=limits,
                                  timeout=self._cfg.request_timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health", None, time.monotonic() + self._cfg.deadline_s).json()

    def score(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        """Score items through the service; results in the order of `items`."""
        deadline = time.monotonic() + self._cfg.deadline_s
        results: list[RewardResult] = []
        size = self._cfg.batch_items
        for begin in range(0, len(items), size):
            batch = items[begin:begin + size]
            body = json.dumps({"items": [
                {"id": i.id, "task": i.task, "response": i.response, "target": i.target} for i in batch
            ]}).encode()
            answer = self._request("POST", "/v1/rewards", body, deadline).json()["results"]
            if len(answer) != len(batch):
                raise RewardServiceError(f"the service answered {len(answer)} results for {len(batch)} items")
            results += [RewardResult(r["id"], r["reward"], r["reason"], r["latency_ms"]) for r in answer]
        return results

    def _request(self, method: str, path: str, body: bytes | None, deadline: float) -> httpx.Response:
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RewardServiceError(f"{method} {path}: no answer within client.deadline_s={self._cfg.deadline_s}")
            timeout = min(self._cfg.request_timeout_s, remaining)
            try:
                response = self._http.request(method, path, content=body, timeout=timeout)
            except httpx.TransportError as exc:
                failure, status = f"{type(exc).__name__}: {exc}", None
            else:
                if response.status_code == 200:
                    return response
                failure, status = f"HTTP {response.status_code}: {response.text[:2000]}", response.status_code
                if status not in _RETRY_STATUS:
                    raise RewardServiceError(f"{method} {path} refused: {failure}", status)
            if attempt >= self._cfg.retries:
                raise RewardServiceError(f"{method} {path} failed after {attempt + 1} attempts: {failure}", status)
            pause = min(self._cfg.backoff_max_s, self._cfg.backoff_s * 2**attempt)
            if time.monotonic() + pause >= deadline:
                raise RewardServiceError(f"{method} {path}: client.deadline_s={self._cfg.deadline_s} reached; "
                                         f"last failure {failure}", status)
            log.warning("%s %s attempt %d failed (%s); retrying in %.2f s", method, path, attempt + 1, failure, pause)
            time.sleep(pause)
            attempt += 1
