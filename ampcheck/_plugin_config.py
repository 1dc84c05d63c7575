"""Configuration of the pytest plugin: ``--ampcheck-*`` options and ``[tool.ampcheck]``.

:func:`resolve_settings` merges the command line, the rootdir's ``pyproject.toml`` and the
defaults into one :class:`AmpcheckSettings` (the precedence is documented in
:mod:`ampcheck.plugin`). Every bad value is a :class:`pytest.UsageError` that names the option
or the file key and what was expected. Threshold and check names are validated against the
checks' registries, which are imported only when a name needs checking.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ._argtypes import device as _device
from ._argtypes import threshold as _threshold
from .baselines import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance
from .budgets import BUDGETS
from .errors import ConfigError
from .kinds import validate_options

FILE_KEYS = {"budget", "seed", "seeds", "device", "data", "thresholds", "models",
             "baseline_dir", "tolerance", "options"}
MODEL_KEYS = {"thresholds", "options"}
#: Check options a TOML file cannot give (their values are Python objects).
DEFAULTS = {"budget": "smoke", "seed": 0, "seeds": 1, "device": "auto", "data": "mnist"}


# ---------------------------------------------------------------------------- parsers
def _budget(text: str) -> str:
    if text not in BUDGETS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(BUDGETS)}, got {text!r}")
    return text


def _int_at_least(low: int):
    def parse(value: str | int) -> int:
        try:
            number = None if isinstance(value, bool | float) else int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value!r}")
        return number
    return parse


def _factory_spec(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", text):
        raise argparse.ArgumentTypeError(f"expected module:factory (e.g. mypkg.models:make_vae), "
                                         f"got {text!r}")
    return text


def _data_spec(text: str, base: Path | None = None) -> str:
    if text in ("mnist", "synthetic"):
        return text
    path = Path(text).expanduser()
    path = path if path.is_absolute() or base is None else base / path
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected mnist, synthetic or a directory holding "
                                         f"particles.mrcs; {str(path)!r} is not a directory")
    return str(path.resolve())


def add_options(parser: pytest.Parser) -> None:
    """The ``--ampcheck-*`` options, in one group, each with a validating parser."""
    group = parser.getgroup("ampcheck", "ampcheck: does a VAE's encoder really amortize?")
    group.addoption("--ampcheck-budget", type=_budget, metavar="{smoke,standard,medium,full}",
                    help="training and evaluation budget of the checks (default: smoke)")
    group.addoption("--ampcheck-device", type=_device, metavar="auto|cpu|cuda[:N]",
                    help="device ampcheck trains on (default: auto)")
    group.addoption("--ampcheck-seed", type=_int_at_least(0), metavar="INT",
                    help="first training seed (default: 0)")
    group.addoption("--ampcheck-seeds", type=_int_at_least(1), metavar="N",
                    help="number of training seeds (default: 1)")
    group.addoption("--ampcheck-model", type=_factory_spec, metavar="module:factory",
                    help="parametrize tests that use ampcheck_case over the checks of the "
                         "model factory() returns")
    group.addoption("--ampcheck-data", type=_data_spec, metavar="mnist|synthetic|DIR",
                    help="data set of the checks (default: mnist)")
    group.addoption("--ampcheck-threshold", type=_threshold, action="append", default=[],
                    metavar="NAME=VALUE", help="override a threshold (repeatable)")
    group.addoption("--ampcheck-report", metavar="PATH",
                    help="write every check result of the session to PATH (JSON)")
    group.addoption("--ampcheck-regen", action="store_true",
                    help="(re)write the regression baselines instead of comparing with them")


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class AmpcheckSettings:
    """The session's resolved configuration (see the module docstring for the precedence)."""

    budget: str = "smoke"
    seed: int = 0
    seeds: int = 1
    device: str = "auto"
    data: str = "mnist"
    model: str | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    model_thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    model_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cli_thresholds: Mapping[str, float] = field(default_factory=dict)
    baseline_dir: Path = Path("ampcheck-baselines")
    tolerance: Tolerance = field(default_factory=Tolerance)
    report: Path | None = None
    regen: bool = False
    configured: bool = False  # a [tool.ampcheck] table or an --ampcheck option was given

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.seeds))

    def thresholds_for(self, model: str) -> dict[str, float]:
        """Threshold overrides for ``model``: file-wide < per-model < command line."""
        return {**self.thresholds, **self.model_thresholds.get(model, {}),
                **self.cli_thresholds}

    def options_for(self, model: str) -> dict[str, Any]:
        """Check options for ``model`` from the file: file-wide < per-model."""
        return {**self.options, **self.model_options.get(model, {})}

    @property
    def models(self) -> set[str]:
        """The model names that ``[tool.ampcheck.models."<name>"]`` configures."""
        return set(self.model_thresholds) | set(self.model_options)

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "seeds": list(self.seed_list), "device": self.device,
                "data": self.data, "model": self.model, "thresholds": dict(self.thresholds),
                "model_thresholds": {k: dict(v) for k, v in self.model_thresholds.items()},
                "options": dict(self.options),
                "model_options": {k: dict(v) for k, v in self.model_options.items()},
                "cli_thresholds": dict(self.cli_thresholds),
                "baseline_dir": str(self.baseline_dir), "tolerance": self.tolerance.to_dict(),
                "regen": self.regen}


