"""Test-suite helpers: ``parametrize_with_checks`` in the style of scikit-learn's.

::

    from ampcheck.testing import parametrize_with_checks
    from mypkg import make_vae, make_invariant_vae

    @parametrize_with_checks(
        [("mlp", make_vae), ("invariant", make_invariant_vae)],
        expected_failed_checks={"mlp": {"shift_invariance": "an MLP encoder sees pixels"}},
    )
    def test_amortization(case, ampcheck_check):
        ampcheck_check.run(case.model, case.check, data=case.data)

Each ``(model, check)`` pair is one test, with the id ``name-check``, marked with its data
kind (``cryoem`` or ``mnist``). A declared expected failure is a *strict* xfail, so that a
check that starts passing is noticed too. Torch-free at import: the checks are imported when
the decorator is made (to validate check names).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from .kinds import DATA_KINDS, data_kind, kind_tags, model_kind, model_name, validate_options

__all__ = ["Case", "model_name", "parametrize_with_checks"]


class _Lazy:
    """A zero-argument callable, called once, on first use."""

    _unset = object()

    def __init__(self, load: Callable[[], Any]):
        self._load, self._value = load, self._unset

    def get(self) -> Any:
        if self._value is self._unset:
            self._value = self._load()
        return self._value


@dataclass(frozen=True, eq=False)
class Case:
    """One test case: a named model and one check (and the data to run it on, if not the
    session's). ``data`` loads lazily when it was given as a callable.

    ``options`` are check options (``ampcheck.checks.OPTIONS``) for this case; ``kind`` is its
    data kind (``cryoem`` or ``mnist``, the marker it carries), None where only the session's
    data decide it (the plugin marks it then).
    """

    name: str
    model: Any
    check: str
    source: Any = None  # a data set, a _Lazy, or None (the session's data set)
    options: Mapping[str, Any] | None = None
    kind: str | None = None

    @property
    def data(self) -> Any:
        return self.source.get() if isinstance(self.source, _Lazy) else self.source

    @property
    def id(self) -> str:
        return f"{self.name}-{self.check}"

    def __repr__(self) -> str:
        return f"Case({self.id})"


def _named(models: Sequence[Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for m in models:
        if isinstance(m, tuple):
            if len(m) != 2 or not isinstance(m[0], str) or not m[0]:
                raise ValueError(f"a named model must be a tuple (name, model), got {m!r}")
            out.append(m)
        else:
            out.append((model_name(m), m))
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two models are named {dup[0]!r}; name them with (name, model) "
                         "tuples")
    return out


def _expected(expected: Mapping[str, Mapping[str, str]] | Callable[[Any], Mapping[str, str]]
              | None, models: list[tuple[str, Any]], known: Iterable[str]
              ) -> dict[str, dict[str, str]]:
    """``{model name: {check: reason}}``, validated."""
    from ampcheck.errors import ConfigError

    if expected is None:
        return {}
    if callable(expected):
        table = {name: dict(expected(model) or {}) for name, model in models}
    elif isinstance(expected, Mapping):
        table = {k: dict(v) for k, v in expected.items()}
        names = {n for n, _ in models}
        for name in table:
            if name not in names:
                raise ConfigError(f"expected_failed_checks names the model {name!r}, which is "
                                  f"not among the models ({', '.join(sorted(names))})")
    else:
        raise ConfigError("expected_failed_checks must be a dict {model name: {check: "
                          f"reason}} or a callable model -> dict, got {type(expected).__name__}")
    known = set(known)
    for name, checks in table.items():
        for check, reason in checks.items():
            if check not in known:
                raise ConfigError(f"expected_failed_checks[{name!r}]: unknown check "
                                  f"{check!r}; expected one of {', '.join(sorted(known))}")
            if not isinstance(reason, str) or not reason:
                raise ConfigError(f"expected_failed_checks[{name!r}][{check!r}]: the reason "
                                  "must be a non-empty string")
    return table


def _kind(kind: str | None, model: Any, data: Any) -> str | None:
    """The data kind of a case: the one given, else the data set's (when given as a data set,
    not as a callable that loads it), else the family of a model ampcheck trains; None: the
    session's data decide (the plugin marks the test when it is collected)."""
    from ampcheck.errors import ConfigError

    if kind is not None:
        if kind not in DATA_KINDS:
            raise ConfigError(f"kind must be one of {', '.join(DATA_KINDS)}, got {kind!r}")
        return kind
    if data is not None and not isinstance(data, _Lazy):
        return data_kind(data)
    return model_kind(model)


