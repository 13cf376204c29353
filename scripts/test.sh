#!/usr/bin/env bash
# The project's test command: fetch (or reuse) the real test models, then run
# every test of the workspace as optimised code, with the llama.cpp oracle.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
. scripts/oracle-env.sh
exec cargo test --release --workspace --features oracle "$@"
