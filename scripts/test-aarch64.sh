#!/usr/bin/env bash
# The kernel crate's tests on aarch64 (NEON kernels included) under qemu.
# Exit 3 when the cross tools cannot be had here; otherwise the tests' status.
set -uo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$' \
  || rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || exit 3
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu; } >/dev/null 2>&1 || exit 3
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
exec cargo test --release -p ggml --target aarch64-unknown-linux-gnu "$@"
