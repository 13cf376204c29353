#!/usr/bin/env bash
# Side-by-side GPU benchmark of llm and llama.cpp's CUDA build, on the GPU
# machine, on the same Llama-2-7B-shaped random-weight files.
#
#   scripts/gpu-bench.sh start RIVALS   builds llama-bench/llama-quantize from
#       RIVALS/llama.cpp.tar.xz, with scripts/rival/rival_logits.c over its libllama
#       ($GPU_BENCH_WORK/rival_logits, for tests/gpu.rs), and writes the models (F16 by RIVALS/gen_llama_gguf.py,
#       then Q4_K_M, Q4_0 and Q8_0 by llama-quantize), detached: it outlives the call
#       while the machine stays up. RIVALS is a copy of ../shared/rivals.
#   scripts/gpu-bench.sh poll           its progress
#   scripts/gpu-bench.sh run LLM [REPS] [ENTRIES...]  both programs, one entry after the
#       other (each "QUANT:ARGS", e.g. "Q4_K_M:-ngl 99"), medians of REPS (10)
#       repetitions, then a table of t/s and ratios.
set -uo pipefail
W=${GPU_BENCH_WORK:-/tmp/gpu-bench}
B=$W/build
M=$W/models

case "${1:-}" in
start)
  rivals=$(cd "$2" && pwd)
  repo=$(cd "$(dirname "$0")/.." && pwd)
  mkdir -p "$W" "$M"
  setsid nohup bash -c "
    set -x
    cd $W && tar xJf $rivals/llama.cpp.tar.xz && mv llama.cpp lcpp
    (PYTHONUNBUFFERED=1 PYTHONPATH=$W/lcpp/gguf-py python3 $rivals/gen_llama_gguf.py $M/m-F16.gguf > $W/gen.log 2>&1; echo gen rc=\$? >> $W/gen.log) &
    cmake -S lcpp -B $B -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON \
      -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF > $W/build.log 2>&1
    cmake --build $B -j \$(nproc) --target llama-bench llama-quantize >> $W/build.log 2>&1
    echo build rc=\$?
    gcc -O2 $repo/scripts/rival/rival_logits.c -I lcpp/include -I lcpp/ggml/include -L $B/bin -lllama \
      -Wl,-rpath,$B/bin -o $W/rival_logits
    echo rival_logits rc=\$?
    wait
    for q in Q4_K_M Q4_0 Q8_0; do $B/bin/llama-quantize $M/m-F16.gguf $M/m-\$q.gguf \$q \$(nproc) > $W/quantize-\$q.log 2>&1; echo quantize \$q rc=\$?; done
    touch $W/READY
  " >"$W/progress.log" 2>&1 < /dev/null &
  echo "gpu-bench: started in $W"
  ;;
poll)
  tail -5 "$W/progress.log" 2>/dev/null; tail -2 "$W/gen.log" 2>/dev/null; tail -1 "$W/build.log" 2>/dev/null
  ls -la "$M" 2>/dev/null
  [ -f "$W/READY" ] && echo READY
  ;;
run)
  llm=$2; reps=${3:-10}; shift 3 || shift $#
  out=${OUT:-$W}
  for entry in "$@"; do
    q=${entry%%:*}; args=${entry#*:}
    f=$M/m-$q.gguf
    # shellcheck disable=SC2086
    "$B/bin/llama-bench" -m "$f" $args -fa 1 -r "$reps" -o md > "$out/rival-$q-${args// /_}.md" 2>"$out/rival.err" || tail -3 "$out/rival.err"
    # shellcheck disable=SC2086
    # LLM_TIMING: the load and every repetition on stderr as they happen
    # (bench prints its table only at the end).
    LLM_TIMING=1 timeout "${GPU_BENCH_TIMEOUT:-300}" "$llm" bench -m "$f" $args -r "$reps" -o md \
      > "$out/llm-$q-${args// /_}.md" 2>"$out/llm-$q.err" || tail -3 "$out/llm-$q.err"
    echo "== $q $args"; grep -h '|' "$out/rival-$q-${args// /_}.md" | tail -n +3; grep -h '|' "$out/llm-$q-${args// /_}.md" | tail -n +3
  done
  ;;
*) sed -n 2,14p "$0" >&2; exit 2 ;;
esac
