"""Math-Verify in worker processes: correctness, the hard timeout, and replacing workers."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rewards.math_pool import MathVerifierPool
from rewards.math_worker import check_math
from rewards.result import RewardItem
from rewards.router import RewardRouter
from tests.rewards.vectors import BRACE_BOMB


def _wait_until_gone(pid: int) -> None:
    """Until the zygote has reaped `pid` (SIGKILL is asynchronous)."""
    for _ in range(500):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still exists")


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
    assert pool.verify([("\\boxed{7}", "7")]) == [(1.0, "ok", pytest.approx(0.0, abs=1e3))]


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
