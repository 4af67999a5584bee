# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# The CPU build, from a local wheel directory (pip's find-links) when there is one, else from
# PyTorch's CPU index: never a CUDA build by accident (constraints.txt pins the version).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "torch==$(TORCH_VERSION)+cpu" \
		|| $(PIP) install -q --extra-index-url $(TORCH_INDEX) "torch==$(TORCH_VERSION)+cpu"
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/aepo demo

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: install
	$(PY) scripts/bench_entropy_control.py --seeds 0 1 2

clean:
	rm -rf $(VENV) runs outputs  # the warm-start cache stays in ~/.cache/aepo (AEPO_CACHE_DIR)
