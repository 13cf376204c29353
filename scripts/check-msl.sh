#!/usr/bin/env bash
# The Metal kernels (ggml/src/metal/kernels/*.metal) type-checked on a
# machine without Apple's compiler: clang compiles each as C++ for OpenCL
# (-cl-std=clc++2021) against ggml/src/metal/check/metal_stdlib, a header of
# declarations standing in for Metal's, after a pre-pass that turns Metal's
# attributes into nothing (function constants into initialised constants).
# Typos, types, arity and address spaces are checked; Apple's own compiler,
# its limits and the kernels' behaviour are not (the README says what is).
#
#   scripts/check-msl.sh [FILE.metal...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=ggml/src/metal
clang=${CLANG:-clang}
command -v "$clang" >/dev/null || { echo "check-msl: no clang here (apt-get install clang)" >&2; exit 3; }
[ $# -gt 0 ] || set -- "$dir"/kernels/*.metal
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$dir"/kernels/*.h "$tmp"/
fail=0
for f in "$@"; do
  out="$tmp/$(basename "$f")"
  # #line keeps clang's messages on the original file's lines.
  { echo "#line 1 \"$f\""
    sed -E -e 's/^constant ([A-Za-z_][A-Za-z0-9_]*) ([A-Za-z_][A-Za-z0-9_]*) \[\[function_constant\([0-9]+\)\]\];/constant \1 \2 = \1();/' \
      -e 's/\[\[[^]]*\]\]//g' "$f"; } >"$out"
  if ! "$clang" -x clcpp -cl-std=clc++2021 -target spir64 -fsyntax-only -Werror -Wno-unused-function \
    -I "$dir/check" -I "$tmp" "$out"; then
    fail=1
  fi
done
# Each header alone too (its static_asserts hold the block sizes).
for h in "$dir"/kernels/*.h; do
  printf '#include <metal_stdlib>\nusing namespace metal;\n#include "%s"\n' "$(basename "$h")" >"$tmp/h.metal"
  "$clang" -x clcpp -cl-std=clc++2021 -target spir64 -fsyntax-only -Werror -I "$dir/check" -I "$tmp" "$tmp/h.metal" || fail=1
done
# And all of them as the one unit the library compiles (ggml/src/metal/mod.rs,
# library_source: headers once, then the kernel files), where names must not
# collide across files.
{ echo '#include <metal_stdlib>'; echo 'using namespace metal;'
  for f in "$dir"/kernels/*.h "$dir"/kernels/*.metal; do grep -vE '^#include "|^#pragma once' "$f"; done; } |
  sed -E -e 's/^constant ([A-Za-z_][A-Za-z0-9_]*) ([A-Za-z_][A-Za-z0-9_]*) \[\[function_constant\([0-9]+\)\]\];/constant \1 \2 = \1();/' \
    -e 's/\[\[[^]]*\]\]//g' >"$tmp/library.metal"
"$clang" -x clcpp -cl-std=clc++2021 -target spir64 -fsyntax-only -Werror -Wno-unused-function -I "$dir/check" \
  "$tmp/library.metal" || { echo "check-msl: the kernels do not compile as one library" >&2; fail=1; }
[ "$fail" = 0 ] && echo "check-msl: $# Metal files and their headers type-check"
exit "$fail"
