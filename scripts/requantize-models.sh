#!/usr/bin/env bash
# SmolLM2 requantised by llama.cpp's quantiser (through the oracle crate) to
# Q4_0, Q8_0, Q4_K_M, IQ4_XS and Q5_K_M, cached beside the real models; prints the
# files. Needs scripts/fetch-models.sh first. Then, for the CPU speed table:
#   target/release/llm bench -m FILE -t 2 --peer      (a --features oracle build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/oracle-env.sh
cargo test --release --features oracle --test requantize -- --ignored --nocapture --quiet 2>/dev/null |
  grep '\.requant\.gguf$'
