"""The pytest plugin's session: settings, cache, data, subjects, and running a check.

:class:`AmpcheckSession` is what the plugin keeps per pytest config (stashed under
:data:`SESSION`): the resolved settings, the session's :class:`~ampcheck.checks.TrainingCache`
and data set, a subject per model (so that a user's factory trains once for all the checks of
its model), and the training runs to charge to the test that needed them.
:class:`CheckRunner` is the ``ampcheck_check`` fixture: it runs a check with the test's check
options, compares or writes its baseline, records it (:mod:`ampcheck._plugin_records`) and
fails the test on a wrong verdict or a drift. :class:`EpochRunner` is the ``ampcheck_epochs``
fixture: a profile over epochs at the session's settings, recorded. :func:`load_model_factory`
and :func:`model_cases` make the cases of ``--ampcheck-model``.

Torch-free at import: the checks, the data and the training loop are imported inside the
functions that need them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ._plugin_config import AmpcheckSettings, check_options
from ._plugin_records import add_profile, add_record
from .baselines import baseline_path, compare_baseline, write_baseline
from .kinds import data_kind, is_trained_vae, model_name, preset_name

OPTIONS_MARKER = "ampcheck_options"
SYNTHETIC_WAIT_S = 1800.0  # how long a process waits for another to generate the data set
DATA_CACHE_KEY = "ampcheck_data_cache"  # the controller's data cache, for xdist's workers



# ---------------------------------------------------------------------------- session state
class AmpcheckSession:
    """What the plugin keeps for a session: settings, cache, data, subjects and results.

    ``records`` and ``training`` are what the test reports carried (merged on the process
    that prints the summary: the only one without xdist, the controller with it);
    ``pending_training`` is what this process trained and no report carries yet.
    """

    def __init__(self, config: pytest.Config, settings: AmpcheckSettings):
        self.config, self.settings = config, settings
        self.records: list[dict[str, Any]] = []
        self.training: list[dict[str, Any]] = []
        self.profiles: list[dict[str, Any]] = []  # the profiles over epochs, merged
        self.pending_training: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self._cache = None
        self._data = None
        self._subjects: dict[tuple, Any] = {}
        self._runs_seen: set[int] = set()  # ids of the cache's runs already charged
        self.order: dict[str, int] = {}  # node id -> position in the collection
        self.cases: list[Any] = []  # the --ampcheck-model cases

    @property
    def worker(self) -> str | None:
        """The pytest-xdist worker id (``gw0`` ...), None in the controller or without xdist."""
        return getattr(self.config, "workerinput", {}).get("workerid")

    @property
    def cache(self):
        if self._cache is None:
            from ampcheck.checks import TrainingCache

            self._cache = TrainingCache()
        return self._cache

    @property
    def data(self):
        if self._data is None:
            self._data = load_data(self.settings.data, self.config)
        return self._data

    def subject(self, model: Any, data: Any = None, name: str | None = None):
        """The :class:`~ampcheck.checks.Subject` of ``model`` on ``data`` (default: the
        session's), made once per session so that a user's factory trains once for all the
        checks of its model. A model trained elsewhere is checked with the first seed only."""
        from ampcheck.checks import subject_from

        data = self.data if data is None else data
        name = name or model_name(model)  # the name subject_from would derive
        try:
            hash(model)
            model_key: Any = model
        except TypeError:
            model_key = id(model)
        key = (model_key, id(data), name)
        if key not in self._subjects:
            s = self.settings
            trained = is_trained_vae(model)
            subject = subject_from(model, data, budget=s.budget,
                                   seeds=s.seed_list[:1] if trained else s.seed_list,
                                   device=s.device, name=name, cache=self.cache)
            if subject.config is None and not trained:  # the user's factory trains
                subject.model_fn = self._timed(subject.model_fn, subject)
            self._subjects[key] = (subject, model, data)  # the references keep the ids valid
        return self._subjects[key][0]

    def _timed(self, model_fn: Any, subject: Any):
        """``model_fn`` that notes how long each seed's model took to build (train)."""

        def timed(seed: int):
            start = time.perf_counter()
            built = model_fn(seed)
            self.pending_training.append({
                "label": f"{subject.name}/factory/seed{seed}",
                "data": repr(subject.data), "model": subject.name,
                "variant": "factory", "seed": int(seed),
                "seconds": time.perf_counter() - start, "images": len(subject.train)})
            return built

        return timed

    def note_trained(self, model: str | None = None) -> None:
        """Charge the runs ampcheck's cache trained since the last call to ``model`` (default:
        each run's own preset name); their seconds are the sum of their epochs' wall times."""
        if self._cache is None:
            return
        from ampcheck.results import jsonable

        for run in self._cache.runs:
            if id(run) in self._runs_seen:
                continue
            self._runs_seen.add(id(run))
            cfg = run.config
            # the same preset may train on several data sets (the session's, a case's): one
            # entry each
            self.pending_training.append({
                **jsonable(self._cache.describe(run)), "data": repr(run.data),
                "label": self._cache.label(cfg),
                "model": model or preset_name(cfg.model, cfg.encoder), "variant": cfg.variant,
                "seed": int(cfg.seed), "seconds": float(sum(r.seconds for r in run.history))})

    def run(self, model: Any, check: str, data: Any = None, name: str | None = None,
            options: Mapping[str, Any] | None = None):
        """``(subject, CheckResult, options)`` of ``check`` on ``model`` with the session's
        settings; ``options``: the check options given in the test (case, marker, call), over
        the file's for the model.

        A check that does not apply to the model, or to the data (a ``SKIP`` result, such as
        held-out generalisation on data without ground truth), skips the test with its reason;
        it is never recorded, so no baseline is written or compared for it.
        """
        from ampcheck import checks as C

        (check,) = C.resolve_checks([check])
        subject = self.subject(model, data, name)
        opts = {**self.settings.options_for(subject.name), **(options or {})}
        if opts:  # a view with the options: the same trained models, the same cache
            subject = subject.with_options(opts)
        thresholds = C.resolve_thresholds(self.settings.thresholds_for(subject.name))
        settings = C.settings_for(self.settings.budget, thresholds)
        try:
            (result,) = C.run_checks(subject, [check], settings)
        finally:
            self.note_trained(subject.name)
        if result.verdict == "SKIP":
            pytest.skip(f"{check} does not apply to {subject.name}: {result.explanation}")
        return subject, result, opts


def load_data(spec: str, config: pytest.Config):
    """The data set named by ``--ampcheck-data`` / ``data``: MNIST (or its offline stand-in),
    the ``ci`` synthetic set (generated once into :func:`data_cache_dir`), or a particle
    directory."""
    if spec == "mnist":
        from ampcheck.data.mnist import MnistDataset

        return MnistDataset.load()
    from ampcheck.data.particles import ParticleDataset

    if spec != "synthetic":
        return ParticleDataset.from_dir(spec)
    return ParticleDataset.from_dir(synthetic_data(data_cache_dir(config)))


def synthetic_data(parent: Path) -> Path:
    """The folder of the ``ci`` synthetic data set in ``parent``, generated there unless a
    complete one is there already.

    Processes that share ``parent`` (pytest-xdist's workers, two pytest runs) generate it
    once: the first to need it holds ``parent``'s output lock while it generates, the others
    wait for it and then find it complete. ``generate`` renames the set into place only when
    it is whole, so no process reads a half-written one.
    """
    import hashlib

    from ampcheck.data.synthetic import SynthConfig, generate
    from ampcheck.outdir import OutputDir, repair

    cfg = SynthConfig.preset("ci")
    out = parent / f"synthetic-ci-{hashlib.sha1(repr(cfg).encode()).hexdigest()[:12]}"
    if not (out / "manifest.json").is_file():
        with OutputDir(parent, "pytest (ampcheck's synthetic data set)",
                       what="ampcheck's data cache", wait=SYNTHETIC_WAIT_S):
            if not (out / "manifest.json").is_file():  # not made while this one waited
                repair(out)  # what a killed generate() left beside it
                generate(out, cfg, force=out.exists(), show_progress=False)
    return out


def data_cache_dir(config: pytest.Config) -> Path:
    """Where the plugin keeps its synthetic data set: pytest's cache folder ``ampcheck``, or
    without the cache provider a folder of the run's temporary directory (under pytest-xdist
    the controller's, passed to its workers as :data:`DATA_CACHE_KEY`, so that they share
    it), else a fresh temporary folder."""
    given = getattr(config, "workerinput", {}).get(DATA_CACHE_KEY)
    if given:
        return Path(given)
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        return cache.mkdir("ampcheck")
    factory = getattr(config, "_tmp_path_factory", None)
    return factory.getbasetemp() / "ampcheck" if factory else Path(tempfile.mkdtemp())


def session_kind(settings: AmpcheckSettings) -> str:
    """The data kind of the session's data set: MNIST, or particles (synthetic or a folder)."""
    return "mnist" if settings.data == "mnist" else "cryoem"


# ---------------------------------------------------------------------------- --ampcheck-model
def load_model_factory(spec: str, rootdir: Path) -> tuple[Any, Any]:
    """Import ``module:factory``, call ``factory()`` and return ``(model, data or None)``.

    Raises :class:`pytest.UsageError` naming the factory when it cannot be imported, is not
    callable, fails, or returns something that is not a model.
    """
    import importlib

    import torch

    from ampcheck.checks import validate_vae
    from ampcheck.errors import AmpcheckError
    from ampcheck.train import TrainConfig

    where = f"--ampcheck-model {spec}"
    module_name, _, attr = spec.partition(":")
    added = str(rootdir) not in sys.path
    if added:
        sys.path.insert(0, str(rootdir))
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise pytest.UsageError(f"{where}: cannot import module {module_name!r} "
                                f"({type(e).__name__}: {e})") from None
    finally:
        if added:
            sys.path.remove(str(rootdir))
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise pytest.UsageError(f"{where}: module {module_name!r} has no attribute "
                                    f"{attr!r}; expected a function that returns a model")
        factory = getattr(factory, part)
    if not callable(factory):
        raise pytest.UsageError(f"{where}: {attr} is a {type(factory).__name__}, not a "
                                "function; expected a function that takes no arguments")
    try:
        out = factory()
    except Exception as e:
        raise pytest.UsageError(f"{where}: {attr}() raised {type(e).__name__}: {e}") from e
    model, data = out if isinstance(out, tuple) and len(out) == 2 else (out, None)
    expected = ("expected a model (a preset name, a TrainConfig, a factory (train_data, seed) "
                "-> VAE, or a VAE with encode and recon_loss), or a tuple (model, data)")
    if model is None:
        raise pytest.UsageError(f"{where}: {attr}() returned None; {expected}")
    # a callable that is neither a VAE nor a network (a torch module without encode is a
    # broken VAE, refused below, not a factory)
    factory_like = (callable(model) and not is_trained_vae(model)
                    and not isinstance(model, torch.nn.Module))
    if not isinstance(model, str | TrainConfig) and not factory_like:
        try:
            validate_vae(model, f"the model {attr}() returned")
        except AmpcheckError as e:
            raise pytest.UsageError(f"{where}: {e}") from None
    return model, data


def model_cases(session: AmpcheckSession) -> list[Any]:
    """One :class:`~ampcheck.testing.Case` per check that applies to the factory's model."""
    from ampcheck.checks import CHECKS, DEFAULT_CHECKS
    from ampcheck.errors import AmpcheckError
    from ampcheck.kinds import model_kind
    from ampcheck.testing import Case

    model, data = load_model_factory(session.settings.model, Path(session.config.rootpath))
    try:
        subject = session.subject(model, data)
    except AmpcheckError as e:
        raise pytest.UsageError(f"--ampcheck-model {session.settings.model}: {e}") from None
    kind = data_kind(data) or model_kind(model)
    return [Case(subject.name, model, check, data, None, kind) for check in DEFAULT_CHECKS
            if CHECKS[check].applies_to(subject)]


# ---------------------------------------------------------------------------- per test
SESSION = pytest.StashKey[AmpcheckSession]()


def session_of(config: pytest.Config) -> AmpcheckSession:
    """The session state of ``config`` (made in ``pytest_configure``)."""
    return config.stash[SESSION]


def item_cases(item: pytest.Item) -> list[Any]:
    """The :class:`~ampcheck.testing.Case` parameters of a test (none for other tests)."""
    from ampcheck.testing import Case

    params = getattr(getattr(item, "callspec", None), "params", {})
    return [p for p in params.values() if isinstance(p, Case)]


def _marker_options(node: pytest.Item) -> dict[str, Any]:
    """The ``ampcheck_options`` markers' options, the closest marker winning."""
    out: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers(OPTIONS_MARKER))):
        out.update(mark.kwargs)
    return out


