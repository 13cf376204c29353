#!/usr/bin/env bash
# Fetch a CUDA compiler (nvcc) from PyPI wheels into a cache outside git and
# print the directory to put on PATH (its bin/). Needs no GPU and no CUDA
# install: the wheels hold nvcc, its front end, NVVM, the runtime headers and CCCL.
#
#   LLM_NVCC_DIR  cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/llm/nvcc-13.0)
#
# Idempotent. Pinned to CUDA 13.0, the toolkit that matches the driver (580)
# of the GPU machine we develop on; see README.md ("GPU support").
set -euo pipefail

dir="${LLM_NVCC_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llm/nvcc-13.0}"
PIP="${PIP:-python3 -m pip}"
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)

if [ ! -x "$dir/nvidia/cu13/bin/nvcc" ]; then
  mkdir -p "$dir/.wheels"
  echo "fetch-nvcc: downloading CUDA 13.0 compiler wheels (about 270 MB unpacked)" >&2
  $PIP download --quiet --no-deps --disable-pip-version-check --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$dir/.wheels" "${wheels[@]}" >&2
  for w in "$dir"/.wheels/*.whl; do
    python3 -m zipfile -e "$w" "$dir" >&2
  done
  chmod +x "$dir"/nvidia/cu13/bin/* "$dir"/nvidia/cu13/nvvm/bin/* 2>/dev/null || true
  rm -rf "$dir/.wheels"
fi
"$dir/nvidia/cu13/bin/nvcc" --version >/dev/null
echo "$dir/nvidia/cu13/bin"
