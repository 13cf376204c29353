#!/usr/bin/env bash
# Side-by-side GPU benchmark of llm and llama.cpp's CUDA build, on the GPU
# machine, on the same Llama-2-7B-shaped random-weight files.
#
#   scripts/gpu-bench.sh start RIVALS   detached (it outlives the call while the
#       machine stays up), from RIVALS/llama.cpp.tar.xz (a copy of ../shared/rivals):
#       1. a CPU-only llama-quantize (a minute), the F16 model by
#          RIVALS/gen_llama_gguf.py, then Q4_K_M, Q4_0 and Q8_0, and a
#          Llama-3.2-1B-shaped Q4_K_M (m-1B-Q4_K_M): $W/MODELS_READY;
#       2. alongside, at low priority, the CUDA build of llama-bench, and
#          scripts/rival/rival_logits.c over its libllama ($W/rival_logits,
#          for tests/gpu.rs): $W/READY.
#   scripts/gpu-bench.sh poll           its progress
#   scripts/gpu-bench.sh wait FILE SECS  waits for $W/FILE
#   scripts/gpu-bench.sh run LLM [REPS] [ENTRIES...]  both programs, one entry after the
#       other (each "QUANT:ARGS", e.g. "Q4_K_M:-ngl 99"), medians of REPS (10)
#       repetitions, then their rows side by side. GPU_BENCH_ENGINES=llm or
#       rival runs only that one (rows of an earlier run are shown too).
set -uo pipefail
W=${GPU_BENCH_WORK:-/tmp/gpu-bench}
B=$W/build
M=$W/models

case "${1:-}" in
start)
  # A later call on the same machine finds the builds under way or done.
  if [ -f "$W/progress.log" ]; then echo "gpu-bench: already started in $W"; exit 0; fi
  rivals=$(cd "$2" && pwd)
  repo=$(cd "$(dirname "$0")/.." && pwd)
  mkdir -p "$W" "$M"
  common="-G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF"
  setsid nohup bash -c "
    set -x
    cd $W && tar xJf $rivals/llama.cpp.tar.xz && mv llama.cpp lcpp
    (PYTHONUNBUFFERED=1 PYTHONPATH=$W/lcpp/gguf-py python3 $rivals/gen_llama_gguf.py $M/m-F16.gguf > $W/gen.log 2>&1; echo gen rc=\$? >> $W/gen.log) &
    gen=\$!
    # The CUDA build (ten minutes) goes alongside, at low priority.
    (nice -n 19 cmake -S lcpp -B $B $common -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON > $W/build.log 2>&1
     nice -n 19 cmake --build $B -j \$(nproc) --target llama-bench >> $W/build.log 2>&1
     echo build rc=\$?
     gcc -O2 $repo/scripts/rival/rival_logits.c -I lcpp/include -I lcpp/ggml/include -L $B/bin -lllama \
       -Wl,-rpath,$B/bin -o $W/rival_logits
     echo rival_logits rc=\$?
     touch $W/READY) &
    cmake -S lcpp -B $W/build-cpu $common -DGGML_NATIVE=ON > $W/build-cpu.log 2>&1
    cmake --build $W/build-cpu -j \$(nproc) --target llama-quantize >> $W/build-cpu.log 2>&1
    echo build-cpu rc=\$?
    wait \$gen
    for q in Q4_K_M Q4_0 Q8_0; do $W/build-cpu/bin/llama-quantize $M/m-F16.gguf $M/m-\$q.gguf \$q \$(nproc) > $W/quantize-\$q.log 2>&1; echo quantize \$q rc=\$?; done
    # Llama-3.2-1B's shape (issue 10: small models are the most overhead-bound).
    PYTHONPATH=$W/lcpp/gguf-py python3 $rivals/gen_llama_gguf.py $M/m-1B-F16.gguf --n-embd 2048 --n-layer 16 \
      --n-head 32 --n-head-kv 8 --n-ff 8192 --n-vocab 128256 > $W/gen-1b.log 2>&1
    $W/build-cpu/bin/llama-quantize $M/m-1B-F16.gguf $M/m-1B-Q4_K_M.gguf Q4_K_M \$(nproc) > $W/quantize-1b.log 2>&1
    echo 1B rc=\$?
    touch $W/MODELS_READY
    wait
  " >"$W/progress.log" 2>&1 < /dev/null &
  echo "gpu-bench: started in $W"
  ;;
poll)
  tail -5 "$W/progress.log" 2>/dev/null; tail -2 "$W/gen.log" 2>/dev/null; tail -1 "$W/build.log" 2>/dev/null
  ls -la "$M" 2>/dev/null
  [ -f "$W/READY" ] && echo READY
  ;;
wait)
  for _ in $(seq "${3:-300}"); do [ -f "$W/$2" ] && exit 0; sleep 1; done
  echo "gpu-bench: no $W/$2 yet"; exit 1
  ;;
run)
  llm=$2; reps=${3:-10}; shift 3 || shift $#
  out=${OUT:-$W}
  engines=${GPU_BENCH_ENGINES:-llm rival}
  for entry in "$@"; do
    q=${entry%%:*}; args=${entry#*:}
    f=$M/m-$q.gguf
    tag="$q-${args// /_}"
    if [[ $engines == *rival* ]]; then
      # shellcheck disable=SC2086
      "$B/bin/llama-bench" -m "$f" $args -fa 1 -r "$reps" -o md > "$out/rival-$tag.md" 2>"$out/rival.err" || tail -3 "$out/rival.err"
    fi
    if [[ $engines == *llm* ]]; then
      # LLM_TIMING: the load and every repetition on stderr as they happen
      # (bench prints its table only at the end).
      # shellcheck disable=SC2086
      LLM_TIMING=1 timeout "${GPU_BENCH_TIMEOUT:-300}" "$llm" bench -m "$f" $args -r "$reps" -o md \
        > "$out/llm-$tag.md" 2>"$out/llm-$tag.err" || tail -3 "$out/llm-$tag.err"
    fi
    echo "== $q $args"
    for e in rival llm; do [ -f "$out/$e-$tag.md" ] && grep -h '|' "$out/$e-$tag.md" | tail -n +3; done
  done
  ;;
*) sed -n 2,17p "$0" >&2; exit 2 ;;
esac
