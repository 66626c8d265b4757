# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU build from local disk / PyPI; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install demo test kvpress-env
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/sdtp demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# kvpress pins an older transformers: its peer benchmark (`sdtp bench kvpress`) runs in its own venv.
# `sdtp bench kvpress` builds it on demand too; this target only builds it ahead of time.
kvpress-env: $(VENV)/.installed
	$(BIN)/python -c "from sdtp_adapter.bench.peers.kvpress import ensure_env; ensure_env()"