def parametrize_with_checks(
        models: Sequence[Any], *, data: Any = None, checks: Iterable[str] | None = None,
        expected_failed_checks: Mapping[str, Mapping[str, str]]
        | Callable[[Any], Mapping[str, str]] | None = None,
        options: Mapping[str, Any] | None = None,
        kind: str | None = None) -> pytest.MarkDecorator:
    """A ``pytest.mark.parametrize`` over ``(model, check)`` cases, as the argument ``case``.

    Args:
        models: models, each anything :func:`ampcheck.checks.check_vae` accepts (a preset,
            a ``TrainConfig``, a factory ``(train_data, seed) -> VAE``, a trained VAE), or a
            ``(name, model)`` tuple; unnamed models get a readable name (:func:`model_name`).
        data: the data set, or a zero-argument callable that returns it (called once, when the
            first case runs); None: the session's (``--ampcheck-data``).
        checks: check names (default: every per-model check that applies to the kind of model;
            a check asked for by name that cannot apply is a skipped case).
        expected_failed_checks: ``{model name: {check: reason}}`` or a callable
            ``model -> {check: reason}``: those cases are strict xfails.
        options: check options for every case (``ampcheck.checks.OPTIONS``, e.g.
            ``{"shift_transforms": ["roll:1", "roll:3"]}``); a test's ``ampcheck_options``
            marker and ``ampcheck_check.run(options=...)`` override them, and they override
            ``[tool.ampcheck] options``.
        kind: the data kind, ``"cryoem"`` or ``"mnist"``: the marker of the generated tests.
            Default: the kind of ``data`` when it is a data set, else the family of a preset
            model, else the session's ``--ampcheck-data`` (give it when ``data`` is a callable
            that loads data of the other kind).

    Returns:
        The decorator; the test receives ``case`` (:class:`Case`: ``.model``, ``.check``,
        ``.data``, ``.name``) and typically calls
        ``ampcheck_check.run(case.model, case.check, data=case.data)``.

    Raises:
        ConfigError: an unknown check name (in ``checks`` or ``expected_failed_checks``),
            model name, check option or kind.
    """
    from ampcheck.checks import CHECKS, resolve_checks

    named = _named(list(models))
    if not named:
        raise ValueError("parametrize_with_checks needs at least one model")
    explicit = checks is not None
    names = resolve_checks(checks)
    xfail = _expected(expected_failed_checks, named, CHECKS)
    source = _Lazy(data) if callable(data) else data
    opts = validate_options(options, "parametrize_with_checks(options=...)")
    params = []
    for name, model in named:
        case_kind = _kind(kind, model, source)
        tags = kind_tags(model) | {"truth"}  # truth: known when the test runs
        for check in names:
            spec = CHECKS[check]
            marks: list[pytest.MarkDecorator] = []
            if not spec.needs <= tags:
                if not explicit:
                    continue
                missing = ", ".join(sorted(spec.needs - tags))
                marks.append(pytest.mark.skip(reason=f"{check} needs a model that is "
                                                     f"{missing}; {name} is not"))
            reason = xfail.get(name, {}).get(check)
            if reason:
                marks.append(pytest.mark.xfail(strict=True, reason=reason,
                                               raises=pytest.fail.Exception))
            if case_kind is not None:
                marks.append(getattr(pytest.mark, case_kind))
            case = Case(name, model, check, source, opts or None, case_kind)
            params.append(pytest.param(case, id=case.id, marks=marks))
    return pytest.mark.parametrize("case", params)
