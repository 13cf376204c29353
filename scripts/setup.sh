#!/usr/bin/env bash
# Install what the tests need and a fresh machine may lack: Python with pip and
# jinja2 (expected chat templates), cmake and libclang (the vendored llama.cpp
# oracle is built with cmake and bound with bindgen), and clippy/rustfmt.
# Idempotent and quiet when everything is present; uses apt-get (as root, or
# through sudo) when something is missing.
set -euo pipefail

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v sha256sum >/dev/null || need_apt+=(coreutils)
python3 -c 'import jinja2' >/dev/null 2>&1 || need_apt+=(python3-jinja2)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v clang >/dev/null || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 \
  || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
  || ls /usr/lib/aarch64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
  || need_apt+=(libclang-dev)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt-get)" >&2
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
      sudo=(sudo)
    else
      echo "setup: need root or sudo to install: ${need_apt[*]}" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    echo "setup: no apt-get here; install these yourself: ${need_apt[*]}" >&2
    exit 1
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is required (install Rust with rustup first)" >&2
  exit 1
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' \
    || rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi
