"""A render's CPU budget counts the template's own work, not the garbage collector's."""

from __future__ import annotations

import gc
import time

import pytest

from bot.engine.render_limits import Budget, LimitExceeded, RenderLimits, own_cpu_time

LIMIT = RenderLimits(cpu_seconds=0.02)


def _big_heap() -> list[list[object]]:
    """Enough linked containers that one full collection takes well over the limit."""
    heap: list[list[object]] = []
    for _ in range(400_000):
        node: list[object] = []
        node.append(node)  # a cycle, so the collector has to look at it
        heap.append(node)
    return heap


def test_a_full_collection_during_a_render_is_not_charged_to_it() -> None:
    heap = _big_heap()
    budget = Budget(LIMIT)
    started = time.thread_time()
    gc.collect()
    assert time.thread_time() - started > LIMIT.cpu_seconds  # the collection did cost
    budget.check_time()  # …but not to the render
    del heap


def test_the_templates_own_work_is_still_charged() -> None:
    budget = Budget(LIMIT)
    started = own_cpu_time()
    while own_cpu_time() - started <= LIMIT.cpu_seconds:
        sum(range(1000))
    with pytest.raises(LimitExceeded, match=r"more than 0\.02 s"):
        budget.check_time()
