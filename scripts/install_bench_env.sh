#!/usr/bin/env bash
# The environment of `make bench-trl`: the main venv plus TRL, in a venv of its own.
#   scripts/install_bench_env.sh MAIN_VENV BENCH_VENV
#
# TRL stays out of the venv verl trains in: when TRL is importable, verl 0.9.1's FSDP worker
# patches trl's AutoModelForCausalLMWithValueHead (verl/models/transformers/monkey_patch.py:352-356),
# which TRL 1.16 no longer has, so every FSDP worker fails to start. The bench venv adds the
# main venv's site-packages after its own (site.addsitedir in a .pth) and holds only what the
# `bench` extra adds.
set -euo pipefail
main_venv=$1 bench_venv=$2
main_py=$main_venv/bin/python
bench_py=$bench_venv/bin/python
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

"$main_py" -m venv --clear "$bench_venv"
site=$(purelib "$bench_py")
echo "import site; site.addsitedir('$(purelib "$main_py")')" >"$site/aepo-main-venv.pth"

# Keep torch (the CPU build), transformers and everything else exactly as in the main venv.
constraints=$bench_venv/constraints.txt
"$main_py" -m pip freeze --exclude-editable >"$constraints"
cat "${PIP_CONSTRAINT:-/dev/null}" >>"$constraints"
extra=$(cd "$(dirname "$0")/.." && "$main_py" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))')
# shellcheck disable=SC2086  # one requirement per word
PIP_CONSTRAINT=$constraints "$bench_py" -m pip install -q $extra
"$bench_py" -c 'import trl, torch, transformers; print("trl", trl.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
