#!/usr/bin/env bash
# Creates (once) a cached virtualenv with the real SGLang 0.5.23 package and its CPU-usable
# import path (torch CUDA wheel, which runs on CPU), (CPU-only machines need no CUDA driver for it).
# The venv lives outside the repo, keyed by the pinned versions, so CI reinstalls only when they
# change. Prints the venv's python path on stdout. Exit 3 when the registry cannot be reached.
set -euo pipefail

SGLANG_VERSION=0.5.23
TORCH_VERSION=2.14.1
TRANSFORMERS_VERSION=5.19.0
key="sglang-${SGLANG_VERSION}-torch-${TORCH_VERSION}-tf-${TRANSFORMERS_VERSION}-v1"
cache=${HICACHE_VALKEY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hicache-valkey}
venv="$cache/$key"

if [ -f "$venv/.complete" ]; then
  echo "$venv/bin/python"
  exit 0
fi

rm -rf "$venv"
mkdir -p "$cache"
echo "sglang-venv: creating $venv (several GB, a few minutes the first time)" >&2
python3 -m venv "$venv"
py="$venv/bin/python"
pipq() { "$py" -m pip install -q --disable-pip-version-check "$@" >&2; }
if ! pipq -U pip; then
  echo "sglang-venv: cannot reach the package registry" >&2
  exit 3
fi
# Tier 1: the storage interface.
pipq "torch==${TORCH_VERSION}" numpy orjson psutil pybase64 requests packaging pillow starlette \
     msgspec pydantic pyzmq tqdm ipython aiohttp
pipq --no-deps "sglang==${SGLANG_VERSION}"
# Tier 2: the real host KV pools.
pipq "transformers==${TRANSFORMERS_VERSION}" torchvision dill "apache-tvm-ffi==0.1.11" \
     "sentencepiece==0.2.1" "compressed-tensors==0.18.0" gguf
# Test tools and the peer baseline's client.
pipq pytest valkey
touch "$venv/.complete"
echo "$py"
