# The two quick-start commands (`make run`, `make test`) bootstrap a local virtual environment.
# PYTHON picks the interpreter that creates it; a torch already present in .venv is kept.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Test workers: one per core (pytest-xdist), each with one torch thread, so that two workers
# on two cores do not oversubscribe them; TEST_WORKERS=0 runs the suite in one process.
# worksteal: an idle worker takes queued tests from a busy one (the suite ends with long ones).
TEST_WORKERS ?= auto

.PHONY: run test lint clean
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip compiles every module's bytecode at install (most of the install's time): with
# PYTHONDONTWRITEBYTECODE set, as on some CI machines, nothing compiled later is kept, and
# every process of the suite would compile torch & co. again on import.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The main job replaces its own previous report (and remakes the data set: seconds, same bytes).
run: $(VENV)/.installed
	$(BIN)/ampcheck run --force

test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=25

lint: $(VENV)/.installed
	$(BIN)/ruff check ampcheck tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
