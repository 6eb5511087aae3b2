"""The reward service over real HTTP: a uvicorn subprocess on 127.0.0.1 and the client."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rewards.client import RewardClient, RewardServiceError
from rewards.result import RewardItem
from rewards.router import RewardRouter
from storage.net import free_port
from tests.rewards.conftest import TEST_OVERRIDES, rewards_test_config
from tests.rewards.vectors import BAD_TARGETS, BRACE_BOMB, MATH_VECTORS, VECTORS

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-3f9a"
MAX_BODY = 8_000_000
MAX_ITEMS = 300
SERVICE_OVERRIDES = [*TEST_OVERRIDES, f"service.max_body_bytes={MAX_BODY}",
                     f"service.max_items={MAX_ITEMS}", "client.batch_items=256", "client.retries=2",
                     "client.backoff_s=0.01", "client.backoff_max_s=0.02", "client.deadline_s=60"]



@pytest.fixture(scope="module")
def overrides(reward_model_dir):
    return [*SERVICE_OVERRIDES, f"preference.checkpoint={reward_model_dir}"]


@pytest.fixture(scope="module")
def cfg(overrides):
    return rewards_test_config(*overrides[len(TEST_OVERRIDES):])


@pytest.fixture(scope="module")
def server(cfg, overrides, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("service") / "service.log"
    env = {**os.environ, cfg.service.auth_token_env: TOKEN, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "rewards.service", "--host", "127.0.0.1", "--port", str(port)]
    for override in overrides:
        args += ["--set", override]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise AssertionError(f"service exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"service did not become healthy:\n{log_path.read_text()}")
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log_path.read_text()


@pytest.fixture(scope="module")
def client(server, cfg):
    with RewardClient(server, cfg, token=TOKEN) as c:
        yield c


@pytest.fixture(scope="module")
def router(cfg):
    with RewardRouter.from_config(cfg) as r:
        yield r


def post(url: str, body: bytes | str, token: str | None = TOKEN) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(f"{url}/v1/rewards", content=body, headers=headers, timeout=30)


def test_health_needs_no_token(server):
    answer = httpx.get(f"{server}/health").json()
    assert answer["status"] == "ok" and "math" in answer["tasks"] and answer["math_workers"] == 2


def test_every_task_over_http_matches_expected_and_in_process(client, router):
    vectors = VECTORS + MATH_VECTORS
    items = [RewardItem(f"v{i}", task, response, target) for i, (task, response, target, _, _) in enumerate(vectors)]
    over_http = client.score(items)
    in_process = router.score(items)
    assert [(r.id, r.reward, r.reason) for r in over_http] == [(r.id, r.reward, r.reason) for r in in_process]
    for (task, response, _, reward, reason), result in zip(vectors, over_http):
        assert (result.reason, result.reward) == (reason, pytest.approx(reward, abs=1e-12)), (task, response[:40])


def test_preference_over_http_matches_in_process(client, router):
    items = [RewardItem(i, "preference", response, {"prompt": prompt}) for i, (prompt, response) in enumerate(
        [("What colour is the circle?", "Red."), ("Count the squares.", "3"), ("你好", "🐱"), ("q", "")])]
    items.append(RewardItem("no-prompt", "preference", "x", {}))
    over_http, in_process = client.score(items), router.score(items)
    assert [(r.reward, r.reason) for r in over_http] == [(r.reward, r.reason) for r in in_process]
    assert all(0.0 < r.reward < 1.0 and r.reason == "ok" for r in over_http[:-1])
    assert over_http[-1].reason == "error"


def test_bad_items_and_a_brace_bomb_never_fail_the_batch(client):
    items = [RewardItem(i, task, response, target) for i, (task, response, target) in enumerate(BAD_TARGETS)]
    items += [RewardItem("unknown", "no-such-task", "x", {}), RewardItem("not-an-object", "counting", "3", [3]),
              RewardItem("bomb", "math", BRACE_BOMB, {"answer": "1"}),
              RewardItem("after-bomb", "math", "\\boxed{12}", {"answer": 12}),
              RewardItem("good", "grounding", "[0, 0, 10, 10]", {"box": [0, 0, 10, 10]})]
    results = client.score(items)
    assert [r.id for r in results] == [i.id for i in items]
    reasons = {r.id: r.reason for r in results}
    assert [reasons[i] for i in range(len(BAD_TARGETS))] == ["error"] * len(BAD_TARGETS)
    assert reasons["unknown"] == reasons["not-an-object"] == "error"
    assert reasons["bomb"] == "timeout"
    assert (results[-2].reward, results[-1].reward) == (1.0, 1.0)


def test_metrics_count_by_task_and_reason(server, client):
    client.score([RewardItem(1, "counting", "3", {"count": 3}), RewardItem(2, "counting", "?", {"count": 3})])
    text = httpx.get(f"{server}/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    counts = {m[0]: int(m[1]) for m in re.findall(r'^(mimovl_reward_items_total\{[^}]*\}) (\d+)$', text, re.M)}
    assert counts['mimovl_reward_items_total{task="counting",reason="ok"}'] >= 1
    assert counts['mimovl_reward_items_total{task="counting",reason="unparseable"}'] >= 1
    assert counts['mimovl_reward_items_total{task="math",reason="timeout"}'] >= 1
    assert counts['mimovl_reward_items_total{task="unrouted",reason="error"}'] >= 1
    assert re.search(r'^mimovl_reward_item_latency_seconds_bucket\{task="counting",le="\+Inf"\} [1-9]', text, re.M)
    assert re.search(r"^mimovl_reward_request_latency_seconds_count [1-9]", text, re.M)
    assert re.search(r"^mimovl_reward_math_workers_replaced_total [1-9]", text, re.M)
    assert "# TYPE mimovl_reward_item_latency_seconds histogram" in text


def test_token_is_required_when_configured(server):
    body = json.dumps({"items": []})
    assert post(server, body, token=None).status_code == 401
    assert post(server, body, token="wrong").status_code == 401
    assert httpx.get(f"{server}/metrics").status_code == 401
    assert post(server, body).json() == {"results": []}


def test_body_over_the_limit_is_413(server):
    big = json.dumps({"items": [{"id": 1, "task": "ocr", "response": "x" * MAX_BODY, "target": {"answer": "x"}}]})
    answer = post(server, big)
    assert answer.status_code == 413 and "max_body_bytes" in answer.json()["detail"]


def test_too_many_items_is_413(server):
    items = [{"id": i, "task": "counting", "response": "1", "target": {"count": 1}} for i in range(MAX_ITEMS + 1)]
    answer = post(server, json.dumps({"items": items}))
    assert answer.status_code == 413 and "max_items" in answer.json()["detail"]


@pytest.mark.parametrize("body,loc", [
    ("{not json", ["body"]),
    ('["items"]', ["body"]),
    ("{}", ["body", "items"]),
    ('{"items": {"id": 1}}', ["body", "items"]),
    ('{"items": [7]}', ["body", "items", 0]),
    ('{"items": [{"id": 1, "task": "ocr", "response": 5, "target": {}}]}', ["body", "items", 0, "response"]),
    ('{"items": [{"id": 1, "response": "x", "target": {}}]}', ["body", "items", 0, "task"]),
    ('{"items": [{"id": true, "task": "ocr", "response": "x", "target": {}}]}', ["body", "items", 0, "id"]),
    ('{"items": [{"id": 1, "task": "ocr", "response": "x"}]}', ["body", "items", 0, "target"]),
])
def test_malformed_requests_are_422_naming_the_field(server, body, loc):
    answer = post(server, body)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == loc


def test_client_splits_large_batches(client):
    items = [RewardItem(i, "counting", str(i % 7), {"count": i % 7}) for i in range(600)]  # > max_items
    results = client.score(items)
    assert [r.id for r in results] == list(range(600)) and all(r.reward == 1.0 for r in results)


def test_client_refuses_without_retrying_on_4xx(server, cfg):
    with RewardClient(server, cfg, token="wrong") as bad:
        with pytest.raises(RewardServiceError, match="401") as info:
            bad.score([RewardItem(1, "counting", "1", {"count": 1})])
    assert info.value.status_code == 401


def test_client_retries_then_gives_up_on_a_dead_port(cfg):
    with RewardClient(f"http://127.0.0.1:{free_port()}", cfg) as dead:
        with pytest.raises(RewardServiceError, match="after 3 attempts"):
            dead.health()


def _scripted(statuses: list[int], calls: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        status = statuses[min(len(calls), len(statuses)) - 1]
        if status != 200:
            return httpx.Response(status, json={"detail": "busy"})
        items = json.loads(request.content)["items"]
        return httpx.Response(200, json={"results": [
            {"id": i["id"], "reward": 1.0, "reason": "ok", "latency_ms": 0.0} for i in items]})
    return httpx.MockTransport(handler)


def test_client_retries_5xx_with_backoff_then_succeeds(cfg):
    calls: list[httpx.Request] = []
    with RewardClient("http://rewards.test", cfg, token="t", transport=_scripted([503, 502, 200], calls)) as c:
        results = c.score([RewardItem("a", "counting", "1", {"count": 1})])
    assert [r.id for r in results] == ["a"] and len(calls) == 3
    assert calls[0].headers["authorization"] == "Bearer t"


def test_client_gives_up_after_the_configured_retries(cfg):
    calls: list[httpx.Request] = []
    with RewardClient("http://rewards.test", cfg, transport=_scripted([503], calls)) as c:
        with pytest.raises(RewardServiceError, match="503"):
            c.score([RewardItem("a", "counting", "1", {"count": 1})])
    assert len(calls) == cfg.client.retries + 1


def test_client_stops_at_the_deadline():
    cfg = rewards_test_config("client.retries=100", "client.backoff_s=0.05", "client.backoff_max_s=0.05",
                              "client.deadline_s=0.3")
    calls: list[httpx.Request] = []
    with RewardClient("http://rewards.test", cfg, transport=_scripted([503], calls)) as c:
        with pytest.raises(RewardServiceError, match="deadline"):
            c.score([RewardItem("a", "counting", "1", {"count": 1})])
    assert 1 < len(calls) < 100
