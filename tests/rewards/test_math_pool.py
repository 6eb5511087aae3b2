"""Math-Verify in worker processes: correctness, the hard timeout, replacing workers, which processes
get signalled, and several batches in flight."""
from __future__ import annotations

import gc
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from rewards.math_pool import MathVerifierPool
from rewards.math_worker import check_math
from rewards.result import RewardItem
from rewards.router import RewardRouter
from tests.rewards.vectors import BRACE_BOMB

_signal = os.kill  # the real one, for the tests' own signals while os.kill is recorded

# Imported first by every Python process started with this folder on PYTHONPATH (the zygote and its
# workers): records each os.kill with the target's parent at that moment (None: no such process).
KILL_RECORDER = """
import json, os
_kill = os.kill
def _parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None
def _recorded_kill(pid, sig):
    with open(os.environ["MIMOVL_TEST_KILL_LOG"], "a") as log:
        log.write(json.dumps({"by": os.getpid(), "pid": pid, "parent": _parent_of(pid)}) + "\\n")
    return _kill(pid, sig)
os.kill = _recorded_kill
"""


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _state_of(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _wait_until_gone(pid: int) -> None:
    """Until the zygote has reaped `pid` (SIGKILL is asynchronous)."""
    for _ in range(500):
        try:
            _signal(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still exists")


def _wait_until_dead(pid: int) -> None:
    """Until `pid` has exited (gone, or a zombie its new parent has not reaped)."""
    for _ in range(500):
        if _state_of(pid) in (None, "Z"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still runs")


def _numbers(count: int, offset: int = 0) -> list[tuple[str, str]]:
    return [(f"\\boxed{{{n}}}", str(n + offset)) for n in range(count)]


@pytest.fixture(scope="module")
def pool(rewards_cfg):
    pool = MathVerifierPool(rewards_cfg.math)
    pool.start()
    yield pool
    pool.close()


def test_check_math_in_the_main_thread():
    assert check_math("so \\boxed{\\dfrac{3}{6}}", "\\frac{1}{2}", 5, 5) == (1.0, "ok")
    assert check_math("\\boxed{0.3}", "1/3", 5, 5) == (0.0, "ok")
    assert check_math("no answer here", "1", 5, 5) == (0.0, "unparseable")


def test_brace_bomb_times_out_and_its_worker_is_replaced(pool, rewards_cfg):
    before_pids, before_replaced = set(pool.pids), pool.replaced
    jobs = [("\\boxed{1}", "1"), (BRACE_BOMB, "1")] + [(f"\\boxed{{{n}}}", str(n)) for n in range(2, 20)]
    outcomes = pool.verify(jobs)
    assert len(outcomes) == len(jobs)
    assert outcomes[1][:2] == (0.0, "timeout")
    assert outcomes[1][2] == pytest.approx(rewards_cfg.math.item_timeout_s * 1e3)
    assert [o[:2] for o in outcomes[:1] + outcomes[2:]] == [(1.0, "ok")] * (len(jobs) - 1)
    assert pool.replaced == before_replaced + 1
    assert len(pool.pids) == rewards_cfg.math.workers and set(pool.pids) != before_pids
    for pid in before_pids - set(pool.pids):
        _wait_until_gone(pid)  # killed and reaped
    [(reward, reason, latency_ms)] = pool.verify([("\\boxed{7}", "7")])
    assert (reward, reason) == (1.0, "ok")
    assert isinstance(latency_ms, float) and latency_ms >= 0.0  # measured by the worker (timing: bench.rewards)


def test_worker_killed_mid_batch_scores_its_item_error_and_is_replaced(pool):
    before = pool.replaced
    jobs = [(BRACE_BOMB, "1")] + [(f"\\boxed{{{n}}}", str(n)) for n in range(1, 12)]
    batch = pool.submit(jobs)
    os.kill(pool.pids[0], signal.SIGKILL)  # the first worker got the first chunk, which starts with the bomb
    outcomes = batch.collect()
    assert outcomes[0][:2] == (0.0, "error")
    assert [o[:2] for o in outcomes[1:]] == [(1.0, "ok")] * 11
    assert pool.replaced == before + 1


def test_worker_that_died_while_idle_is_replaced_before_the_next_batch(pool):
    before = pool.replaced
    victim = pool.pids[1]
    os.kill(victim, signal.SIGKILL)
    _wait_until_gone(victim)
    outcomes = pool.verify([(f"\\boxed{{{n}}}", str(n)) for n in range(40)])
    assert [o[:2] for o in outcomes] == [(1.0, "ok")] * 40
    assert victim not in pool.pids and pool.replaced >= before + 1


def test_math_runs_while_other_tasks_are_scored_and_from_several_threads(rewards_cfg):
    with RewardRouter.from_config(rewards_cfg) as router:
        batches = [
            [RewardItem(f"{t}-{n}", "math" if n % 2 else "counting", f"\\boxed{{{n + t}}}",
                        {"answer": str(n + t)} if n % 2 else {"count": n + t}) for n in range(30)]
            for t in range(3)
        ]
        results: dict[int, list] = {}
        threads = [threading.Thread(target=lambda t=t: results.__setitem__(t, router.score(batches[t])))
                   for t in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for t in range(3):
            assert [(r.id, r.reward, r.reason) for r in results[t]] == [(i.id, 1.0, "ok") for i in batches[t]]


def test_closed_pool_refuses_work(rewards_cfg):
    pool = MathVerifierPool(rewards_cfg.math)
    pool.start()
    pids = pool.pids
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.verify([("\\boxed{1}", "1")])
    for pid in pids:
        _wait_until_gone(pid)


@pytest.mark.timeout(180, method="thread")  # a deadlock ends the run with stacks, not a hang
def test_no_signal_reaches_a_process_the_signaller_does_not_own(rewards_cfg, tmp_path, monkeypatch):
    """Workers replaced after a timeout, one that died on its own, then close(): the zygote signals only
    its unreaped children, each at most once; this process signals no worker at all."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_RECORDER)
    kill_log = tmp_path / "kills.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("MIMOVL_TEST_KILL_LOG", str(kill_log))
    here: list[tuple[int, int | None]] = []  # (pid, its parent) for each os.kill in this process

    def recorded_kill(pid: int, sig: int) -> None:
        here.append((pid, _parent_of(pid)))
        _signal(pid, sig)

    monkeypatch.setattr(os, "kill", recorded_kill)
    pool = MathVerifierPool(rewards_cfg.math)
    pool.start()
    every_worker = set(pool.pids)
    zygote = _parent_of(pool.pids[0])
    timed_out = []
    for _ in range(2):
        outcomes = pool.verify([(BRACE_BOMB, "1")] + _numbers(10))
        assert outcomes[0][:2] == (0.0, "timeout") and [o[:2] for o in outcomes[1:]] == [(1.0, "ok")] * 10
        timed_out += sorted(every_worker - set(pool.pids))
        every_worker |= set(pool.pids)
        timed_out = sorted(set(timed_out))
    died = pool.pids[0]
    _signal(died, signal.SIGKILL)
    _wait_until_gone(died)  # reaped by the zygote: from now on its pid may be anyone's
    assert [o[:2] for o in pool.verify(_numbers(20))] == [(1.0, "ok")] * 20
    assert died not in pool.pids
    every_worker |= set(pool.pids)
    pool.close()
    for pid in every_worker:
        _wait_until_gone(pid)

    kills = [json.loads(line) for line in kill_log.read_text().splitlines()]
    assert len(timed_out) == 2
    assert all(k["parent"] == k["by"] == zygote for k in kills), kills  # only its own, unreaped children
    signalled = [k["pid"] for k in kills]
    assert len(signalled) == len(set(signalled)), signalled  # never the same pid twice
    assert set(timed_out) <= set(signalled) and died not in signalled
    assert set(signalled) <= every_worker
    assert all(parent == os.getpid() for _, parent in here), here  # at most the zygote, our child
    assert not {pid for pid, _ in here} & every_worker


@pytest.mark.timeout(180, method="thread")  # a deadlock ends the run with stacks, not a hang
def test_two_batches_in_flight_complete_in_either_order_from_different_threads(rewards_cfg):
    first_jobs = [(BRACE_BOMB, "1")] + _numbers(24)
    second_jobs = [(f"\\boxed{{{n}}}", str(n + n % 2)) for n in range(30)]  # odd ones are wrong
    second_expected = [(0.0 if n % 2 else 1.0, "ok") for n in range(30)]
    with RewardRouter.from_config(rewards_cfg) as router:
        pool = router.math_pool
        assert pool is not None
        first, second = pool.submit(first_jobs), pool.submit(second_jobs)
        results: dict[str, list] = {}
        threads = [threading.Thread(target=lambda: results.__setitem__("second", second.collect())),
                   threading.Thread(target=lambda: results.__setitem__("first", first.collect()))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results["first"][0][:2] == (0.0, "timeout")
        assert [o[:2] for o in results["first"][1:]] == [(1.0, "ok")] * 24
        assert [o[:2] for o in results["second"]] == second_expected

        # one thread, collected in the reverse order of submission
        first, second = pool.submit(_numbers(20)), pool.submit(second_jobs)
        assert [o[:2] for o in second.collect()] == second_expected
        assert [o[:2] for o in first.collect()] == [(1.0, "ok")] * 20


@pytest.mark.timeout(180, method="thread")  # a deadlock ends the run with stacks, not a hang
def test_a_batch_never_collected_does_not_block_the_next_one(rewards_cfg):
    pool = MathVerifierPool(rewards_cfg.math)
    try:
        pool.start()
        before = pool.replaced
        held = pool.submit(_numbers(100))  # kept, never collected
        dropped = pool.submit([(BRACE_BOMB, "1")] * 4)  # queued behind `held`, then dropped
        del dropped
        gc.collect()
        assert [o[:2] for o in pool.verify(_numbers(30, offset=1))] == [(0.0, "ok")] * 30
        assert [o[:2] for o in pool.verify(_numbers(5))] == [(1.0, "ok")] * 5
        assert pool.replaced == before  # the dropped batch's bombs were never sent to a worker
        assert held is not None
    finally:
        pool.close()


@pytest.mark.timeout(180, method="thread")  # a deadlock ends the run with stacks, not a hang
def test_a_killed_zygote_takes_its_workers_and_is_restarted(rewards_cfg):
    pool = MathVerifierPool(rewards_cfg.math)
    try:
        pool.start()
        old = pool.pids
        zygote = _parent_of(old[0])
        assert zygote is not None and _parent_of(old[1]) == zygote
        _signal(zygote, signal.SIGKILL)
        for pid in old:
            _wait_until_dead(pid)  # PR_SET_PDEATHSIG
        assert [o[:2] for o in pool.verify(_numbers(12))] == [(1.0, "ok")] * 12
        assert not set(pool.pids) & set(old) and len(pool.pids) == rewards_cfg.math.workers
        assert _parent_of(pool.pids[0]) not in (None, zygote)
    finally:
        pool.close()
