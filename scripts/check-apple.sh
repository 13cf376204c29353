#!/usr/bin/env bash
# The whole workspace type-checked and linted for macOS on Apple silicon
# (aarch64-apple-darwin), where the Metal backend's host code compiles, on a
# Linux machine with no Mac and no Apple linker: Debian's Rust 1.96
# (rustc-web, bookworm-security) with its own library source builds std for
# that target (-Zbuild-std) and clippy checks it. The packages are unpacked
# into ~/.cache/llm/apple-rust, not installed (about 150 MB, fetched once);
# the first run builds std for the target (about 2 minutes on 2 cores).
#
#   scripts/check-apple.sh [clippy args...]   (default: -D warnings)
#
# Exit 3 when the packages cannot be had here; otherwise clippy's status.
set -uo pipefail
cd "$(dirname "$0")/.."
root=${LLM_APPLE_RUST:-$HOME/.cache/llm/apple-rust}
pkgs=(rustc-web cargo-web rust-web-src rust-web-clippy libstd-rust-web-dev libstd-rust-web-1.96
  libllvm22 libgit2-1.5 libhttp-parser2.9 libmbedcrypto7 libmbedtls14 libmbedx509-1)
if [ ! -x "$root/usr/bin/cargo-clippy" ]; then
  debs=$(mktemp -d)
  # apt-get download needs the index that lists bookworm-security's Rust.
  (cd "$debs" && { apt-get download "${pkgs[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get download "${pkgs[@]}" >/dev/null 2>&1; }; }) || {
    echo "check-apple: Debian's rustc-web packages cannot be fetched here" >&2
    rm -rf "$debs"
    exit 3
  }
  mkdir -p "$root"
  for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$root"; done
  rm -rf "$debs"
fi
export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$root/usr/bin:$PATH" RUSTC="$root/usr/bin/rustc"
# A target folder of its own: another compiler's artefacts, another target.
export CARGO_TARGET_DIR="$PWD/target/apple-check"
[ $# -gt 0 ] || set -- -D warnings
RUSTC_BOOTSTRAP=1 "$root/usr/bin/cargo" clippy -Zbuild-std=core,alloc,std,panic_abort \
  --target aarch64-apple-darwin --workspace --all-targets -- "$@"
