"""Work side by side in processes (ampcheck.data.workers): results in order, made by other
processes when asked, and the number of workers checked."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from ampcheck.data.workers import available_cores, ordered_map, resolve_workers
from ampcheck.errors import ConfigError


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_results_come_in_order_from_other_processes_only_when_asked():
    for workers in (1, 2, 3):
        got = list(ordered_map(_square_and_pid, range(7), workers))
        assert [v for v, _ in got] == [x * x for x in range(7)]
        pids = {pid for _, pid in got}
        if workers == 1:  # control: one worker is this process
            assert pids == {os.getpid()}
        else:
            assert os.getpid() not in pids and 1 <= len(pids) <= workers
    assert list(ordered_map(_square_and_pid, [], 2)) == []


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def _in_a_pool_worker(_) -> set[int]:
    return {pid for _, pid in ordered_map(_square_and_pid, range(4), 2)}


def test_a_workers_error_reaches_the_caller_and_a_daemon_works_alone():
    with pytest.raises(ValueError, match="three"):
        list(ordered_map(_fails_on_three, range(6), 2))
    with multiprocessing.get_context("fork").Pool(1) as pool:  # a daemon may have no children
        worker_pid, pids = pool.apply(os.getpid), pool.apply(_in_a_pool_worker, (None,))
    assert pids == {worker_pid}


def test_the_default_is_the_cores_this_process_may_use_and_bad_numbers_are_refused():
    assert resolve_workers(None, "x") == available_cores() == len(os.sched_getaffinity(0))
    assert resolve_workers(3, "x") == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=r"^data from atomic models: workers must be a "
                                              r"positive integer, got "):
            resolve_workers(bad, "data from atomic models")
