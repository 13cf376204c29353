#!/usr/bin/env bash
# The GPU suite, in two halves (the GPU machine has no Rust toolchain):
#
#   scripts/gpu-suite.sh pack [--with-smollm2 PART | --folders | --lean]
#       here: builds llm and the GPU test binaries (release), strips and
#       compresses them into .gpu/ with a vocabulary-only GGUF for the
#       synthetic models. SmolLM2 (98 MB) is over one transfer's limit
#       (64 MiB with the working tree), so it travels in three parts over
#       three runs on one machine: PART is 1, 2 or 3. Part 1 rides with the
#       binaries, part 2 alone (`scripts/gpu-suite.sh stash` there keeps it),
#       part 3 with the run that tests it; each is sized to the room left.
#   scripts/gpu-suite.sh bundle
#       here: after pack, joins the pack's binaries into one bins.tar.xz
#       (they share the kernels and much code: llm, test-ggml and test-gpu
#       take 16 MB together against 43 MB apart), so that the whole suite
#       and test_matmul travel in one call.
#   scripts/gpu-suite.sh stash
#       there: keeps the SmolLM2 part of the pack for a later run.
#   scripts/gpu-suite.sh unpack
#       there: unpacks .gpu/ into /tmp/llm-gpu and nothing more.
#   scripts/gpu-suite.sh run
#       there: unpacks .gpu/ and runs every GPU test (the backend ops against
#       the CPU, synthetic models of every architecture and weight type,
#       SmolLM2 when both halves have arrived), printing their tables.
#       Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
pack=${GPU_PACK:-.gpu}

# Copies the pack's SmolLM2 part to the machine's models, and joins the
# parts into the model once all have arrived.
keep_smollm2_parts() {
  mkdir -p "$1/models"
  for p in "$pack"/smol.part* "$pack"/smol.size; do
    if [ -f "$p" ]; then cp "$p" "$1/models/"; fi
  done
  local m=$1/models
  if [ -f "$m/smol.size" ] && [ -f "$m/smol.part0" ] && [ -f "$m/smol.part1" ] && [ -f "$m/smol.part2" ] &&
    [ "$(cat "$m"/smol.part0 "$m"/smol.part1 "$m"/smol.part2 | wc -c)" = "$(cat "$m/smol.size")" ]; then
    cat "$m/smol.part0" "$m/smol.part1" "$m/smol.part2" >"$m/SmolLM2-135M-Instruct.Q4_1.gguf"
  fi
}

