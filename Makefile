# Two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test test-fast lint bench ui clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "segloss needs Python >= 3.11 (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

run: $(VENV)/.installed  ## build the default data, train the sweep, evaluate, report
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@echo "Report: $(CURDIR)/reports/report.html"

# pytest-xdist: one worker per core (most tests wait on subprocesses, servers or SLURM);
# loadgroup keeps the SLURM tests, which share one session cluster, on one worker.
test: $(VENV)/.installed-dev  ## lint and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/pytest -n auto --dist loadgroup

# The inner loop: everything but the end-to-end tests marked slow (CI runs `make test`).
test-fast: $(VENV)/.installed-dev  ## the suite without the slow end-to-end tests
	$(BIN)/pytest -n auto --dist loadgroup -m "not slow"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.installed-dev  ## performance benchmarks -> reports/benchmarks.{json,md}
	$(BIN)/python benchmarks/run_all.py

ui: $(VENV)/.installed  ## MLflow UI for mlflow.db on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000 --workers 1

clean:
	rm -rf outputs multirun