class CheckRunner:
    """The ``ampcheck_check`` fixture: runs checks for one test and records them."""

    def __init__(self, session: AmpcheckSession, node: pytest.Item):
        self._session, self._node = session, node
        self._cases = item_cases(node)

    def run(self, model: Any, check: str | None = None, *, data: Any = None,
            expected: str | Iterable[str] | None = None, name: str | None = None,
            options: Mapping[str, Any] | None = None):
        """Run ``check`` on ``model`` and fail the test unless the verdict is PASS and no
        metric drifted from its baseline (skip it, with the reason, when the check does not
        apply: a ``SKIP`` result).

        Args:
            model: anything :func:`ampcheck.checks.check_vae` accepts, or a
                :class:`~ampcheck.testing.Case` (then ``check``, ``data`` and ``name`` come
                from it).
            check: a check name (``ampcheck.checks.CHECKS``).
            data: the data set (default: the session's, ``ampcheck_data``).
            expected: the verdict(s) that pass the test (default ``"PASS"``), e.g. ``"FAIL"``
                for a negative control.
            name: the model's name in results, thresholds and baselines (default: the name
                of the test's case when ``model`` is its model, else derived from the model).
            options: check options (``ampcheck.checks.OPTIONS``) over those of the test's
                ``ampcheck_options`` marker, its case and ``[tool.ampcheck]``.

        Returns:
            The :class:`~ampcheck.checks.CheckResult`.
        """
        __tracebackhide__ = True
        from ampcheck.errors import AmpcheckError
        from ampcheck.testing import Case

        case = None
        if isinstance(model, Case):
            case = model
            model, check, data, name = model.model, model.check, model.data, model.name
        else:  # the test's own case (parametrize_with_checks) names its model
            case = next((c for c in self._cases if c.model is model and c.check == check),
                        next((c for c in self._cases if c.model is model), None))
            if name is None and case is not None:
                name = case.name
        if check is None:
            raise TypeError("ampcheck_check.run() needs a check name")
        allowed = {"PASS"} if expected is None else (
            {expected} if isinstance(expected, str) else set(expected))
        if not allowed <= {"PASS", "WARN", "FAIL"}:
            raise ValueError(f"expected must be PASS, WARN or FAIL (or several), got {expected!r}")
        given = {**((case.options or {}) if case is not None and case.check == check else {}),
                 **_marker_options(self._node)}
        try:
            given.update(check_options(options or {}, "ampcheck_check.run(options=...)"))
        except pytest.UsageError as e:
            pytest.fail(f"ampcheck: {e}", pytrace=False)
        try:
            subject, result, opts = self._session.run(model, check, data, name, given)
        except AmpcheckError as e:
            pytest.fail(f"ampcheck: {e}", pytrace=False)
        settings = self._session.settings
        path = baseline_path(settings.baseline_dir, subject.name, result.check)
        if settings.regen:
            write_baseline(path, result, settings.tolerance, settings.budget, opts)
            status, notes = "written", [f"baseline written to {path}"]
        else:
            status, notes = compare_baseline(path, result, settings.tolerance, settings.budget,
                                             opts)
        add_record(self._node, result, status, notes, opts, subject.data)
        problems = []
        if result.verdict not in allowed:
            problems.append(f"{result.model}: {result.summary()}\n{result.explanation}")
        if status == "drift":
            problems.append("\n".join(notes))
        if problems:
            pytest.fail("\n".join(problems))
        return result


