#!/usr/bin/env bash
# Compiles the CUDA kernels (ggml/src/cuda/kernels/*.cu) into the fatbins that
# the binary embeds, and writes their manifest. The fatbins are committed, so
# `cargo build` needs no CUDA toolkit; run this after changing a kernel.
#
#   scripts/build-kernels.sh          compile every architecture, write manifest
#   scripts/build-kernels.sh NAME...  the same for the named modules only (matmul, tile, ...)
#   scripts/build-kernels.sh --check  fail when the manifest does not match the
#                                     sources; then compile sm_90 and PTX from
#                                     source (to a scratch folder) to prove they build
#
# nvcc comes from PyPI wheels (scripts/fetch-nvcc.sh); no GPU is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
src=ggml/src/cuda/kernels
out=$src/build
manifest=$out/manifest.txt

bin="$(scripts/fetch-nvcc.sh)"
export PATH="$bin:$PATH"
inc="$bin/../include"

# Turing (sm_75) is the oldest GPU that CUDA 13 compiles for; PTX of the newest
# architecture lets the driver compile for GPUs newer than this list.
archs=(75 80 86 89 90 100 120)
ptx=120
# Modules of one architecture's own instructions (Hopper's wgmma: sm_90a),
# which the backend loads on that architecture alone.
arch_only() {
  case "$1" in
  *_sm90) echo 90a ;;
  esac
}
flags=(-O3 -std=c++17 -Xfatbin -compress-all)

sources() { ls $src/*.cu $src/*.cuh 2>/dev/null | sort; }
kernels() { ls $src/*.cu | grep -v '/test_' | sort; }

describe() {
  echo "nvcc: $(nvcc --version | grep -o 'release [0-9.]*, V[0-9.]*')"
  echo "flags: ${flags[*]}"
  echo "archs: ${archs[*]} ptx: compute_$ptx; *_sm90: sm_90a alone"
  for f in $(sources); do sha256sum "$f"; done
}

if [ "${1:-}" = "--check" ]; then
  if ! diff <(describe) "$manifest" >/dev/null 2>&1; then
    echo "build-kernels: $manifest does not match the kernel sources; run scripts/build-kernels.sh and commit" >&2
    diff <(describe) "$manifest" >&2 || true
    exit 1
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  for cu in $(kernels); do
    name="$(basename "$cu" .cu)"
    only="$(arch_only "$name")"
    if [ -n "$only" ]; then
      nvcc -I "$inc" "${flags[@]}" -fatbin -gencode "arch=compute_$only,code=sm_$only" -o "$tmp/$name.fatbin" "$cu"
      continue
    fi
    nvcc -I "$inc" "${flags[@]}" -fatbin -gencode "arch=compute_90,code=sm_90" \
      -gencode "arch=compute_$ptx,code=compute_$ptx" -o "$tmp/$name.fatbin" "$cu"
  done
  echo "build-kernels: manifest matches; sm_90 and PTX compile from source"
  exit 0
fi

mkdir -p "$out"
gencode=()
for a in "${archs[@]}"; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
gencode+=(-gencode "arch=compute_$ptx,code=compute_$ptx")
for cu in $(kernels); do
  name="$(basename "$cu" .cu)"
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
  echo "build-kernels: $name" >&2
  only="$(arch_only "$name")"
  if [ -n "$only" ]; then
    nvcc -I "$inc" "${flags[@]}" -fatbin -gencode "arch=compute_$only,code=sm_$only" -o "$out/$name.fatbin" "$cu"
    continue
  fi
  # --threads: the architectures compile side by side (CI has 2 cores).
  nvcc -I "$inc" "${flags[@]}" --threads 2 -fatbin "${gencode[@]}" -o "$out/$name.fatbin" "$cu"
done
describe >"$manifest"
ls -l "$out" >&2
