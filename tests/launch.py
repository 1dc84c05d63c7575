"""Run ``torchrun`` (``python -m torch.distributed.run``) from a test, with a readable failure.

torchrun's own summary of a failed launch ends its stderr and names only the signal a rank died
of; the rank's message (a Python traceback, gloo's ``terminate called after throwing ...``)
comes before it, among the launcher's warnings. :func:`torchrun` keeps those lines for the
assertion message.

A launch whose failed ranks were all killed by a signal (none exited with an error of its
own), or whose rank's own error is a socket's (a port taken between its choice and its use,
a connection refused or reset), is a failure of the process-group transport (gloo over TCP on
localhost), not an answer of ampcheck's: one such crash (SIGABRT) in a CI run did not recur in
90 launches here, under load or four at once; one rank's exit with status 2 (ampcheck's
one-line error, whose text the summary then did not keep) happened once in a loaded suite and
not in 24 launches three at a time. The launch is then tried once more, and the first failure
is reported as a warning (in pytest's summary) so that it stays visible; a second one, or a
rank that exits with any other error, fails the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

#: Lines of a failed launch worth showing: errors, C++ aborts, torchrun's failure summary.
TELLING = re.compile(r"Error|Exception|terminate called|what\(\)|Traceback|Signal \d+|"
                     r"exitcode|error_file|\[rank\d+\]|^ampcheck: ", re.M)
#: A rank's error that is its socket's: ampcheck's one line (an OSError, status 2), or the
#: last line of a traceback of torch.distributed's network or store errors (status 1).
TRANSPORT = re.compile(r"^ampcheck: error: .*(address already in use|connection (refused|reset)|"
                       r"broken pipe|timed out)|^torch\.distributed\.(DistNetworkError|"
                       r"DistStoreError)\b", re.M | re.I)
#: The exit codes in torchrun's summary of a failed launch (negative: killed by that signal).
EXITCODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)", re.M)


def _explain(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if TELLING.search(ln)]
    return "\n".join(lines[:60]) + "\n--- stderr's end ---\n" + proc.stderr[-1500:]


def torchrun(args: list[str], *, env: dict[str, str] | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run ARGS`` that succeeded (else the assertion fails with
    the ranks' error lines); retried once after a failure of the transport (see above)."""
    env = {**(os.environ if env is None else env), "TORCH_SHOW_CPP_STACKTRACES": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    codes = [int(c) for c in EXITCODE.findall(proc.stderr)]
    crashed = codes and all(c < 0 for c in codes)  # no rank exited by itself
    # one rank exited by itself (the others stopped by the launcher), with a socket's error
    lost = sum(c > 0 for c in codes) == 1 and TRANSPORT.search(proc.stderr)
    if proc.returncode != 0 and (crashed or lost):
        warnings.warn(f"torchrun: a rank {'crashed by a signal' if crashed else 'lost its socket'}"
                      f", tried once more:\n{_explain(proc)}", stacklevel=2)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun {' '.join(args)} failed:\n{_explain(proc)}"
    return proc
