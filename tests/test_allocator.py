"""keep_freed_memory: the effect it is for (no page faults for reused memory), and where the
``ampcheck`` program applies it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from ampcheck import cli
from ampcheck.allocator import keep_freed_memory

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

# Allocate, touch and free 64 MiB ten times; print the page faults of the last nine.
FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from ampcheck.allocator import keep_freed_memory
    assert keep_freed_memory()
np.ones(2**24, dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    np.ones(2**24, dtype=np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items()  # glibc's own malloc settings would blur "system"
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                          check=True, env=env)
    return int(proc.stdout.split()[-1])


def _takes_a_large_mmap_threshold() -> bool:
    probe = "import ctypes; print(ctypes.CDLL(None).mallopt(-3, 2**30))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True,
                          text=True).stdout.strip() == "1"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_page_faults():
    if not _takes_a_large_mmap_threshold():
        pytest.skip("this glibc caps the mmap threshold at 32 MiB, below the 64 MiB blocks")
    # glibc's default maps each block afresh: at least a fault per 2 MiB huge page (numpy asks
    # for huge pages for large arrays), 4 KiB pages otherwise
    fresh = _faults("system")
    assert fresh >= 9 * 2**26 // 2**21
    assert _faults("keep") < fresh / 10  # kept: the first block's pages serve the other nine


def test_bad_limit_is_refused():
    with pytest.raises(ValueError, match="positive"):
        keep_freed_memory(0)


@pytest.mark.parametrize("owns, env, command, applied", [
    (True, None, "run", True),
    (True, "system", "run", False),
    (False, None, "run", False),  # main() called from Python: the caller's process
    (True, None, "synth", False),  # writes data, trains nothing
])
def test_the_program_keeps_freed_memory_for_the_commands_that_train(
        tmp_path, monkeypatch, owns, env, command, applied):
    calls = []
    monkeypatch.setattr("ampcheck.allocator.keep_freed_memory", lambda: calls.append(1))
    if env is None:
        monkeypatch.delenv("AMPCHECK_MALLOC", raising=False)
    else:
        monkeypatch.setenv("AMPCHECK_MALLOC", env)
    monkeypatch.setattr(cli, "_cmd_run", lambda args: 0)
    monkeypatch.setattr(cli, "_cmd_synth", lambda args: 0)
    cli.main([command, "--out", str(tmp_path / "o")], owns_process=owns)
    assert calls == ([1] if applied else [])


def test_a_bad_malloc_setting_is_an_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("AMPCHECK_MALLOC", "fast")
    assert cli.main(["run", "--out", str(tmp_path / "o")], owns_process=True) == 2
    assert "AMPCHECK_MALLOC='fast'" in capsys.readouterr().err