class EpochRunner:
    """The ``ampcheck_epochs`` fixture: measures profiles over epochs for one test and
    records them."""

    def __init__(self, session: AmpcheckSession, node: pytest.Item):
        self._session, self._node = session, node

    def __call__(self, models: Any, data: Any = None, *, train_indices: Any = None,
                 epochs: Any = None, checks: Iterable[str] | None = None,
                 name: str | None = None):
        """The :class:`~ampcheck.checks.over_epochs.EpochProfile` of ``models``
        (:func:`ampcheck.check_epochs`: ``{epoch: model or checkpoint path}``, a callable
        ``epoch -> model`` with ``epochs``, or a directory of numbered checkpoints) at the
        session's budget, first seed, device and thresholds for ``name``. ``data``: default
        the session's, except for a run directory of ``ampcheck train`` given alone
        (measured on its own data, split, budget and seed). The profile is recorded (the
        test's "ampcheck over epochs" section, junitxml properties, the summary and
        ``--ampcheck-report``); the test asserts what it needs, e.g.
        ``assert profile.no_worse("gap_fraction[heldout]", than_epoch=2)``. A model or file
        that cannot be measured fails the test with one line."""
        __tracebackhide__ = True
        from ampcheck.checks.over_epochs import check_epochs
        from ampcheck.errors import AmpcheckError
        from ampcheck.runs import RUN_JSON

        path = isinstance(models, str | os.PathLike)
        own_run = (path and data is None and train_indices is None
                   and (Path(models) / RUN_JSON).is_file())
        label = name or (Path(models).name if path else
                         getattr(models, "__name__", None) or "model")
        s = self._session.settings
        try:
            profile = check_epochs(
                models, None if own_run else (self._session.data if data is None else data),
                train_indices=train_indices, epochs=epochs, checks=checks,
                budget=None if own_run else s.budget, thresholds=s.thresholds_for(label),
                seed=None if own_run else s.seed_list[0], name=label, device=s.device)
        except AmpcheckError as e:
            pytest.fail(f"ampcheck: {e}", pytrace=False)
        add_profile(self._node, label, profile.to_dict())
        return profile