case "${1:-}" in
bundle)
  tmp=$(mktemp -d)
  for f in "$pack"/llm.xz "$pack"/llm-*.xz "$pack"/test-*.xz; do [ -f "$f" ] && xz -dc "$f" >"$tmp/$(basename "$f" .xz)"; done
  # One stream, one thread: -T2 would cut it into blocks that share nothing.
  (cd "$tmp" && tar -cf - -- *) | xz -T1 -9e >"$pack/bins.tar.xz"
  rm -rf "$tmp" "$pack"/llm.xz "$pack"/llm-*.xz "$pack"/test-*.xz
  du -sh "$pack"/*
  ;;
stash)
  keep_smollm2_parts /tmp/llm-gpu
  ls -l /tmp/llm-gpu/models
  ;;
pack)
  rm -rf "$pack" && mkdir -p "$pack"
  json="$(cargo test --release -p ggml -p llm --lib --test gpu --test hf_folders --no-run --message-format=json 2>/dev/null)"
  cargo build --release --bin llm
  exes="$(printf '%s\n' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("ggml", "gpu", "hf_folders"):
        print(m["target"]["name"], m["executable"])')"
  printf '%s\n' "$exes" | while read -r name exe; do
    strip -o "$pack/test-$name" "$exe"
  done
  strip -o "$pack/llm" target/release/llm
  # A 64 MiB dictionary: llm's stripped 27.9 MB pack into 11.7 MB with it,
  # 20.8 MB with -6's 8 MiB (much of a binary repeats further apart).
  xz -T2 -9 "$pack"/llm "$pack"/test-*
  models="$(scripts/fetch-models.sh)"
  LLM_TEST_MODELS="$models" LLM_WRITE_VOCAB="$PWD/$pack/vocab.gguf" \
    "$(printf '%s\n' "$exes" | awk '$1=="gpu"{print $2}')" --ignored write_vocabulary_only_gguf >/dev/null
  if [ "${2:-}" = "--folders" ]; then
    # Only the folder test, with three of the quantised fixtures
    # (tests/hf_folders.rs says which): scripts/gpu-session.sh c.
    find "$pack" -type f ! -name test-hf_folders.xz -delete
    tar -C ../shared/fixtures -cJf "$pack/fixtures.tar.xz" tiny-llama-gptq-4bit-g64-actorder \
      tiny-llama-gptq-4bit-g64-asym tiny-llama-exl2-4.0bpw
  fi
  if [ "${2:-}" = "--lean" ]; then
    # Everything but SmolLM2, with the folder fixtures: the whole check but
    # the real model in one call (scripts/gpu-session.sh d).
    tar -C ../shared/fixtures -cJf "$pack/fixtures.tar.xz" tiny-llama-gptq-4bit-g64-actorder \
      tiny-llama-gptq-4bit-g64-asym tiny-llama-exl2-4.0bpw
  fi
  if [ "${2:-}" = "--with-smollm2" ]; then
    smol="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
    # What one transfer may carry besides the working tree, less a margin;
    # part 1 also shares it with the pack's binaries and .rivals.
    tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
    room=$(( 64 * 1024 * 1024 - tree - 1024 * 1024 ))
    rm -f "$pack/test-hf_folders.xz"
    own=$(du -cb "$pack"/* | tail -1 | cut -f1)
    first=$(( room - own - 2 * 1024 * 1024 ))
    # Parts 2 and 3 follow part 1 on the same machine, which keeps its
    # binaries and vocabulary: their room goes to SmolLM2.
    [ "${3:-1}" = 1 ] || rm -f "$pack"/*.xz "$pack/vocab.gguf"
    case "${3:-1}" in
    1) head -c "$first" "$smol" >"$pack/smol.part0" ;;
    # (dd, not tail | head: tail's SIGPIPE would fail the pipeline.)
    2) dd if="$smol" of="$pack/smol.part1" bs=1M iflag=skip_bytes,count_bytes skip="$first" count="$room" status=none ;;
    *) tail -c +"$((first + room + 1))" "$smol" >"$pack/smol.part2" ;;
    esac
    stat -c %s "$smol" >"$pack/smol.size"
  fi
  du -sh "$pack"/*
  ;;
unpack | run)
  work=/tmp/llm-gpu
  mkdir -p "$work/models"
  if [ -f "$pack/bins.tar.xz" ]; then tar -C "$work" -xJf "$pack/bins.tar.xz"; fi
  for f in "$pack"/*.xz; do
    case "$f" in */bins.tar.xz) continue ;; esac
    if [ -f "$f" ]; then xz -dc "$f" >"$work/$(basename "$f" .xz)"; fi
  done
  for f in "$work"/llm "$work"/llm-* "$work"/test-*; do [ ! -f "$f" ] || chmod +x "$f"; done
  if [ -f "$pack/vocab.gguf" ]; then cp "$pack/vocab.gguf" "$work/"; fi
  keep_smollm2_parts "$work"
  if [ "$1" = unpack ]; then exit 0; fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader || true
  "$work/llm" --version
  "$work/llm" devices
  export LLM_TEST_MODELS="$work/models" LLM_GPU_VOCAB="$work/vocab.gguf" LLM_BIN="$work/llm"
  # llama.cpp's logits program, where scripts/gpu-bench.sh start has built it.
  rival=${GPU_BENCH_WORK:-/tmp/gpu-bench}/rival_logits
  if [ -x "$rival" ]; then export LLM_RIVAL_LOGITS="$rival"; fi
  status=0
  # The kernels' CPU-emulator tests take minutes there, and test_matmul and test_ops run
  # the same checks on the GPU itself (scripts/gpu-session.sh).
  skip=(--skip _on_the_cpu_emulator)
  "$work/test-ggml" --nocapture --test-threads 1 cuda:: "${skip[@]}" || status=1
  # The fallbacks the backend keeps (float matvec, one-query attention).
  LLM_CUDA_FLOAT_MATVEC=1 LLM_CUDA_SIMPLE_ATTENTION=1 "$work/test-ggml" --test-threads 1 cuda:: "${skip[@]}" >/dev/null ||
    { echo "the fallback kernels fail"; status=1; }
  LLM_CUDA_NO_MATVEC1=1 "$work/test-ggml" --test-threads 1 cuda:: "${skip[@]}" >/dev/null ||
    { echo "the per-segment integer matvec fails"; status=1; }
  # Batches in matmul.cu's 64x64 tiles, and in tile.cu's wide tiles only.
  # With them (one run, to keep the suite's time), the other paths kept
  # behind switches: attention with eight rounds of cells in flight, the
  # split merge as a launch, Q4_K's gate and up with the early stage, rope
  # and attention in two launches, prompt attention in two passes.
  # The lean one-token products (Q4_K, Q4_0, Q8_0, Q6_K, F16) at every size (by
  # default only Q4_K's products that fill the GPU take them, which the
  # tests' small weights do not), their plain loop.
  LLM_CUDA_NO_TILE=1 LLM_CUDA_ATT_VU=8 LLM_CUDA_ATT_MERGE_LAUNCH=1 LLM_CUDA_MV1_EARLY=1 LLM_CUDA_FUSED_ROPE=0 \
    LLM_CUDA_PROMPT_FA=0 LLM_CUDA_MV1_LEAN=1 LLM_CUDA_LEAN_TYPES=q4_k,q4_0,q8_0,q6_k,f16 LLM_CUDA_LEAN_PIPED=0 \
    "$work/test-ggml" --test-threads 1 cuda:: "${skip[@]}" >/dev/null ||
    { echo "matmul.cu's tiled products (or vu8 attention, the merge launch, the early gate and up, rope apart from attention, two-pass prompt attention, the lean products) fail"; status=1; }
  # With 128-token tiles, the lean products' piped loop, started early,
  # glus quantising their outputs, decode attention writing its output
  # quantised for the output projection, F16's register loop.
  LLM_CUDA_F16_DEPTH=0 LLM_CUDA_TILE_TOKENS=128 LLM_CUDA_MV1_LEAN=1 LLM_CUDA_LEAN_TYPES=q4_k,q4_0,q8_0,q6_k,f16 LLM_CUDA_LEAN_PIPED=1 LLM_CUDA_ATT_X16=1 \
    LLM_CUDA_LEAN_EARLY=release,prefetch=row LLM_CUDA_LEAN_FUSE=1 "$work/test-ggml" --test-threads 1 cuda:: "${skip[@]}" >/dev/null ||
    { echo "tile.cu's 128-token tiles (or the lean products' piped loop) fail"; status=1; }
  # Batches of 9 tokens and more through Hopper's warpgroup products
  # (gemm_sm90.cu; opt-in until timed), quantised weights dequantised first.
  LLM_CUDA_WGMMA=1 LLM_CUDA_WGMMA_TOKENS=9 "$work/test-ggml" --test-threads 1 cuda:: "${skip[@]}" >/dev/null ||
    { echo "the wgmma products fail the backend's tests"; status=1; }
  "$work/test-gpu" --nocapture --test-threads 1 "${@:2}" || status=1
  # The X-stationary one-token products (opt-in until timed): the backend's
  # ops, and the synthetic models' greedy tokens, through them.
  LLM_CUDA_MV1_XS=1 "$work/test-ggml" --test-threads 1 cuda:: "${skip[@]}" >/dev/null ||
    { echo "the X-stationary products fail the backend's tests"; status=1; }
  LLM_CUDA_MV1_XS=1 "$work/test-gpu" --test-threads 1 "${@:2}" >/dev/null ||
    { echo "the X-stationary products fail the model tests"; status=1; }
  LLM_CUDA_WGMMA=1 LLM_CUDA_WGMMA_TOKENS=9 LLM_CUDA_MV1_LEAN=1 LLM_CUDA_LEAN_TYPES=q4_k,q4_0,q8_0,q6_k,f16 \
    LLM_CUDA_ATT_X16=1 LLM_CUDA_LEAN_PIPED=1 LLM_CUDA_LEAN_EARLY=release,prefetch=row LLM_CUDA_LEAN_FUSE=1 "$work/test-gpu" --test-threads 1 "${@:2}" >/dev/null ||
    { echo "the wgmma products (or the lean one-token products) fail the model tests"; status=1; }
  exit $status
  ;;
run-folders)
  # The folder fixtures on the GPU (a pack made with --folders).
  work=/tmp/llm-gpu
  mkdir -p "$work/fixtures"
  xz -dc "$pack/test-hf_folders.xz" >"$work/test-hf_folders" && chmod +x "$work/test-hf_folders"
  tar -C "$work/fixtures" -xJf "$pack/fixtures.tar.xz"
  LLM_FIXTURES="$work/fixtures" "$work/test-hf_folders" --nocapture --test-threads 1 on_the_gpu
  ;;
*)
  sed -n 2,16p "$0" >&2
  exit 2
  ;;
esac
