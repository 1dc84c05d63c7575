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

# --no-compile: Python compiles a module's bytecode when it is first imported, so only what runs
# is compiled; pip would compile every file of torch & co. up front (the install took 77 s
# that way, 22 s without, on two loaded cores).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e ".[dev]"
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
