# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# The Python of the venv: empty picks one (scripts/pick-python.sh: a CPython >= 3.11 with
# venv and its headers, one whose core is linked into its executable first, e.g. Debian's
# /usr/bin/python3: the daemon ~20 % faster than on pyenv's shared libpython build).
PYTHON ?=
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config/chargingd-demo.toml
# The request path compiled with mypyc in place (setup.py): 1 (default) compiles when a
# C compiler is present and falls back to pure Python if the build fails; 0: pure Python.
CHARGINGD_MYPYC ?= 1
MYPYC_SRC := $(shell sed -n 's/^    "\(chargingd\/.*\.py\)",$$/\1/p' setup.py)
MYPYC_STAMP := build/.mypyc-$(CHARGINGD_MYPYC)
MMSG_SRC := chargingd/radius/_mmsg.c chargingd/ledger/_resp.c chargingd/fraud/_local.c
# Test processes (pytest-xdist): most tests wait on servers, daemons and timers, so two
# halve the suite's time on two cores; TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2

.PHONY: run test lint check bench clean compiled uncompiled

$(STAMP): pyproject.toml
	@py="$(PYTHON)"; [ -n "$$py" ] || py=$$(sh scripts/pick-python.sh); \
	  "$$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "chargingd needs Python >= 3.11")' \
	  && echo "venv: $$py -m venv $(VENV)" && "$$py" -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	@touch $(STAMP)

run: $(STAMP) $(MYPYC_STAMP)
	$(BIN)/chargingd serve --config $(CONFIG)

test: $(STAMP) $(MYPYC_STAMP)
	$(BIN)/pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

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

# An extension whose C did not change is not relinked: marked as built from today's .py
# (tests/conftest.py stops on one older than its .py).
MARK_BUILT := find chargingd -name '*.so' -exec touch {} +
# The compiled build (or its removal), redone when setup.py or a compiled module changes
# (a stale extension would shadow the edited .py file), once more from scratch if it fails.
# Both modes also build radius/_mmsg.c (recvmmsg/sendmmsg), ledger/_resp.c (the
# batcher's RESP packer) and fraud/_local.c (the fraud rules' evaluation) (setup.py;
# optional).
$(MYPYC_STAMP): $(STAMP) setup.py $(MYPYC_SRC) $(MMSG_SRC)
	@rm -f build/.mypyc-*
	@if [ "$(CHARGINGD_MYPYC)" = 0 ]; then \
	  $(MAKE) --no-print-directory -s uncompiled; echo "mypyc: CHARGINGD_MYPYC=0, pure Python"; \
	  if command -v "$${CC:-cc}" >/dev/null 2>&1; then mkdir -p build; \
	    CHARGINGD_MYPYC=0 $(BIN)/python setup.py build_ext --inplace >build/mmsg.log 2>&1 \
	      && $(MARK_BUILT) || echo "radius/_mmsg.c, ledger/_resp.c, fraud/_local.c not built (build/mmsg.log)"; fi; \
	elif ! command -v "$${CC:-cc}" >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory -s uncompiled; echo "mypyc: no C compiler (cc), pure Python"; \
	else \
	  echo "mypyc: compiling the request path (CHARGINGD_MYPYC=0 skips this)"; mkdir -p build; \
	  if CHARGINGD_MYPYC=1 $(BIN)/python setup.py build_ext --inplace --parallel 2 \
	      >build/mypyc.log 2>&1 || { rm -rf build/chargingd build/mypyc-cache build/temp.*; \
	      CHARGINGD_MYPYC=1 $(BIN)/python setup.py build_ext --inplace --parallel 2 \
	      >build/mypyc.log 2>&1; }; then $(MARK_BUILT); \
	    echo "mypyc: compiled $(words $(MYPYC_SRC)) modules"; \
	  else find chargingd -name '*.so' -delete; \
	    echo "mypyc: build failed (build/mypyc.log; python3-dev missing?): pure Python"; fi; \
	fi
	@mkdir -p build && touch $@

# By hand: build the extensions now / remove them (until the next `make test` or `make run`
# with CHARGINGD_MYPYC=1, which builds them again).
compiled: $(STAMP)
	CHARGINGD_MYPYC=1 $(BIN)/python setup.py build_ext --inplace --parallel 2
	$(MARK_BUILT)

uncompiled:
	find chargingd -name '*.so' -delete
	rm -f *__mypyc*.so
	rm -rf build

clean: uncompiled
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
