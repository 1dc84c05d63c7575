"""Work side by side in processes (ampcheck.data.workers): results in order, made by other
processes when asked, and the number of workers checked."""

from __future__ import annotations

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


def test_the_default_is_the_cores_this_process_may_use_and_bad_numbers_are_refused():
    assert resolve_workers(None, "x") == available_cores() == len(os.sched_getaffinity(0))
    assert resolve_workers(3, "x") == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=r"^data from atomic models: workers must be a "
                                              r"positive integer, got "):
            resolve_workers(bad, "data from atomic models")
