"""The README's "For plugin users" reference says what the code does (issue 14, item 7).

Each fact is read from its one source (the option parsers, the file keys, the check registry
and options, the kinds' tags, the report schema, the offline digits) and looked up in the
section, so that a new option, key, check or metric name cannot go undocumented.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section() -> str:
    start = README.index("\n## For plugin users\n")
    end = README.index("\n## ", start + 1)
    return README[start:end]


SECTION = _section()


def _rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row of ``text``."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ") and "---" not in line]


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_every_option_and_file_key_is_documented():
    from ampcheck._plugin_config import FILE_KEYS, MODEL_KEYS

    source = (ROOT / "ampcheck" / "_plugin_config.py").read_text()
    options = set(re.findall(r'addoption\("(--ampcheck-[a-z-]+)"', source))
    assert len(options) >= 9
    first_cells = {c for row in _rows(SECTION) for c in _ticked(row[0])}
    assert options <= first_cells, options - first_cells
    keys = {k for row in _rows(SECTION) for c in _ticked(row[0])
            for k in re.findall(r"^(?:models\.\"<name>\"\.)?([a-z_]+)$", c)}
    assert FILE_KEYS - {"models"} <= keys, FILE_KEYS - keys
    assert MODEL_KEYS <= {c.split(".")[-1] for row in _rows(SECTION) for c in _ticked(row[0])
                          if c.startswith('models."<name>".')}


def test_every_fixture_is_documented():
    source = (ROOT / "ampcheck" / "plugin.py").read_text()
    fixtures = set(re.findall(r"^@pytest\.fixture[^\n]*\ndef (\w+)\(", source, flags=re.M))
    assert {"ampcheck_check", "ampcheck_epochs"} <= fixtures
    table = SECTION.split("**Fixtures.**")[1].split("**Command-line options.**")[0]
    first_cells = {c for row in _rows(table) for c in _ticked(row[0])}
    assert fixtures <= first_cells, fixtures - first_cells


def test_every_marker_and_check_option_is_documented():
    from ampcheck.checks import OPTIONS
    from ampcheck.plugin import MARKERS

    first_cells = {c for row in _rows(SECTION) for c in _ticked(row[0])}
    assert {m.split("(")[0] for m in MARKERS} <= {c.split("(")[0] for c in first_cells}
    assert set(OPTIONS) <= first_cells, set(OPTIONS) - first_cells


def test_each_checks_governing_metric_is_documented():
    from ampcheck.checks import CHECKS, DEFAULT_THRESHOLDS

    governs = {name: row[1] for row in _rows(SECTION) for name in _ticked(row[0])
               if name in CHECKS and len(row) == 3 and "governs" not in row[1]}
    assert set(governs) == set(CHECKS), set(CHECKS) - set(governs)
    for check, cell in governs.items():
        assert _ticked(cell)[0] == DEFAULT_THRESHOLDS[check].metric, check


@pytest.mark.parametrize("row_word, model", [
    ("preset", "mnist"),
    ("factory", lambda train_data, seed: None),
    ("trained VAE", type("VAE", (), {"encode": lambda self, x: x,
                                     "recon_loss": lambda self, x, z: x})()),
])
def test_which_checks_apply_to_which_kind_of_model(row_word, model):
    from ampcheck.checks import CHECKS, DEFAULT_CHECKS
    from ampcheck.kinds import kind_tags

    tags = kind_tags(model) | {"truth"}  # the data decide truth
    applies = [c for c in DEFAULT_CHECKS if CHECKS[c].needs <= tags]
    (row,) = [r for r in _rows(SECTION) if row_word in r[0] and len(r) == 3
              and r[1].startswith("encoder")]
    assert set(row[1].split(", ")) == tags - {"truth"}
    assert _ticked(row[2]) == applies
    assert f"({len(applies)} of {len(DEFAULT_CHECKS)})" in row[2]


def test_the_report_schema_is_the_one_written():
    from ampcheck.checks import CheckResult, Metric, Threshold
    from ampcheck.plugin import REPORT_CHECK_FIELDS
    from ampcheck.report import REPORT_KEYS

    (block,) = re.findall(r"^```json\n(.*?)^```", SECTION, flags=re.S | re.M)
    doc = json.loads(block)
    assert set(doc) == set(REPORT_KEYS)
    result = CheckResult("shift_invariance", "m", "PASS", {"displacement": Metric(0.1, False)},
                         Threshold("displacement", 0.2, False), "x")
    assert set(doc["checks"][0]) == set(result.to_dict()) | set(REPORT_CHECK_FIELDS)


def test_the_offline_digits_count_is_the_one_documented(monkeypatch):
    from ampcheck.data.mnist import MnistDataset

    monkeypatch.delenv("AMPCHECK_MNIST", raising=False)
    assert f"offline, {len(MnistDataset.load()):,}" in SECTION.replace("\n", " ")
