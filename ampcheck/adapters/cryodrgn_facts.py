"""What the report page says of a cryoDRGN run: its facts, read from ``runs["cryodrgn"]``.

:func:`~ampcheck.adapters.cryodrgn.describe_run` writes the run's description into the report
(plus ``epoch_requested`` and ``files``, as ``ampcheck check --cryodrgn`` adds them);
:func:`run_facts` turns it into the page's words: the run's directory, the epoch of its
weights, its architecture and preprocessing from ``config.yaml``, and the particle files
checked beside those the run recorded. Registered for the key ``cryodrgn`` on import, so the
renderer shows it as any run's facts without knowing cryoDRGN.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..display import Code, RunFacts, number_text, register_run_facts

#: The files a run's table lists, in order, and the labels that differ from their keys.
FILES = ("particles", "poses", "ctf", "ind", "heldout_ind", "datadir")
FILE_LABELS = {"heldout_ind": "held-out ind"}


def _obj(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, dict) else {}


def run_facts(run: Mapping[str, Any]) -> RunFacts:
    """The facts of the cryoDRGN run ``run`` (``runs["cryodrgn"]`` of a report); a key a
    hand-edited report lacks reads ``—`` or ``?``."""
    arch, pre = _obj(run.get("architecture")), _obj(run.get("preprocessing"))
    enc, dec = _obj(arch.get("encoder")), _obj(arch.get("decoder"))

    def val(x: Any) -> str:
        return "—" if x is None else number_text(x) if isinstance(x, float) else str(x)

    def yes(key: str, text: str) -> str:
        return {True: text, False: f"no {text}"}.get(pre.get(key), f"{text}: ?")

    epoch = run.get("epoch")
    weights = Path(str(run.get("weights") or "?")).name
    at = (f"epoch {epoch}" if epoch is not None else "epoch unknown") + \
        (" (the last)" if run.get("epoch_requested") is None else "")
    window = f"window r = {val(pre.get('window_r'))}" if pre.get("window") else \
        yes("window", "window")
    facts = (
        ("run directory", (Code(str(run.get("run_dir", "?"))),)),
        ("weights", (Code(weights), f": {at}")),
        ("trained by", (f"cryoDRGN {val(run.get('cryodrgn_version'))}",)),
        ("architecture", (
            f"encoder {val(enc.get('layers'))} × {val(enc.get('width'))} "
            f"({val(enc.get('mode'))}, mask radius {val(enc.get('mask_radius'))}), decoder "
            f"{val(dec.get('layers'))} × {val(dec.get('width'))}, zdim {val(arch.get('zdim'))}, "
            f"positional encoding {val(arch.get('pe_type'))}"
            + ("" if arch.get("pe_dim") is None else f" ({val(arch.get('pe_dim'))})")
            + f", {val(arch.get('domain'))} domain, {val(arch.get('activation'))}, "
              f"D = {val(arch.get('D'))} px",)),
        ("preprocessing", (
            f"{window}, {'inverted' if pre.get('invert_data') else 'uninverted'} contrast, "
            f"norm {_norm_text(pre.get('norm'))}, "
            f"{yes('ctf', 'CTF')}, {yes('translations', 'translations')}, "
            f"{'pose SGD' if pre.get('do_pose_sgd') else 'no pose SGD'}; "
            f"KL weight β = {val(run.get('beta'))}",)),
    )
    checked, trained = _obj(run.get("files")), _obj(run.get("trained_on"))
    files = tuple(
        ((FILE_LABELS.get(k, k),),
         *((Code(str(f[k])),) if f.get(k) is not None else ("—",) for f in (checked, trained)))
        for k in FILES if checked.get(k) is not None or trained.get(k) is not None)
    return RunFacts("cryoDRGN run", facts, ("File", "Checked here", "Recorded in config.yaml"),
                    files, frozenset(checked) | {"path"})


def _norm_text(norm: Any) -> str:
    """cryoDRGN's ``norm`` ``[mean, std]`` of the Hartley images, in words."""
    ok = isinstance(norm, list) and len(norm) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in norm)
    return f"mean {norm[0]:.4g}, std {norm[1]:.4g}" if ok else "—"


register_run_facts("cryodrgn", run_facts)