def _read_table(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise pytest.UsageError(f"{path}: cannot read it as TOML ({e})") from None
    table = doc.get("tool", {}).get("ampcheck", {})
    if not isinstance(table, dict):
        raise pytest.UsageError(f"{path}: [tool.ampcheck] must be a table")
    return table


def _numbers(table: Any, where: str) -> dict[str, float]:
    if not isinstance(table, dict):
        raise pytest.UsageError(f"{where} must be a table of NAME = number")
    out = {}
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise pytest.UsageError(f"{where}: {name} must be a number, got {value!r}")
        out[name] = float(value)
    return out


def _check_names(names: Iterable[str], kind: str, where: str) -> None:
    """A UsageError naming the first unknown threshold or check (imports the checks)."""
    names = list(names)
    if not names:
        return
    from ampcheck.checks import CHECKS, DEFAULT_THRESHOLDS

    known = DEFAULT_THRESHOLDS if kind == "threshold" else CHECKS
    for name in names:
        if name not in known:
            raise pytest.UsageError(f"{where}: unknown {kind} {name!r}; expected one of "
                                    f"{', '.join(sorted(known))}")


def check_options(options: Any, where: str, *, objects: bool = True) -> dict[str, Any]:
    """:func:`ampcheck.kinds.validate_options` (``objects=False``: a source of plain values, a
    TOML file, cannot give a data set), its error as a UsageError."""
    if not isinstance(options, Mapping):
        raise pytest.UsageError(f"{where} must be a table of check options, got {options!r}")
    try:
        return validate_options(options, where, objects=objects)
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None


def _tolerance(table: Any, where: str) -> Tolerance:
    if not isinstance(table, dict):
        raise pytest.UsageError(f"{where} must be a table")
    rtol, atol, per_key = DEFAULT_RTOL, DEFAULT_ATOL, {}
    base = _numbers({k: v for k, v in table.items() if k in ("rtol", "atol")}, where)
    rtol, atol = base.get("rtol", rtol), base.get("atol", atol)
    for key, value in table.items():
        if key in ("rtol", "atol"):
            continue
        if "." not in key:
            raise pytest.UsageError(f"{where}: unknown key {key!r}; expected rtol, atol or "
                                    "\"check.metric\"")
        if isinstance(value, dict):
            extra = set(value) - {"rtol", "atol"}
            if extra:
                raise pytest.UsageError(f"{where}: {key}: unknown key {sorted(extra)[0]!r}; "
                                        "expected rtol and/or atol")
            v = _numbers(value, f"{where}: {key}")
            per_key[key] = (v.get("rtol", rtol), v.get("atol", atol))
        else:
            per_key[key] = (_numbers({key: value}, where)[key], atol)
    _check_names({k.split(".", 1)[0] for k in per_key}, "check", where)
    return Tolerance(rtol, atol, per_key)


def resolve_settings(config: pytest.Config) -> AmpcheckSettings:
    """Merge the command line, ``[tool.ampcheck]`` and the defaults (UsageError on bad input)."""
    root = Path(config.rootpath)
    path = root / "pyproject.toml"
    table = _read_table(path)
    where = f"{path} [tool.ampcheck]"
    unknown = sorted(set(table) - FILE_KEYS)
    if unknown:
        raise pytest.UsageError(f"{where}: unknown key {unknown[0]!r}; expected one of "
                                f"{', '.join(sorted(FILE_KEYS))}")
    parsers = {"budget": _budget, "seed": _int_at_least(0), "seeds": _int_at_least(1),
               "device": _device, "data": lambda v: _data_spec(str(v), root)}
    values: dict[str, Any] = {}
    for key, parse in parsers.items():
        cli = config.getoption(f"--ampcheck-{key}")
        try:
            values[key] = cli if cli is not None else (
                parse(table[key]) if key in table else DEFAULTS[key])
        except argparse.ArgumentTypeError as e:
            raise pytest.UsageError(f"{where}: {key}: {e}") from None
    file_thresholds = _numbers(table.get("thresholds", {}), f"{where} thresholds")
    models = table.get("models", {})
    if not isinstance(models, dict):
        raise pytest.UsageError(f"{where} models must be a table of model names")
    model_thresholds, model_options = {}, {}
    for model, sub in models.items():
        w = f"{where} models.{model!r}"
        if not isinstance(sub, dict) or set(sub) - MODEL_KEYS:
            raise pytest.UsageError(f"{w}: expected a thresholds and/or an options table, got "
                                    f"{sorted(sub) if isinstance(sub, dict) else sub!r}")
        model_thresholds[model] = _numbers(sub.get("thresholds", {}), f"{w} thresholds")
        _check_names(model_thresholds[model], "threshold", f"{w} thresholds")
        if "options" in sub:
            model_options[model] = check_options(sub["options"], f"{w} options",
                                                 objects=False)
    file_options = check_options(table.get("options", {}), f"{where} options", objects=False)
    _check_names(file_thresholds, "threshold", f"{where} thresholds")
    cli_thresholds = dict(config.getoption("--ampcheck-threshold") or [])
    _check_names(cli_thresholds, "threshold", "--ampcheck-threshold")
    baseline_dir = table.get("baseline_dir", "ampcheck-baselines")
    if not isinstance(baseline_dir, str) or not baseline_dir:
        raise pytest.UsageError(f"{where}: baseline_dir must be a path, got {baseline_dir!r}")
    report = config.getoption("--ampcheck-report")
    regen = bool(config.getoption("--ampcheck-regen"))
    model = config.getoption("--ampcheck-model")
    configured = bool(table) or any(config.getoption(f"--ampcheck-{k}") is not None
                                    for k in (*parsers, "model", "report")) or regen \
        or bool(cli_thresholds)
    return AmpcheckSettings(
        **values, model=model, thresholds=file_thresholds, model_thresholds=model_thresholds,
        options=file_options, model_options=model_options,
        cli_thresholds=cli_thresholds, baseline_dir=root / Path(baseline_dir).expanduser(),
        tolerance=_tolerance(table.get("tolerance", {}), f"{where} tolerance"),
        report=Path(report).resolve() if report else None, regen=regen, configured=configured)


