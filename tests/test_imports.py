"""Results are data, not the harness: reading a report, a baseline or a threshold, and
loading the pytest plugin, must not import torch or the training loop (drawing a report's
page is the renderer's, a layer above the checks)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

TORCH_FREE = ["ampcheck.results", "ampcheck.thresholds", "ampcheck.report", "ampcheck.display",
              "ampcheck.baselines", "ampcheck.kinds", "ampcheck.files", "ampcheck.outdir",
              "ampcheck.plugin", "ampcheck._plugin_config", "ampcheck.testing",
              "ampcheck.families", "ampcheck.budgets", "ampcheck.runs", "ampcheck.cli",
              "ampcheck.checkpoints", "ampcheck._synth_atoms"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_with_torch_blocked(module):
    # a fresh interpreter in which importing torch (or the training loop) raises
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch.") or name == "ampcheck.train":
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import {module}
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_a_report_reads_back_with_torch_blocked(tmp_path):
    # write a report with the full library, then read it where torch cannot load
    from ampcheck.report import write_report
    from ampcheck.results import CheckResult, Metric, Threshold

    result = CheckResult("shift_invariance", "m", "FAIL", {"displacement": Metric(0.7, False,
                         0.6, 0.8)}, Threshold("displacement", 0.2, False, "why"), "moved",
                         (), (0,), {}, {"mu": [[0.0, 1.0]], "moved[x]": [[1.0, 0.0]]})
    write_report(tmp_path, [result], dataset={"kind": "test"}, runs={})
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from ampcheck.report import load_report
        report, arrays = load_report({str(tmp_path)!r})
        assert report["checks"][0]["verdict"] == "FAIL"
        assert arrays["shift_invariance"]["mu"].shape == (1, 2)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_the_report_document_loads_neither_torch_nor_matplotlib():
    # the document (build, write, read, validate) is data; its pictures are the renderer's
    code = textwrap.dedent("""
        import sys
        import ampcheck.report
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "matplotlib")
                       or m in ("ampcheck.train", "ampcheck.checks", "ampcheck.render"))
        print(heavy or "ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr[-2000:]


def test_every_import_of_the_library_is_declared():
    # ast over the package: every third-party module it imports (at any depth, lazily too)
    # belongs to a distribution named in [project.dependencies], or to an optional extra for
    # the adapter that needs it
    import ast
    import importlib.metadata as md
    import re
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower().replace("_", "-")
                for r in reqs}

    core = names(project["dependencies"])
    extras = {k: names(v) for k, v in project["optional-dependencies"].items()}
    dists = {m: {d.lower().replace("_", "-") for d in ds}
             for m, ds in md.packages_distributions().items()}
    # where an extra is not installed its modules have no metadata here: their distributions
    # by name (the import name where it is the distribution's, else this table)
    uninstalled = {"yaml": "pyyaml", "MDAnalysis": "mdanalysis",
                   "MDAnalysisTests": "mdanalysistests"}
    missing = []
    for path in sorted((root / "ampcheck").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in (m.split(".")[0] for m in mods):
                if mod in sys.stdlib_module_names or mod in ("ampcheck", "__future__"):
                    continue
                allowed = core | (extras["cryodrgn"] if "adapters" in path.parts else set()) | (
                    extras["structures"] if path.name == "structure_files.py" else set())
                if not dists.get(mod, {uninstalled.get(mod, mod)}) & allowed:
                    missing.append(f"{path.relative_to(root)}: {mod}")
    assert not missing, missing


def test_the_package_declares_its_type_hints():
    # PEP 561: type checkers read the public API's annotations only when py.typed ships
    from importlib.resources import files
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    assert (files("ampcheck") / "py.typed").is_file()
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml")
                              .read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["ampcheck"]
