# The two quick-start commands (`make run`, `make test`) bootstrap a local virtual environment.
# PYTHON picks the interpreter that creates it; a torch already present in .venv is kept.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint clean
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The main job replaces its own previous report (and remakes the data set: seconds, same bytes).
run: $(VENV)/.installed
	$(BIN)/ampcheck run --force

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check ampcheck tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
