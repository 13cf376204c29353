#!/usr/bin/env bash
# The project's test command: install what a fresh machine lacks
# (scripts/setup.sh), fetch (or reuse) the real test models, then run every
# test of the workspace as optimised code, with the llama.cpp oracle.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-models.sh >/dev/null
. scripts/oracle-env.sh
exec cargo test --release --workspace --features oracle "$@"
