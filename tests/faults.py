"""Fault injection: run ampcheck in a process that kills itself (SIGKILL) at a chosen instant.

    python tests/faults.py cli ARGS...       # the command line (ampcheck.cli.main)
    python tests/faults.py report OUT TAG    # write_report of a small report tagged TAG

An *instant* is a file-system event of the process: each ``os.fsync`` (a file or a folder
complete, not yet renamed into place), ``os.replace``/``os.rename`` (a file or folder renamed)
and directory swap (:func:`ampcheck.outdir._swap`). With ``AMPCHECK_KILL_AT=K`` the process
sends itself SIGKILL just before its K-th event (so K=1 is "before anything is in place", and
every temporary file written before event K is left as a kill leaves it); with K=0 it runs to
the end. ``AMPCHECK_EVENTS=FILE`` receives the number of events of a run that ran to the end.
``AMPCHECK_NO_SWAP=1`` disables the atomic directory swap (the two-rename fallback).
"""

from __future__ import annotations

import os
import signal
import sys


def _arm() -> list[int]:
    import ampcheck.outdir as outdir

    kill_at, count = int(os.environ.get("AMPCHECK_KILL_AT", "0")), [0]

    def hook(fn):
        def event(*args, **kwargs):
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return event

    os.fsync, os.replace, os.rename = hook(os.fsync), hook(os.replace), hook(os.rename)
    swap = (lambda a, b: False) if os.environ.get("AMPCHECK_NO_SWAP") else outdir._swap
    outdir._swap = hook(swap)
    return count


def small_report(tag: str):
    """Three results with arrays, their dataset field saying ``tag``."""
    import numpy as np

    from ampcheck.results import CheckResult, Metric, Threshold

    rng = np.random.default_rng(sum(map(ord, tag)))  # other arrays for another tag
    return [CheckResult(check=name, model="m", verdict="FAIL",
                        metrics={"score": Metric(0.5, False, 0.4, 0.6)},
                        threshold=Threshold("score", 0.3, False, "why"),
                        explanation=tag, arrays={"mu": rng.normal(size=(30, 2))})
            for name in ("shift_invariance", "rotation_invariance", "vlt_equivalence")]


def main(argv: list[str]) -> int:
    count = _arm()
    try:
        if argv[0] == "cli":
            from ampcheck.cli import main as cli

            return cli(argv[1:])
        from ampcheck.report import write_report

        out, tag = argv[1], argv[2]
        write_report(out, small_report(tag), {"tag": tag}, {})
        return 0
    finally:
        if os.environ.get("AMPCHECK_EVENTS"):
            with open(os.environ["AMPCHECK_EVENTS"], "w") as f:
                f.write(str(count[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
