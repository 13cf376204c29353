#!/usr/bin/env bash
# The whole GPU check in three calls of the device tool, made back to back
# (the machine goes back 30 s after a call), every output under $OUT:
#
#   here:  GPU_PACK=.gpu-a scripts/gpu-suite.sh pack --with-smollm2 1
#          GPU_PACK=.gpu-s scripts/gpu-suite.sh pack --with-smollm2 2
#          GPU_PACK=.gpu-b scripts/gpu-suite.sh pack --with-smollm2 3
#          mkdir -p .rivals && cp ../shared/rivals/{llama.cpp.tar.xz,gen_llama_gguf.py} .rivals/
#   call A (carry .gpu-a .rivals): scripts/gpu-session.sh a
#       starts llama.cpp's builds and the 7B models in the background; the
#       kernels' own test (test_matmul.cu, with its timings), the GPU suite
#       (SmolLM2's first part stays on the machine), then llm's benchmarks
#   call S (carry .gpu-s): GPU_PACK=.gpu-s scripts/gpu-suite.sh stash
#       SmolLM2's second part
#   call B (carry .gpu-b): scripts/gpu-session.sh b
#       SmolLM2 (its last part), llama.cpp's CUDA logits against ours, then
#       llama.cpp's benchmarks beside llm's
#   call C (carry .gpu-c, made by GPU_PACK=.gpu-c scripts/gpu-suite.sh pack
#       --folders): scripts/gpu-session.sh c
#       the folder fixtures on the GPU, then 7B GPTQ folders' benchmarks
#
# Or, where the rival's figures of an earlier session stand (no change to the
# GGUF decode path), one call: GPU_PACK=.gpu-d scripts/gpu-suite.sh pack
# --lean, then (carry .gpu-d) scripts/gpu-session.sh d: the kernels' test,
# the GPU suite but SmolLM2, the folder fixtures, and 7B folders' benchmarks
# beside our one-type Q4_K and Q4_0 files written there.
#
# After a change to the one-token products (carry .gpu-a and .gpu-t, the
# latter's test_matmul.xz built here): scripts/gpu-session.sh l, their
# kernel checks, the suite, decode A/B of LLM_CUDA_MV1_LEAN.
#
# GPU_SESSION_AB="VAR=VALUE ..." scripts/gpu-session.sh x, after a call that
# unpacked a pack: llm bench under each setting beside the default, on our
# writer's one-type files, alternated ($OUT/bench-ab.log). A setting of
# several variables joins them with '+' (A=1+B=2).
#
# The lean products' switches (session 30: Q4_0, Q8_0 and F16 lean
# kernels, the piped loop, early starts; carry .gpu-a and .gpu-t):
#   call N1 (carry .gpu-a .gpu-t .rivals): scripts/gpu-session.sh n1
#       llama.cpp's builds in the background; test_matmul --xs (every lean
#       kernel against the double reference); the suite, whose ride-alongs
#       run the new paths
#   call N2 (same machine): scripts/gpu-session.sh n2
#       decode A/B of the switches on our writer's 7B Q4_K, Q4_0, Q8_0 and
#       1B Q4_K files (n2f: F16's, a call of its own)
#   call N4 (same machine, after N1): scripts/gpu-session.sh n4
#       Q6_K's lean products A/B: our 7B Q6_K, the rival's 7B and 1B Q4_K_M
#   call N8 (carry .gpu-a .rivals; device time short): n1, then llm alone
#       on the rival's files (default, and GPU_SESSION_AB's settings)
#   call N7 (same machine, after N1): decode A/B of the lean groups'
#       split and lean Q6_K on the rival's files, then n3 under the winner
#   call N6 (same machine): n3, then a decode step of the rival's 7B and 1B
#       Q4_K_M kernel by kernel (gpu-profile.sh, warm L2)
#   call N3 (same machine): GPU_SESSION_ENV="..." scripts/gpu-session.sh n3
#       llm (under the settings chosen) and llama.cpp side by side, 10
#       repetitions (GPU_SESSION_ONLY to trim the entries)
#
# Where machines are scarce (two calls of one sitting hold the essentials):
#   call P (carry .gpu-a .rivals): scripts/gpu-session.sh p
#       llama.cpp's builds in the background; test_matmul and test_ops on the
#       GPU; the suite (cut at GPU_SESSION_SUITE_S, 220 s); a decode step's
#       kernels (scripts/gpu-profile.sh Q4_K, warm L2); decode A/B of
#       GPU_SESSION_AB (one round).
#   call Q (same machine, nothing to carry): scripts/gpu-session.sh q
#       an F16 prompt batch's kernels, llm and llama.cpp side by side at 10
#       repetitions (no SmolLM2, no partial offload), then the depth-4096 A/B
#       and the prompt A/B (one-pass attention at 512 and 2048 tokens).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
W=${GPU_BENCH_WORK:-/tmp/gpu-bench}
results=$W/results
ENTRIES=("Q4_K_M:-ngl 99 -p 512 -n 128" "Q4_0:-ngl 99 -p 512 -n 128" "Q8_0:-ngl 99 -p 512 -n 128"
  "F16:-ngl 99 -p 512 -n 128" "Q4_K_M:-ngl 99 -p 0 -n 128 -d 4096" "Q4_K_M:-ngl 16 -p 512 -n 128"
  "1B-Q4_K_M:-ngl 99 -p 512 -n 128")
# GPU_SESSION_ONLY=REGEX keeps the entries it matches (device time is scarce).
if [ -n "${GPU_SESSION_ONLY:-}" ]; then
  kept=()
  for e in "${ENTRIES[@]}"; do [[ $e =~ $GPU_SESSION_ONLY ]] && kept+=("$e"); done
  ENTRIES=("${kept[@]}")
fi
# Partial offload leans on the CPU: llm's run of it waits, like llama.cpp's,
# until the rival's build (all cores) is over, in call B.
HYBRID=()
kept=()
for e in "${ENTRIES[@]}"; do
  if [[ $e == *"-ngl 16"* ]]; then HYBRID+=("$e"); else kept+=("$e"); fi
done
ENTRIES=("${kept[@]}")
# GPU_SESSION_TG_ONLY=1: decode alone (-p 0), where device time is short.
if [ -n "${GPU_SESSION_TG_ONLY:-}" ]; then ENTRIES=("${ENTRIES[@]/-p 512/-p 0}"); fi
# GPU_SESSION_AB="VAR=VALUE ..." also times llm's decode under each setting.
DECODE=("Q4_K_M:-ngl 99 -p 0 -n 128" "Q4_0:-ngl 99 -p 0 -n 128" "Q8_0:-ngl 99 -p 0 -n 128"
  "F16:-ngl 99 -p 0 -n 128" "1B-Q4_K_M:-ngl 99 -p 0 -n 128")

# Session 33's calls: the rival's F16 file, written by its generator alone
# (a quiet machine for the A/B), and alternated pairs (two rounds) of llm
# bench on file $m, a test, its arguments and settings ("A=1+B=2") beside
# the defaults.
gen_f16() {
  mkdir -p /tmp/gen "$W/models" && tar -C /tmp/gen -xJf .rivals/llama.cpp.tar.xz llama.cpp/gguf-py &&
    PYTHONPATH=/tmp/gen/llama.cpp/gguf-py python3 .rivals/gen_llama_gguf.py "$1" >/tmp/gen/gen.log 2>&1
}
ab() {  # test args settings... (rows labelled AB_LABEL, F16 unless set)
  local test=$1 args=$2 settings cmd; shift 2
  settings=("$@")
  for _ in 1 2; do
    for s in default "${settings[@]}"; do
      cmd=(env)
      # shellcheck disable=SC2207
      [ "$s" = default ] || cmd+=($(tr '+' ' ' <<<"$s"))
      # shellcheck disable=SC2086
      "${cmd[@]}" timeout 90 /tmp/llm-gpu/llm bench -m $m -ngl 99 $args -r 5 2>&1 | grep -E "^\| [0-9a-z]" |
        grep "$test" | sed "s/^/${AB_LABEL:-F16} $s /"
    done
  done
}
# The backend's checks on the GPU (test-ggml cuda::, less the emulator's).
ggml_checks() {
  LLM_GPU_VOCAB=/tmp/llm-gpu/vocab.gguf timeout 120 /tmp/llm-gpu/test-ggml --test-threads 1 cuda:: \
    --skip _on_the_cpu_emulator 2>&1 | grep -E "test result|FAIL|panicked" | tail -5
  el "checks"
}
# The rival's F16 file, written where $m then names it.
f16_model() {
  m=$W/models/m-F16.gguf
  gen_f16 $m
  el "gen rc=$?"
}
# Our writer's file of type $1 and shape $2 (7b, 1b), where $m then names it.
our_model() {
  m=/tmp/llm-gpu/models/$2-$1.gguf
  [ -f $m ] || LLM_GPU_VOCAB=/tmp/llm-gpu/vocab.gguf LLM_WRITE_MODEL=$m LLM_WRITE_TYPE=$1 LLM_WRITE_SHAPE=$2 \
    /tmp/llm-gpu/test-gpu --ignored write_a_bench_model >/dev/null 2>&1
}
# The md5 of 48 greedy ids of file $m, labelled $1, under settings $2...
ids() {
  local l=$1; shift
  env "$@" timeout 60 /tmp/llm-gpu/llm run $m --n-gpu-layers all -p "The chain" -n 48 --ignore-eos --temp 0 \
    --print-ids 2>/dev/null | md5sum | sed "s/^/$l ids /"
}
# llm-old (an earlier pack's llm, where a case carries one) and llm
# alternated on file $m: two rounds of tg128 (-r 5), labelled $1.
old_new() {
  local b
  for _ in 1 2; do
    for b in llm-old llm; do
      timeout 60 /tmp/llm-gpu/$b bench -m $m -ngl 99 -p 0 -n 128 -r 5 2>&1 | grep -E "^\| [0-9a-z]" |
        grep tg128 | sed "s/^/$1 $b /"
    done
  done
}
# Both binaries' greedy ids (48) of file $m, labelled $1.
old_new_ids() {
  local b
  for b in llm-old llm; do
    timeout 60 /tmp/llm-gpu/$b run $m --n-gpu-layers all -p "The chain" -n 48 --ignore-eos --temp 0 \
      --print-ids 2>/dev/null | md5sum | sed "s/^/$1 $b ids /"
  done
}
# Where a 512-token prompt batch of file $m spends its host time.
host_profile() {
  LLM_PROFILE=1 timeout 90 /tmp/llm-gpu/llm bench -m $m -ngl 99 -p 512 -n 0 -r 5 2>&1 | grep -v "^ *$" | tail -14
}
# The start of such a call: the clock, the GPU, pack $1 unpacked.
start_call() {
  t0=$(date +%s)
  nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
  GPU_PACK=$1 scripts/gpu-suite.sh unpack && { [ ! -f /tmp/llm-gpu/test_matmul ] || chmod +x /tmp/llm-gpu/test_matmul; }
}
el() { echo "[$(($(date +%s) - ${t0:-0})) s] $*"; }
# Waits up to $1 tries of $2 seconds for the rival's F16 generator
# (gpu-bench.sh start) to finish writing its file.
wait_gen() {
  for _ in $(seq "$1"); do grep -q "gen rc" "$W/gen.log" 2>/dev/null && break; sleep "$2"; done
}
# Partial offload side by side, llama.cpp and llm alternating: $1 rounds
# of $2 repetitions each (llm under GPU_SESSION_ENV's settings, if any).
hybrid_rounds() {
  local i
  for i in $(seq "$1"); do
    mkdir -p "$results/hybrid-$i"
    # shellcheck disable=SC2086
    env ${GPU_SESSION_ENV:-} GPU_BENCH_ENGINES="rival llm" OUT=$results/hybrid-$i GPU_BENCH_TIMEOUT=200 \
      scripts/gpu-bench.sh run /tmp/llm-gpu/llm "$2" "${HYBRID[@]}" 2>&1 | tee -a "$out/bench-hybrid.log"
  done
}
# Where an F16 prompt batch of file $1 goes (gpu-profile.sh, warm L2).
prompt_profile() {
  GPU_PROFILE_MODEL=$1 GPU_PROFILE_CACHE=none GPU_PROFILE_ARGS="-p 512 -n 0 -r 2" GPU_PROFILE_SKIP=600 \
    GPU_PROFILE_KERNELS=600 timeout 200 scripts/gpu-profile.sh F16 7b 2>&1 | head -30
  el "prompt profile"
}

case "${1:-}" in
a)
  scripts/gpu-bench.sh start .rivals
  k=ggml/src/cuda/kernels
  # GPU_SESSION_NO_KERNEL_TEST=1: the kernels' sources are those of a run that passed.
  if [ -z "${GPU_SESSION_NO_KERNEL_TEST:-}" ]; then
    { nvcc -O2 -arch=sm_90a -Xcompiler -ffp-contract=off -o /tmp/test_matmul $k/test_matmul.cu &&
      /tmp/test_matmul && /tmp/test_matmul --bench; } >"$out/test_matmul.log" 2>&1
    echo "test_matmul rc=$?"; tail -40 "$out/test_matmul.log"
    { nvcc -O2 -arch=sm_90a -Xcompiler -ffp-contract=off -o /tmp/test_ops $k/test_ops.cu && /tmp/test_ops &&
      /tmp/test_ops --bench; } >"$out/test_ops.log" 2>&1
    echo "test_ops rc=$?"; tail -6 "$out/test_ops.log"
  fi
  # GPU_SESSION_NO_SUITE=1: the suite passed on this build in an earlier call.
  if [ -n "${GPU_SESSION_NO_SUITE:-}" ]; then
    GPU_PACK=.gpu-a scripts/gpu-suite.sh unpack
  else
    GPU_PACK=.gpu-a timeout 300 scripts/gpu-suite.sh run >"$out/suite-a.log" 2>&1
    echo "suite rc=$?"
  fi
  grep -E "^test |test result|tokens equal to step [0-9]+ of|planned|FAIL|panicked" "$out/suite-a.log" | grep -v "step 64 of 64; max |logit diff| vs CPU [0-9.e-]*$" | tail -30
  scripts/gpu-bench.sh wait MODELS_READY 240
  scripts/gpu-bench.sh poll
  mkdir -p "$results"
  GPU_BENCH_ENGINES=llm OUT=$results GPU_BENCH_TIMEOUT=100 scripts/gpu-bench.sh run /tmp/llm-gpu/llm 10 "${ENTRIES[@]}" 2>&1 | tee "$out/bench-llm.log"
  cp "$results"/* "$out/"
  for ab in ${GPU_SESSION_AB:-}; do
    mkdir -p "$out/$ab"
    env "$ab" GPU_BENCH_ENGINES=llm OUT="$out/$ab" GPU_BENCH_TIMEOUT=60 scripts/gpu-bench.sh run /tmp/llm-gpu/llm 10 \
      "${DECODE[@]}" 2>&1 | grep -E "^==|tg128" | sed "s/^/$ab /"
  done
  ;;
b)
  GPU_PACK=.gpu-b timeout 120 scripts/gpu-suite.sh run smollm2 chat_on >"$out/suite-b.log" 2>&1
  echo "smollm2 rc=$?"
  grep -E "^test |test result|tokens equal|CPU:|GPU:|panicked|part after" "$out/suite-b.log" | tail -12
  scripts/gpu-bench.sh wait READY 420
  scripts/gpu-bench.sh poll
  export LLM_TEST_MODELS=/tmp/llm-gpu/models LLM_GPU_VOCAB=/tmp/llm-gpu/vocab.gguf LLM_RIVAL_LOGITS=$W/rival_logits
  timeout 60 /tmp/llm-gpu/test-gpu --nocapture closer_to_exact >"$out/rival-logits.log" 2>&1
  echo "rival logits rc=$?"; grep -vE "^running|^$" "$out/rival-logits.log" | tail -12
  # llm's decode again, now that the rival's build no longer takes the cores
  # (a launch-bound decode step reads lower beside it).
  mkdir -p "$results/decode"
  GPU_BENCH_ENGINES=llm OUT=$results/decode GPU_BENCH_TIMEOUT=100 scripts/gpu-bench.sh run /tmp/llm-gpu/llm 10 \
    "${DECODE[@]}" 2>&1 | tee "$out/bench-decode.log"
  GPU_BENCH_ENGINES=rival OUT=$results scripts/gpu-bench.sh run /tmp/llm-gpu/llm 10 "${ENTRIES[@]}" 2>&1 | tee "$out/bench.log"
  # Partial offload leans on the host's cores and memory, which the host's
  # other machines share (the same binary has read 21.9 and 27.3 tokens/s
  # there): llama.cpp and llm alternate, three runs each, and the note
  # takes medians.
  if [ ${#HYBRID[@]} -gt 0 ]; then
    hybrid_rounds 3 "${GPU_SESSION_HYBRID_REPS:-3}"
  fi
  cp "$results"/* "$out/" 2>/dev/null
  ;;
c)
  GPU_PACK=.gpu-c timeout 120 scripts/gpu-suite.sh run-folders >"$out/suite-c.log" 2>&1
  echo "folders rc=$?"
  grep -E "^test |test result|dequant reference|panicked" "$out/suite-c.log" | tail -24
  # Hugging Face folders (issue 11): 7B-shaped GPTQ 4-bit g128, plain and
  # act-order, written here by our writer, beside the GGUF figures above.
  for f in ${GPU_SESSION_FOLDERS-gptq4 gptq4-act gptq4-asym}; do
    LLM_WRITE_FOLDER=$W/models/7b-$f LLM_WRITE_SHAPE=7b LLM_WRITE_FORMAT=$f \
      /tmp/llm-gpu/test-hf_folders --ignored write_a_bench_folder >/dev/null 2>&1
    timeout 150 /tmp/llm-gpu/llm bench -m "$W/models/7b-$f" -ngl 99 -p 512 -n 128 -r 5 2>&1 |
      grep -E "^\| 7b" | tee -a "$out/bench-folders.log"
    rm -rf "$W/models/7b-$f"
  done
  ;;
d)
  k=ggml/src/cuda/kernels
  { nvcc -O2 -arch=sm_90a -Xcompiler -ffp-contract=off -o /tmp/test_matmul $k/test_matmul.cu &&
    /tmp/test_matmul; } >"$out/test_matmul.log" 2>&1
  echo "test_matmul rc=$?"; tail -3 "$out/test_matmul.log"
  { nvcc -O2 -arch=sm_90a -Xcompiler -ffp-contract=off -o /tmp/test_ops $k/test_ops.cu && /tmp/test_ops; } \
    >"$out/test_ops.log" 2>&1
  echo "test_ops rc=$?"; tail -3 "$out/test_ops.log"
  GPU_PACK=.gpu-d timeout 240 scripts/gpu-suite.sh run >"$out/suite-d.log" 2>&1
  echo "suite rc=$?"
  grep -E "^test |test result|planned|FAIL|panicked" "$out/suite-d.log" | grep -v " ok$" | tail -20
  w=/tmp/llm-gpu
  mkdir -p $w/fixtures $w/models
  tar -C $w/fixtures -xJf .gpu-d/fixtures.tar.xz
  LLM_FIXTURES=$w/fixtures timeout 120 $w/test-hf_folders --nocapture --test-threads 1 on_the_gpu \
    >"$out/folders.log" 2>&1
  echo "folders rc=$?"; grep -E "dequant reference|greedy|test result|panicked" "$out/folders.log" | tail -24
  for t in ${GPU_SESSION_TYPES-Q4_K Q4_0}; do
    LLM_GPU_VOCAB=$w/vocab.gguf LLM_WRITE_MODEL=$w/models/7b-$t.gguf LLM_WRITE_TYPE=$t \
      $w/test-gpu --ignored write_a_bench_model >/dev/null 2>&1
    timeout 100 $w/llm bench -m $w/models/7b-$t.gguf -ngl 99 -p 512 -n 128 -r 5 2>&1 |
      grep -E "^\| 7b" | tee -a "$out/bench-folders.log"
    rm -f $w/models/7b-$t.gguf
  done
  for f in ${GPU_SESSION_FOLDERS-gptq4 gptq4-act gptq4-asym awq exl2-4 exl2}; do
    LLM_WRITE_FOLDER=$w/models/7b-$f LLM_WRITE_SHAPE=7b LLM_WRITE_FORMAT=$f \
      $w/test-hf_folders --ignored write_a_bench_folder >/dev/null 2>&1
    timeout 100 $w/llm bench -m "$w/models/7b-$f" -ngl 99 -p 512 -n 128 -r 5 2>&1 |
      grep -E "^\| 7b" | tee -a "$out/bench-folders.log"
    # GPU_SESSION_AB="VAR=VALUE ...": the folder's decode under each setting too.
    for ab in ${GPU_SESSION_AB:-}; do
      env "$ab" timeout 60 $w/llm bench -m "$w/models/7b-$f" -ngl 99 -p 0 -n 128 -r 5 2>&1 |
        grep -E "^\| 7b" | sed "s/^/$ab /" | tee -a "$out/bench-folders.log"
    done
    rm -rf "$w/models/7b-$f"
  done
  ;;
p)
  t0=$(date +%s)
  el() { echo "[$(($(date +%s) - t0)) s] $*"; }
  nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
  scripts/gpu-bench.sh start .rivals >/dev/null
  k=ggml/src/cuda/kernels
  nvcc -O2 -arch=sm_90a -Xcompiler -ffp-contract=off -o /tmp/test_ops $k/test_ops.cu >"$out/nvcc_ops.log" 2>&1 &
  nvcc -O2 -arch=sm_90a -Xcompiler -ffp-contract=off -o /tmp/test_matmul $k/test_matmul.cu >"$out/test_matmul.log" 2>&1
  wait
  /tmp/test_matmul >>"$out/test_matmul.log" 2>&1
  el "test_matmul rc=$?"; tail -2 "$out/test_matmul.log"
  /tmp/test_ops >"$out/test_ops.log" 2>&1
  el "test_ops rc=$?"; tail -3 "$out/test_ops.log"
  timeout 45 /tmp/test_ops --bench >>"$out/test_ops.log" 2>&1
  el "test_ops --bench rc=$?"; grep -vE "^(ok|check)" "$out/test_ops.log" | tail -40
  GPU_PACK=.gpu-a timeout "${GPU_SESSION_SUITE_S:-220}" scripts/gpu-suite.sh run >"$out/suite-a.log" 2>&1
  el "suite rc=$?"
  grep -E "^test |test result|fail|panicked" "$out/suite-a.log" | grep -v " ok$" | tail -24
  GPU_PROFILE_CACHE=none timeout 120 scripts/gpu-profile.sh Q4_K 2>&1 | head -24
  el "profile Q4_K"
  GPU_SESSION_ROUNDS=1 GPU_SESSION_TYPES=Q4_K GPU_SESSION_BENCH="-p 0 -n 128" \
    GPU_SESSION_AB="${GPU_SESSION_AB-LLM_CUDA_FUSED_ROPE=0 LLM_CUDA_MV1_EARLY=0 LLM_CUDA_ATT_VU=8 LLM_CUDA_ATT_MERGE_LAUNCH=1}" \
    timeout 100 "$0" x >/dev/null 2>&1
  el "A/B"; cat "$out/bench-ab.log"
  scripts/gpu-bench.sh poll | tail -3
  ;;
q)
  # GPU_SESSION_Q="profile bench depth prompt" (the default): which parts run.
  t0=$(date +%s)
  el() { echo "[$(($(date +%s) - t0)) s] $*"; }
  part() { [[ " ${GPU_SESSION_Q:-profile bench depth prompt} " == *" $1 "* ]]; }
  part profile && GPU_PROFILE_CACHE=none GPU_PROFILE_ARGS="-p 512 -n 0 -r 2" GPU_PROFILE_SKIP=600 GPU_PROFILE_KERNELS=700 \
    timeout 130 scripts/gpu-profile.sh F16 2>&1 | head -30
  el "profile F16 pp512"
  rm -f /tmp/llm-gpu/models/7b-F16.gguf
  if part bench; then
    scripts/gpu-bench.sh wait READY 60
    mkdir -p "$results"
    GPU_BENCH_ENGINES="rival llm" OUT=$results GPU_BENCH_TIMEOUT=80 scripts/gpu-bench.sh run /tmp/llm-gpu/llm 10 \
      "${ENTRIES[@]}" 2>&1 | tee "$out/bench.log"
    el "side by side"
    tar -C "$results" -czf "$out/results.tgz" .
  fi
  part depth && GPU_SESSION_ROUNDS=1 GPU_SESSION_TYPES=Q4_K GPU_SESSION_BENCH="-p 0 -n 128 -d 4096" \
    GPU_SESSION_AB="LLM_CUDA_ATT_VU=8 LLM_CUDA_ATT=146,32,4,4 LLM_CUDA_ATT_MERGE_LAUNCH=1" \
    timeout 90 "$0" x >/dev/null 2>&1
  el "depth A/B"
  part prompt && GPU_SESSION_ROUNDS=1 GPU_SESSION_TYPES="Q4_K F16" GPU_SESSION_BENCH="-p 512,2048 -n 0" \
    GPU_SESSION_AB="LLM_CUDA_PROMPT_FA=1" timeout 120 "$0" x >/dev/null 2>&1
  el "prompt A/B"; cat "$out/bench-ab.log"
  ;;
v)
  # After a change of defaults (carry .gpu-a made by `GPU_PACK=.gpu-a
  # scripts/gpu-suite.sh pack`): the suite (cut at GPU_SESSION_SUITE_S),
  # then one round of GPU_SESSION_AB on our writer's 7B and 1B of Q4_K,
  # prompt and decode at depths 0 and 4096.
  t0=$(date +%s)
  el() { echo "[$(($(date +%s) - t0)) s] $*"; }
  GPU_PACK=.gpu-a timeout "${GPU_SESSION_SUITE_S:-200}" scripts/gpu-suite.sh run >"$out/suite-v.log" 2>&1
  el "suite rc=$?"
  grep -E "^test |test result|fail|panicked" "$out/suite-v.log" | grep -v " ok$" | tail -24
  GPU_SESSION_ROUNDS=1 GPU_SESSION_TYPES="Q4_K 1b-Q4_K" GPU_SESSION_BENCH="-p 512 -n 128 -d 0,4096" \
    timeout "${GPU_SESSION_AB_S:-250}" "$0" x >/dev/null 2>&1
  el "A/B"; cat "$out/bench-ab.log"
  ;;
l)
  # The lean one-token products (kernels/matvec1_lean.cu; carry .gpu-a
  # and .gpu-t, whose test_matmul.xz was built here): their kernel checks,
  # the suite (cut at GPU_SESSION_SUITE_S), then decode of our writer's 7B
  # and 1B of Q4_K with each LLM_CUDA_MV1_LEAN setting beside the default.
  t0=$(date +%s)
  el() { echo "[$(($(date +%s) - t0)) s] $*"; }
  nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
  xz -dc .gpu-t/test_matmul.xz >/tmp/test_matmul && chmod +x /tmp/test_matmul &&
    timeout 120 /tmp/test_matmul --xs >"$out/test_matmul_xs.log" 2>&1
  el "test_matmul --xs rc=$?"; tail -12 "$out/test_matmul_xs.log"
  GPU_PACK=.gpu-a timeout "${GPU_SESSION_SUITE_S:-200}" scripts/gpu-suite.sh run >"$out/suite-l.log" 2>&1
  el "suite rc=$?"
  grep -E "^test |test result|fail|panicked" "$out/suite-l.log" | grep -v " ok$" | tail -24
  GPU_SESSION_ROUNDS=1 GPU_SESSION_TYPES="Q4_K 1b-Q4_K" GPU_SESSION_BENCH="-p 0 -n 128" \
    GPU_SESSION_AB="${GPU_SESSION_AB-LLM_CUDA_MV1_LEAN=0 LLM_CUDA_MV1_LEAN=add LLM_CUDA_MV1_LEAN=glu LLM_CUDA_MV1_LEAN=all}" \
    timeout "${GPU_SESSION_AB_S:-150}" "$0" x >/dev/null 2>&1
  el "A/B"; cat "$out/bench-ab.log"
  ;;
x)
  # llm bench (GPU_SESSION_BENCH, else pp512 and tg128) under each
  # GPU_SESSION_AB setting beside the default, on our
  # writer's one-type files (7B shape; 1b- for Llama-3.2-1B's), each pair
  # alternated GPU_SESSION_ROUNDS times (2), one file on disk at a time;
  # after a call that unpacked the pack (a, or gpu-suite.sh run).
  w=/tmp/llm-gpu
  mkdir -p $w/models
  for t in ${GPU_SESSION_TYPES-Q4_K Q4_0 Q8_0 Q6_K F16 1b-Q4_K}; do
    shape=7b ty=$t
    if [[ $t == 1b-* ]]; then shape=1b ty=${t#1b-}; fi
    m=$w/models/$shape-$ty.gguf
    LLM_GPU_VOCAB=$w/vocab.gguf LLM_WRITE_MODEL=$m LLM_WRITE_TYPE=$ty LLM_WRITE_SHAPE=$shape \
      $w/test-gpu --ignored write_a_bench_model >/dev/null 2>&1 || echo "writing $m failed"
    for _ in $(seq "${GPU_SESSION_ROUNDS:-2}"); do
      for ab in default ${GPU_SESSION_AB:-}; do
        # shellcheck disable=SC2046
        [ $ab = default ] && set -- env || set -- env $(tr '+' ' ' <<<"$ab")
        # shellcheck disable=SC2086
        "$@" timeout 60 $w/llm bench -m "$m" -ngl 99 ${GPU_SESSION_BENCH:--p 512 -n 128} -r 5 2>&1 |
          grep -E "^\| [0-9]" | sed "s/^/$t $ab /" | tee -a "$out/bench-ab.log"
      done
    done
    rm -f "$m"
  done
  ;;
e)
  # KV cache types (issue 15): the GPU suite but SmolLM2 (pack into
  # .gpu-e), then decode at depth 4096 of a 7B-shaped Q4_K file written
  # here with each cache type, and its prompt speed with f16 and q8_0.
  GPU_PACK=.gpu-e timeout 300 scripts/gpu-suite.sh run >"$out/suite-e.log" 2>&1
  echo "suite rc=$?"
  grep -E "^test |test result|tokens equal|planned|FAIL|panicked" "$out/suite-e.log" | grep -v " ok$" | tail -40
  w=/tmp/llm-gpu
  mkdir -p $w/models
  LLM_GPU_VOCAB=$w/vocab.gguf LLM_WRITE_MODEL=$w/models/7b-Q4_K.gguf LLM_WRITE_TYPE=Q4_K \
    $w/test-gpu --ignored write_a_bench_model >/dev/null 2>&1
  timeout 60 $w/llm bench -m $w/models/7b-Q4_K.gguf -ngl 99 -p 512 -n 0 -ctk f16,q8_0 -ctv f16,q8_0 -r 5 2>&1 |
    grep -E "^\| 7b" | tee -a "$out/bench-caches.log"
  for t in ${GPU_SESSION_CACHES:-f16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl bf16}; do
    timeout 60 $w/llm bench -m $w/models/7b-Q4_K.gguf -ngl 99 -p 0 -n 128 -d 4096 -ctk $t -ctv $t -r 5 2>&1 |
      grep -E "^\| 7b" | tee -a "$out/bench-caches.log"
  done
  # GPU_SESSION_AB="VAR=VALUE ...": f16, q8_0 and q4_0 again under each setting.
  for ab in ${GPU_SESSION_AB:-}; do
    for t in f16 q8_0 q4_0; do
      env "$ab" timeout 60 $w/llm bench -m $w/models/7b-Q4_K.gguf -ngl 99 -p 0 -n 128 -d 4096 -ctk $t -ctv $t -r 5 2>&1 |
        grep -E "^\| 7b" | sed "s/^/$ab /" | tee -a "$out/bench-caches.log"
    done
  done
  ;;
f)
  # SmolLM2 complete (its halves in .gpu-s1/smol.part0, copied to the models by
  # an earlier call, and .gpu-s2/smol.part1; after e on the same
  # machine): its GPU tests, then its decode at depth 4096 per cache type.
  GPU_PACK=.gpu-s2 timeout 200 scripts/gpu-suite.sh run smollm2 chat_on quantised_kv >"$out/suite-f.log" 2>&1
  echo "smollm2 rc=$?"
  grep -E "^test |test result|tokens equal|CPU|GPU|panicked|part after" "$out/suite-f.log" | tail -40
  for t in ${GPU_SESSION_CACHES:-f16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl bf16}; do
    timeout 60 /tmp/llm-gpu/llm bench -m /tmp/llm-gpu/models/SmolLM2-135M-Instruct.Q4_1.gguf -ngl 99 -p 0 -n 128 \
      -d 4096 -ctk $t -ctv $t -r 5 2>&1 | grep -E "^\| " | tee -a "$out/bench-caches-smollm2.log"
  done
  # The KLD of each cache type against the f16 cache on the GPU, as
  # scripts/kv-cache-table.sh measures it on the CPU.
  smol=/tmp/llm-gpu/models/SmolLM2-135M-Instruct.Q4_1.gguf
  ppl() { timeout 60 /tmp/llm-gpu/llm perplexity $smol -f tests/data/gpl-3.0.txt -c 512 --chunks 4 -ngl 99 "$@" 2>&1; }
  ppl --kl-divergence-base /tmp/smol-f16.kld >/dev/null
  for t in ${GPU_SESSION_CACHES:-f16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl bf16}; do
    echo "$t $(ppl -ctk $t -ctv $t --kl-divergence-base /tmp/smol-f16.kld --kl-divergence |
      grep -E "^Mean +KLD|^Same top" | tr -s ' ' | tr '\n' ' ')" | tee -a "$out/kld-smollm2.log"
  done
  ;;
g)
  # Gemma-3-270M (issue 15), after e on the same machine: its file travels
  # in parts (.gpu-g*/gemma.part*, each copied to /tmp/llm-gpu/models by
  # its own call); the call carrying the last part runs this. Greedy reply
  # and f16 logits against the CPU's, decode at depth 4096 per cache type,
  # and each type's KLD against the f16 cache on the GPU.
  w=/tmp/llm-gpu
  cp .gpu-g*/gemma.part* $w/models/ 2>/dev/null
  gem=$w/models/gemma-3-270m-q4_k_m.gguf
  cat $w/models/gemma.part* >$gem
  echo "gemma $(sha256sum $gem | cut -c1-16) $(stat -c %s $gem) bytes"
  for ngl in 0 99; do
    timeout 60 $w/llm run $gem -ngl $ngl --temp 0 -n 48 -p "The capital of France is" 2>/dev/null >"$out/gemma-run-$ngl.txt"
  done
  cmp -s "$out/gemma-run-0.txt" "$out/gemma-run-99.txt" && echo "gemma greedy: GPU reply = CPU reply" ||
    { echo "gemma greedy: replies differ"; cat "$out"/gemma-run-*.txt; }
  ppl() { timeout 120 $w/llm perplexity $gem -f tests/data/gpl-3.0.txt -c 512 --chunks 4 "$@" 2>&1; }
  ppl -ngl 0 --kl-divergence-base /tmp/gemma-cpu.kld | grep -E "^Final|PPL" | tail -1
  echo "GPU f16 vs CPU f16: $(ppl -ngl 99 --kl-divergence-base /tmp/gemma-cpu.kld --kl-divergence |
    grep -E "^Mean +KLD|^Same top" | tr -s ' ' | tr '\n' ' ')" | tee -a "$out/kld-gemma.log"
  ppl -ngl 99 --kl-divergence-base /tmp/gemma-f16.kld >/dev/null
  for t in ${GPU_SESSION_CACHES:-f16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl bf16}; do
    timeout 60 $w/llm bench -m $gem -ngl 99 -p 0 -n 128 -d 4096 -ctk $t -ctv $t -r 5 2>&1 |
      grep -E "^\| " | tee -a "$out/bench-caches-gemma.log"
    echo "$t $(ppl -ngl 99 -ctk $t -ctv $t --kl-divergence-base /tmp/gemma-f16.kld --kl-divergence |
      grep -E "^Mean +KLD|^Same top" | tr -s ' ' | tr '\n' ' ')" | tee -a "$out/kld-gemma.log"
  done
  ;;
att)
  # Decode attention's launch shape: 7B, 1B and few-heads (4 heads of 256,
  # Gemma-3-270M-like) files of Q4_K written here, depth 4096, f16 and q4_0
  # caches, under each LLM_CUDA_ATT setting ("split_cells,max_splits,
  # min_blocks,split_warps"; GPU_SESSION_ATT) and each folder of kernel
  # images (LLM_CUDA_MODULE_DIR; GPU_SESSION_VARIANTS, "-" for the embedded
  # ones). Needs llm, test-gpu and vocab.gguf in /tmp/llm-gpu (after e, or
  # unpacked from GPU_PACK).
  w=/tmp/llm-gpu
  mkdir -p $w/models
  for f in ${GPU_PACK:-.gpu-e}/*.xz; do [ -f "$f" ] && xz -dc "$f" >"$w/$(basename "$f" .xz)" && chmod +x "$w/$(basename "$f" .xz)"; done
  [ -f ${GPU_PACK:-.gpu-e}/vocab.gguf ] && cp ${GPU_PACK:-.gpu-e}/vocab.gguf $w/
  shapes=${GPU_SESSION_SHAPES:-7b 1b few-heads}
  for shape in $shapes; do
    [ -f $w/models/$shape.gguf ] || LLM_GPU_VOCAB=$w/vocab.gguf LLM_WRITE_MODEL=$w/models/$shape.gguf \
      LLM_WRITE_TYPE=Q4_K LLM_WRITE_SHAPE=$shape $w/test-gpu --ignored write_a_bench_model >/dev/null 2>&1
  done
  for shape in $shapes; do
    for variant in ${GPU_SESSION_VARIANTS:--}; do
      for att in ${GPU_SESSION_ATT:-256,32,0,4}; do
        for t in ${GPU_SESSION_CACHES:-f16 q4_0}; do
          dir=$variant
          [ "$variant" = - ] && dir=
          r=$(LLM_CUDA_MODULE_DIR=$dir LLM_CUDA_ATT=$att timeout 60 $w/llm bench -m $w/models/$shape.gguf -ngl 99 \
            -p 0 -n 64 -d 4096 -ctk $t -ctv $t -r 3 2>/dev/null | grep -E "^\| " | tail -1 | awk -F'|' '{print $(NF-1)}')
          echo "$shape $(basename -- "$variant") $att $t $r" | tee -a "$out/att-sweep.log"
        done
      done
    done
  done
  ;;
n1)
  t0=$(date +%s)
  el() { echo "[$(($(date +%s) - t0)) s] $*"; }
  nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
  scripts/gpu-bench.sh start .rivals
  xz -dc .gpu-t/test_matmul.xz >/tmp/test_matmul && chmod +x /tmp/test_matmul &&
    timeout 150 /tmp/test_matmul --xs >"$out/test_matmul_xs.log" 2>&1
  el "test_matmul --xs rc=$?"; grep -E "lean|xs" "$out/test_matmul_xs.log" | tail -16
  GPU_PACK=.gpu-a timeout "${GPU_SESSION_SUITE_S:-380}" scripts/gpu-suite.sh run >"$out/suite-n.log" 2>&1
  el "suite rc=$?"
  grep -E "^test |test result|fail|panicked" "$out/suite-n.log" | grep -v " ok$" | tail -24
  scripts/gpu-bench.sh poll | tail -3
  ;;
n2)
  # The quantised types' switches (n2f: F16's), one round each.
  t0=$(date +%s)
  el() { echo "[$(($(date +%s) - t0)) s] $*"; }
  types="q4_k,q4_0,q8_0"
  all="LLM_CUDA_LEAN_TYPES=$types+LLM_CUDA_MV1_LEAN=1+LLM_CUDA_LEAN_PIPED=1"
  GPU_SESSION_ROUNDS=1 GPU_SESSION_TYPES="${GPU_SESSION_TYPES-Q4_K Q4_0 Q8_0 1b-Q4_K}" GPU_SESSION_BENCH="-p 0 -n 128" \
    GPU_SESSION_AB="${GPU_SESSION_AB-LLM_CUDA_LEAN_PIPED=1 LLM_CUDA_LEAN_EARLY=release LLM_CUDA_LEAN_EARLY=release,prefetch=row
      LLM_CUDA_LEAN_PIPED=1+LLM_CUDA_LEAN_EARLY=release,prefetch=row LLM_CUDA_LEAN_FUSE=1
      LLM_CUDA_MV1_LEAN=1+LLM_CUDA_LEAN_EARLY=release,prefetch=row LLM_CUDA_LEAN_TYPES=$types
      LLM_CUDA_LEAN_TYPES=$types+LLM_CUDA_LEAN_PIPED=1 $all $all+LLM_CUDA_LEAN_FUSE=1
      $all+LLM_CUDA_LEAN_FUSE=1+LLM_CUDA_LEAN_EARLY=release,prefetch=row}" \
    timeout "${GPU_SESSION_AB_S:-540}" "$0" x >/dev/null 2>&1
  el "A/B"; cat "$out/bench-ab.log"
  ;;
n2f)
  t0=$(date +%s)
  el() { echo "[$(($(date +%s) - t0)) s] $*"; }
  GPU_SESSION_ROUNDS=1 GPU_SESSION_TYPES=F16 GPU_SESSION_BENCH="-p 0 -n 128" \
    GPU_SESSION_AB="${GPU_SESSION_AB-LLM_CUDA_LEAN_TYPES=f16 LLM_CUDA_LEAN_TYPES=f16+LLM_CUDA_MV1_LEAN=1
      LLM_CUDA_LEAN_TYPES=f16+LLM_CUDA_LEAN_EARLY=prefetch=row
      LLM_CUDA_LEAN_TYPES=f16+LLM_CUDA_MV1_LEAN=1+LLM_CUDA_LEAN_EARLY=prefetch=row LLM_CUDA_MV1_XS=1}" \
    timeout "${GPU_SESSION_AB_S:-540}" "$0" x >/dev/null 2>&1
  el "A/B"; cat "$out/bench-ab.log"
  ;;
n4)
  # Q6_K's lean products (session 31): decode A/B on our writer's 7B Q6_K
  # file, then on the rival's Q4_K_M mixes (their v, half their downs and
  # the output head are Q6_K), 7B and 1B, once their models are written.
  t0=$(date +%s)
  el() { echo "[$(($(date +%s) - t0)) s] $*"; }
  q6="LLM_CUDA_LEAN_TYPES=q4_k,q4_0,q8_0,q6_k"
  ab=${GPU_SESSION_AB-$q6 $q6+LLM_CUDA_LEAN_PIPED=0}
  GPU_SESSION_ROUNDS=1 GPU_SESSION_TYPES=Q6_K GPU_SESSION_BENCH="-p 0 -n 128" GPU_SESSION_AB="$ab" \
    timeout 200 "$0" x >/dev/null 2>&1
  el "Q6_K"
  scripts/gpu-bench.sh wait MODELS_READY 200
  for m in Q4_K_M 1B-Q4_K_M; do
    for _ in 1 2; do
      for s in default $ab; do
        # shellcheck disable=SC2046
        [ $s = default ] && set -- env || set -- env $(tr '+' ' ' <<<"$s")
        "$@" timeout 60 /tmp/llm-gpu/llm bench -m "$W/models/m-$m.gguf" -ngl 99 -p 0 -n 128 -r 5 2>&1 |
          grep -E "^\| [0-9a-z]" | grep tg | sed "s/^/m-$m $s /" >>"$out/bench-ab.log"
      done
    done
  done
  el "A/B"; cat "$out/bench-ab.log"
  ;;
n5)
  # n4's A/B on the rival's 7B Q4_K_M alone (one round), then n3 with Q6_K
  # lean where it won there (device time scarce: one call).
  q6="LLM_CUDA_LEAN_TYPES=q4_k,q4_0,q8_0,q6_k"
  scripts/gpu-bench.sh wait MODELS_READY 200
  for s in default $q6 default $q6; do
    # shellcheck disable=SC2046
    [ $s = default ] && set -- env || set -- env $(tr '+' ' ' <<<"$s")
    "$@" timeout 60 /tmp/llm-gpu/llm bench -m "$W/models/m-Q4_K_M.gguf" -ngl 99 -p 0 -n 128 -r 5 2>&1 |
      grep -E "^\| [0-9a-z]" | grep tg | sed "s/^/m-Q4_K_M $s /" >>"$out/bench-ab.log"
  done
  cat "$out/bench-ab.log"
  best=$(awk -F'|' '/^m-Q4_K_M/ { split($1, a, " "); split($(NF-1), v, " "); sum[a[2]] += v[1]; n[a[2]]++ }
    END { b = "default"; for (k in sum) if (sum[k] / n[k] > sum[b] / n[b]) b = k; print b }' "$out/bench-ab.log")
  echo "n5: llm under $best"
  [ "$best" = default ] && best=
  GPU_SESSION_ENV="$best" "$0" n3
  ;;
n8)
  # Device time short (one call): n1's suite, then llm alone on the rival's
  # files once written (-r 10; GPU_SESSION_AB's settings beside, -r 5), to
  # set against an earlier side by side's llama.cpp figures on the same kind.
  # On an H200 (the issue's GPU, none yet this session): the suite cut at
  # 300 s, then the decode side by side (n3, tg128 alone) instead.
  if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    GPU_SESSION_SUITE_S=300 "$0" n1
    GPU_SESSION_TG_ONLY=1 "$0" n3
    exit
  fi
  GPU_SESSION_SUITE_S=${GPU_SESSION_SUITE_S:-400} "$0" n1
  scripts/gpu-bench.sh wait MODELS_READY 120
  for m in Q4_K_M 1B-Q4_K_M Q4_0 Q8_0; do
    timeout 60 /tmp/llm-gpu/llm bench -m "$W/models/m-$m.gguf" -ngl 99 -p 0 -n 128 -r 10 2>&1 | grep -E "^\| [0-9a-z]" |
      grep tg | sed "s/^/m-$m default /" | tee -a "$out/bench-ab.log"
  done
  for s in ${GPU_SESSION_AB-LLM_CUDA_PDL=all}; do
    for m in Q4_K_M 1B-Q4_K_M; do
      # shellcheck disable=SC2046
      env $(tr '+' ' ' <<<"$s") timeout 60 /tmp/llm-gpu/llm bench -m "$W/models/m-$m.gguf" -ngl 99 -p 0 -n 128 -r 5 2>&1 |
        grep -E "^\| [0-9a-z]" | grep tg | sed "s/^/m-$m $s /" | tee -a "$out/bench-ab.log"
    done
  done
  ;;
n7)
  # Decode A/B of GPU_SESSION_AB's settings ("A=1+B=2 C=3") against the
  # default on the rival's 7B and 1B Q4_K_M (alternated, two rounds, llm
  # bench -r 5), and of GPU_SESSION_AB_OTHERS's on its 7B Q4_0 and Q8_0;
  # then n3 under the setting whose geometric mean over the two Q4_K_M
  # models is best. (Session 32's first sitting: the split lean groups and
  # lean Q6_K, LLM_CUDA_LEAN_SPLIT=1 and LLM_CUDA_LEAN_TYPES=...,q6_k.)
  ab=${GPU_SESSION_AB-LLM_CUDA_PDL=all LLM_CUDA_ATT_X16=1}
  others=${GPU_SESSION_AB_OTHERS-LLM_CUDA_PDL=all}
  scripts/gpu-bench.sh wait MODELS_READY 240
  : >"$out/bench-ab.log"
  one() {  # model setting
    # shellcheck disable=SC2046
    if [ "$2" = default ]; then set -- "$1" "$2" env; else set -- "$1" "$2" env $(tr '+' ' ' <<<"$2"); fi
    "${@:3}" timeout 60 /tmp/llm-gpu/llm bench -m "$W/models/m-$1.gguf" -ngl 99 -p 0 -n 128 -r 5 2>&1 |
      grep -E "^\| [0-9a-z]" | grep tg | sed "s/^/m-$1 $2 /" >>"$out/bench-ab.log"
  }
  for _ in 1 2; do
    for m in Q4_K_M 1B-Q4_K_M; do for s in default $ab; do one $m "$s"; done; done
    for m in Q4_0 Q8_0; do for s in default $others; do one $m "$s"; done; done
  done
  cat "$out/bench-ab.log"
  best=$(python3 - "$out/bench-ab.log" <<'PY'
import collections, math, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    head, cells = line.split("|", 1)[0].split(), line.split("|")
    runs[(head[0], head[1])].append(float(cells[-2].split()[0]))
mean = {k: sum(v) / len(v) for k, v in runs.items()}
models = ("m-Q4_K_M", "m-1B-Q4_K_M")
score = {s: math.prod(mean[(m, s)] / mean[(m, "default")] for m in models)
         for (m, s) in mean if m == models[0] and all((n, s) in mean for n in models)}
for s, v in sorted(score.items(), key=lambda kv: -kv[1]):
    print(f"{s}: {v ** 0.5:.4f}", file=sys.stderr)
print(max(score, key=score.get))
PY
)
  echo "n7: llm under $best"
  [ "$best" = default ] && best=
  GPU_SESSION_ENV="$(tr '+' ' ' <<<"$best")" "$0" n3
  ;;
n6)
  # The side by side (n3), then where a decode step of the rival's Q4_K_M
  # mixes goes (gpu-profile.sh, warm L2), 7B and 1B, in one call
  # (GPU_SESSION_NO_N3=1: the profiles alone, under GPU_SESSION_ENV).
  [ -n "${GPU_SESSION_NO_N3:-}" ] || "$0" n3
  for m in Q4_K_M:7b 1B-Q4_K_M:1b; do
    # shellcheck disable=SC2086
    env ${GPU_SESSION_ENV:-} GPU_PROFILE_MODEL=$W/models/m-${m%%:*}.gguf GPU_PROFILE_CACHE=none timeout 150 \
      scripts/gpu-profile.sh "m-${m%%:*}" "${m##*:}" 2>&1 | head -40
  done
  ;;
w1)
  # Session 33's first call (carry .gpu-p: llm, test-gpu and the vocabulary
  # of a pack, and .gpu-t's test_matmul.xz): the warpgroup products' checks
  # and timings (256-token tiles, the fused add and GLU), F16 prompt batches
  # under their switches (alternated, two rounds), then where an F16 decode
  # step's and prompt batch's time goes (gpu-profile.sh, warm L2).
  start_call .gpu-p
  timeout 120 /tmp/llm-gpu/test_matmul --wgmma 2>&1 | tail -8
  timeout 120 /tmp/llm-gpu/test_matmul --bench-wgmma 2>&1
  el "test_matmul"
  m=/tmp/llm-gpu/models/7b-F16.gguf
  LLM_GPU_VOCAB=/tmp/llm-gpu/vocab.gguf LLM_WRITE_MODEL=$m LLM_WRITE_TYPE=F16 LLM_WRITE_SHAPE=7b \
    /tmp/llm-gpu/test-gpu --ignored write_a_bench_model >/dev/null 2>&1
  el "model written"
  for _ in 1 2; do
    for s in default ${GPU_SESSION_AB-LLM_CUDA_WGMMA_FUSE=0 LLM_CUDA_TILE_TOKENS=128}; do
      # shellcheck disable=SC2046
      if [ "$s" = default ]; then set -- env; else set -- env $(tr '+' ' ' <<<"$s"); fi
      "$@" timeout 60 /tmp/llm-gpu/llm bench -m $m -ngl 99 -p 512 -n 0 -r 5 2>&1 | grep -E "^\| [0-9a-z]" |
        grep pp | sed "s/^/F16 $s /"
    done
  done
  timeout 60 /tmp/llm-gpu/llm bench -m $m -ngl 99 -p 0 -n 128 -r 5 2>&1 | grep -E "^\| [0-9a-z]"
  el "benches"
  GPU_PROFILE_CACHE=none timeout 200 scripts/gpu-profile.sh F16 7b 2>&1 | head -30
  el "decode profile"
  GPU_PROFILE_CACHE=none GPU_PROFILE_ARGS="-p 512 -n 0 -r 2" GPU_PROFILE_SKIP=${GPU_SESSION_PP_SKIP:-600} \
    GPU_PROFILE_KERNELS=700 timeout 200 scripts/gpu-profile.sh F16 7b 2>&1 | head -30
  el "prompt profile"
  ;;
w2)
  # Session 33's second call (carry .gpu-p as w1's, and .rivals): llama.cpp's
  # builds and models started in the background; the warpgroup and F16
  # lean products' checks and timings; then on the rival's F16 file once
  # written, alternated pairs (two rounds) of pp512 under GPU_SESSION_AB_PP
  # and of tg128 under GPU_SESSION_AB_TG beside the defaults, and where an
  # F16 decode step's and prompt batch's time goes.
  t0=$(date +%s)
  el() { echo "[$(($(date +%s) - t0)) s] $*"; }
  nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
  scripts/gpu-bench.sh start .rivals
  GPU_PACK=.gpu-p scripts/gpu-suite.sh unpack && chmod +x /tmp/llm-gpu/test_matmul
  timeout 60 /tmp/llm-gpu/test_matmul --wgmma 2>&1 | tail -6
  GQ_XS_ONLY=f16 timeout 120 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -4
  timeout 120 /tmp/llm-gpu/test_matmul --bench-wgmma 2>&1
  el "test_matmul"
  m=$W/models/m-F16.gguf
  wait_gen 60 5
  el "$(cat "$W/gen.log" | tail -1)"
  # shellcheck disable=SC2086
  ab pp512 "-p 512 -n 0" ${GPU_SESSION_AB_PP-LLM_CUDA_WGMMA_FUSE=0 LLM_CUDA_TILE_TOKENS=128}
  # shellcheck disable=SC2086
  ab tg128 "-p 0 -n 128" ${GPU_SESSION_AB_TG-LLM_CUDA_LEAN_SPLIT=1}
  el "A/B"
  GPU_PROFILE_MODEL=$m GPU_PROFILE_CACHE=none timeout 200 scripts/gpu-profile.sh F16 7b 2>&1 | head -30
  el "decode profile"
  prompt_profile $m
  scripts/gpu-bench.sh poll | tail -3
  ;;
w4)
  # Session 33's third machine, first call (carry .gpu-p, .rivals): the
  # kernels' checks and timings on a quiet machine; the rival's F16 file
  # (its generator alone); alternated pairs (two rounds) of pp512 under
  # GPU_SESSION_AB_PP and tg128 under GPU_SESSION_AB_TG beside the
  # defaults; Nsight Compute on the GLU product against the plain one of
  # the same rows; an F16 prompt batch's kernels; then llama.cpp's builds
  # and models start (w3 and n3 follow on the same machine).
  start_call .gpu-p
  timeout 60 /tmp/llm-gpu/test_matmul --wgmma 2>&1 | tail -6
  GQ_XS_ONLY=f16 timeout 120 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -4
  timeout 120 /tmp/llm-gpu/test_matmul --bench-wgmma 2>&1
  el "test_matmul"
  m=$W/models/m-F16.gguf
  gen_f16 $m
  el "gen rc=$?"
  # shellcheck disable=SC2086
  ab pp512 "-p 512 -n 0" ${GPU_SESSION_AB_PP-LLM_CUDA_WGMMA_FUSE=0 LLM_CUDA_WGMMA_FUSE=add LLM_CUDA_WGMMA_FUSE=glu LLM_CUDA_TILE_TOKENS=128}
  # shellcheck disable=SC2086
  ab tg128 "-p 0 -n 128" ${GPU_SESSION_AB_TG-LLM_CUDA_LEAN_SPLIT=1}
  el "A/B"
  for shape in 2 3; do
    timeout 60 ncu --kernel-name regex:"matmul_wg_f16_(glu_)?n256" --launch-skip 30 --launch-count 1 \
      --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy \
      /tmp/llm-gpu/test_matmul --bench-wgmma $shape 2>&1 |
      grep -E "matmul_wg|Duration|Throughput|Stall|stall|Warp Cycles|Registers|Achieved Occupancy|Block Limit" | head -24
  done
  el "ncu"
  prompt_profile $m
  scripts/gpu-bench.sh start .rivals
  ;;
w5)
  # Session 33's last call (carry .gpu-q: llm, test-ggml, the vocabulary
  # and test_matmul; .rivals): the warpgroup kernels' checks and the GLU's
  # timing beside the plain product of its rows, the backend's checks
  # (test-ggml cuda::), then on the rival's F16 file alternated pp512 of the
  # defaults and LLM_CUDA_WGMMA_FUSE=0 (two rounds), and a prompt batch's
  # kernels.
  start_call .gpu-q
  timeout 60 /tmp/llm-gpu/test_matmul --wgmma 2>&1 | tail -6
  for shape in 2 3; do timeout 60 /tmp/llm-gpu/test_matmul --bench-wgmma $shape 2>&1; done
  ggml_checks
  f16_model
  ab pp512 "-p 512 -n 0" LLM_CUDA_WGMMA_FUSE=0
  el "A/B"
  prompt_profile $m
  ;;
w6)
  # Session 34's first call (carry .gpu-p: llm, test-gpu, the vocabulary,
  # test_matmul; .rivals): the GLU product's timing forms (act 2: gate and
  # up stored apart), then on the rival's F16 file and our writer's Q4_K
  # file alternated decode (two rounds) under GPU_SESSION_AB_TG beside the
  # defaults: early starts that ask L2 for the next product's first
  # weights while the kernel before it ends.
  start_call .gpu-p
  timeout 60 /tmp/llm-gpu/test_matmul --bench-glu 2>&1
  el "bench-glu"
  f16_model
  host_profile
  tg_ab=${GPU_SESSION_AB_TG-LLM_CUDA_LEAN_EARLY=prefetch=1024 LLM_CUDA_LEAN_EARLY=prefetch=4096 LLM_CUDA_LEAN_EARLY=prefetch=row LLM_CUDA_PDL=all LLM_CUDA_PDL=all+LLM_CUDA_LEAN_EARLY=prefetch=1024}
  # shellcheck disable=SC2086
  ab tg128 "-p 0 -n 128" $tg_ab
  el "F16 A/B"
  our_model Q4_K 7b
  el "Q4_K model written"
  # shellcheck disable=SC2086
  ab tg128 "-p 0 -n 128" $tg_ab | sed 's/^F16/Q4_K/'
  el "Q4_K A/B"
  ;;
w8)
  # Session 34's third call (carry .gpu-r: llm, test-ggml, test-gpu and the
  # vocabulary; .rivals): the backend's checks; where an F16 prompt batch's
  # host time goes; then decode A/B (alternated, two rounds) of the early
  # launches, on the rival's F16 file and our writer's 7B Q4_K, Q4_0, Q8_0
  # and 1B Q4_K files. (As run, it also timed LLM_CUDA_LEAN_BALANCE=1, a
  # split dropped since, and its settings were `all` against the default
  # of then, the products only.)
  start_call .gpu-r
  ggml_checks
  f16_model
  host_profile
  ab tg128 "-p 0 -n 128" LLM_CUDA_PDL=chosen
  el "F16 A/B"
  for spec in Q4_K:7b Q4_0:7b Q8_0:7b Q4_K:1b; do
    our_model ${spec%:*} ${spec#*:}
    ab tg128 "-p 0 -n 128" LLM_CUDA_PDL=chosen | sed "s/^F16/$spec/"
    el "$spec A/B"
  done
  ;;
w9)
  # Session 34's fourth call (carry .gpu-r as w8's, and .rivals): the
  # backend's checks; where an F16 prompt batch's host time goes now;
  # alternated pp512 of every kernel early (the default) against the
  # products only, F16 and Q4_K; F16 decode; then the GPU suite (cut at
  # GPU_SESSION_SUITE_S, 360 s).
  start_call .gpu-r
  ggml_checks
  f16_model
  host_profile
  ab pp512 "-p 512 -n 0" LLM_CUDA_PDL=chosen
  timeout 60 /tmp/llm-gpu/llm bench -m $m -ngl 99 -p 0 -n 128 -r 5 2>&1 | grep -E "^\| [0-9a-z]" | tail -1
  el "F16"
  our_model Q4_K 7b
  ab pp512 "-p 512 -n 0" LLM_CUDA_PDL=chosen | sed 's/^F16/Q4_K/'
  timeout 60 /tmp/llm-gpu/llm bench -m $m -ngl 99 -p 0 -n 128 -r 5 2>&1 | grep -E "^\| [0-9a-z]" | tail -1
  el "Q4_K"
  rm -f $W/models/m-F16.gguf
  GPU_PACK=.gpu-r timeout "${GPU_SESSION_SUITE_S:-360}" scripts/gpu-suite.sh run >"$out/suite.log" 2>&1
  echo "suite rc=$?"
  grep -E "^test |test result|fail|panicked" "$out/suite.log" | grep -v " ok$" | tail -30
  el "suite"
  ;;
w11)
  # After the streamed ranges' fix (carry .gpu-r): the backend's checks,
  # the model tests, then our writer's 7B Q4_K: prompt and decode.
  start_call .gpu-r
  ggml_checks
  export LLM_TEST_MODELS=/tmp/llm-gpu/models LLM_GPU_VOCAB=/tmp/llm-gpu/vocab.gguf LLM_BIN=/tmp/llm-gpu/llm
  timeout 150 /tmp/llm-gpu/test-gpu --test-threads 1 2>&1 | grep -E "^test |test result|panicked|differ" | tail -20
  el "checks"
  our_model Q4_K 7b
  timeout 40 /tmp/llm-gpu/llm bench -m $m -ngl 99 -p 512 -n 128 -r 3 2>&1 | grep -E "^\| [0-9a-z]" | tail -2
  el "bench"
  ;;
w12)
  # Session 35's call (carry .gpu-p: llm, test-gpu, the vocabulary,
  # test_matmul; .rivals): F16's deep products (weights through shared
  # memory) against the register loop on the GPU: test_matmul's F16 checks
  # and its 7B layer timings at each depth, Nsight Compute on a layer's
  # products, alternated F16 decode (two rounds) of LLM_CUDA_F16_DEPTH
  # (GPU_SESSION_AB_TG) and rope inside attention beside the default, then
  # the model tests (test-gpu: every architecture and type against the CPU).
  start_call .gpu-p
  GQ_XS_ONLY=f16 timeout 120 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -3
  timeout 120 /tmp/llm-gpu/test_matmul --bench-f16 2>&1
  el "test_matmul"
  # A layer's four products of the register loop, then at depth 2 (a
  # depth's 120 launches: each product's 15, then 15 layers).
  for skip in 60 300; do
    timeout 60 ncu --kernel-name regex:"matvec1_f16" --launch-skip $skip --launch-count 4 --section SpeedOfLight \
      /tmp/llm-gpu/test_matmul --bench-f16 2>&1 | grep -E "matvec1_f16|Duration|DRAM Throughput" |
      sed 's/  */ /g' | head -12
  done
  el "ncu"
  f16_model
  # shellcheck disable=SC2086
  ab tg128 "-p 0 -n 128" ${GPU_SESSION_AB_TG-LLM_CUDA_F16_DEPTH=0 LLM_CUDA_F16_DEPTH=1 LLM_CUDA_F16_DEPTH=3 LLM_CUDA_FUSED_ROPE=1}
  el "F16 A/B"
  rm -f $m
  export LLM_TEST_MODELS=/tmp/llm-gpu/models LLM_GPU_VOCAB=/tmp/llm-gpu/vocab.gguf LLM_BIN=/tmp/llm-gpu/llm
  timeout 150 /tmp/llm-gpu/test-gpu --test-threads 1 2>&1 | grep -E "^test |test result|panicked|differ" | tail -20
  el "test-gpu"
  ;;
w13)
  # w12 cut to what little device time is left (carry .gpu-p, .rivals):
  # test_matmul's F16 checks and layer timings, then alternated F16 decode
  # of the register loop and depth 1 beside the pack's default.
  start_call .gpu-p
  GQ_XS_ONLY=f16 timeout 120 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -3
  timeout 120 /tmp/llm-gpu/test_matmul --bench-f16 2>&1
  el "test_matmul"
  f16_model
  ab tg128 "-p 0 -n 128" LLM_CUDA_F16_DEPTH=0 LLM_CUDA_F16_DEPTH=1
  el "F16 A/B"
  ;;
w14)
  # Session 36's first call (carry .gpu-p: llm, test-gpu, the vocabulary,
  # test_matmul; .rivals): llama.cpp's builds start in the background; F16's
  # kernel checks and a 7B layer's products at each depth, the split adds
  # at their own (test_matmul --bench-f16), Nsight Compute on the layer's
  # products (register loop, depth 2, depth 3 with the adds at 0), then
  # alternated F16 decode (two rounds) of GPU_SESSION_AB_TG beside the
  # default. The suite (w3) and the side by side (n3) follow on this machine.
  start_call .gpu-p
  scripts/gpu-bench.sh start .rivals >/dev/null
  GQ_XS_ONLY=f16 timeout 120 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -3
  timeout 150 /tmp/llm-gpu/test_matmul --bench-f16 2>&1
  el "test_matmul"
  # A setting's 135 launches: each product's 15, 15 layers, 15 of the one
  # product of a layer's bytes.
  for skip in 60 330 1005; do
    timeout 60 ncu --kernel-name regex:"matvec1_f16" --launch-skip $skip --launch-count 4 --section SpeedOfLight \
      /tmp/llm-gpu/test_matmul --bench-f16 2>&1 | grep -E "matvec1_f16|Duration|DRAM Throughput" |
      sed 's/  */ /g' | head -12
  done
  el "ncu"
  # The rival's F16 file, which its background job writes (then quantizes).
  m=$W/models/m-F16.gguf
  wait_gen 120 2
  el "$(cat $W/gen.log | tail -1)"
  # shellcheck disable=SC2086
  ab tg128 "-p 0 -n 128" ${GPU_SESSION_AB_TG-LLM_CUDA_F16_DEPTH=0 LLM_CUDA_F16_DEPTH=3 LLM_CUDA_F16_SPLIT_DEPTH=3 LLM_CUDA_F16_SPLIT_DEPTH=0 LLM_CUDA_F16_DEPTH=3+LLM_CUDA_F16_SPLIT_DEPTH=0 LLM_CUDA_F16_BLOCKS=2}
  el "F16 A/B"
  scripts/gpu-bench.sh poll | tail -3
  ;;
w21)
  # The whole check in one call (carry .gpu-o: `GPU_PACK=.gpu-o
  # scripts/gpu-suite.sh pack`, test_matmul.xz beside, then `... bundle`):
  # the suite first, then the greedy ids of our writer's 7B and 1B Q4_K
  # (session 39: 7B 47da4c18..., 1B 23ac404d...) and F16's kernel checks.
  t0=$(date +%s)
  nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
  GPU_PACK=.gpu-o timeout "${GPU_SESSION_SUITE_S:-420}" scripts/gpu-suite.sh run >"$out/suite.log" 2>&1
  echo "suite rc=$?"
  grep -E "^test |test result|fail|panicked" "$out/suite.log" | grep -v " ok$" | tail -30
  el "suite"
  for spec in Q4_K:7b Q4_K:1b; do
    our_model ${spec%:*} ${spec#*:}
    ids "$spec" LLM_CUDA_LEAN_EARLY=
  done
  el "ids"
  chmod +x /tmp/llm-gpu/test_matmul
  GQ_XS_ONLY=f16 timeout 100 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -3
  el "test_matmul"
  ;;
w23)
  # Session 40's second machine (carry .gpu-q: test_matmul.xz alone): why
  # F16's split products (the output and down projections, added) run
  # slower than the others: test_matmul --bench-f16-adds (shapes and
  # settings), then Nsight Compute on the default's o+ and down+ and on the
  # GLU and q, k and v (sections below, one launch each, L2 flushed), then
  # where a layer's sequence leaves gaps (nsys, if there).
  t0=$(date +%s)
  nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
  xz -dc .gpu-q/test_matmul.xz >/tmp/test_matmul && chmod +x /tmp/test_matmul
  timeout 120 /tmp/test_matmul --bench-f16-adds 2>&1
  el "adds"
  for what in "deep_split_r1a 3 o+" "deep_split_r1a 43 down+" "deep_piped_swiglu 3 glu" "deep_piped_r1 28 qkv"; do
    set -- $what
    echo "== ncu $3 ($1, launch $2)"
    timeout 100 ncu --kernel-name regex:"$1" --launch-skip "$2" --launch-count 1 --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section SchedulerStats \
      --print-details all /tmp/test_matmul --bench-f16-adds 2>&1 |
      grep -iE "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Cycles Per Issued|Stall|Hit Rate|Mem Busy|Max Bandwidth|Block Limit|Issued Warp|No Eligible|Active Warps Per|Eligible Warps" |
      sed 's/  */ /g' | head -40
    el "ncu $3"
  done
  if command -v nsys >/dev/null; then
    timeout 150 nsys profile -t cuda -o /tmp/f16 --force-overwrite true /tmp/test_matmul --bench-f16 >/dev/null 2>&1
    nsys stats -q --report cuda_gpu_trace --format csv /tmp/f16.nsys-rep 2>/dev/null | grep matvec1 |
      awk -F, '{gsub(/"/, "")} NR > 465 && NR <= 490 {printf "%s start %d dur %d gap %d\n", $NF, $1, $2, $1 - e} {e = $1 + $2}'
    el "nsys"
  else echo "no nsys"; fi
  ;;
w24)
  # Session 40's third machine (carry .gpu-o as w21's, with test_matmul):
  # every F16 product's row groups split over more warps (w23 found q, k and
  # v and the GLU 1.5 to 2 us faster alone split over four): --bench-f16's
  # forced rows and --bench-f16-adds, then alternated decode of our writer's
  # 7B F16 under LLM_CUDA_LEAN_FORCE_SPLIT (two rounds) and its greedy ids.
  start_call .gpu-o
  timeout 150 /tmp/llm-gpu/test_matmul --bench-f16 2>&1
  timeout 100 /tmp/llm-gpu/test_matmul --bench-f16-adds 2>&1
  el "test_matmul"
  our_model F16 7b
  el "model written"
  ab tg128 "-p 0 -n 128" LLM_CUDA_LEAN_FORCE_SPLIT=4 LLM_CUDA_LEAN_FORCE_SPLIT=4+LLM_CUDA_F16_SPLIT_DEPTH=2 LLM_CUDA_LEAN_FORCE_SPLIT=8
  el "F16 A/B"
  for s in LLM_CUDA_LEAN_FORCE_SPLIT= LLM_CUDA_LEAN_FORCE_SPLIT=4 LLM_CUDA_LEAN_FORCE_SPLIT=8; do ids "F16 $s" "$s"; done
  el "ids"
  rm -f "$m"
  # The same for our writer's 7B and 1B Q4_K (the quantised products' split loop).
  for spec in Q4_K:7b Q4_K:1b; do
    our_model ${spec%:*} ${spec#*:}
    ab tg128 "-p 0 -n 128" LLM_CUDA_LEAN_FORCE_SPLIT=2 LLM_CUDA_LEAN_FORCE_SPLIT=4 | sed "s/^F16/$spec/"
    el "$spec A/B"
  done
  # The backend's checks and the synthetic models under split 4 (the suite's
  # core, GPU_SESSION_SPLIT_CHECK=0: none).
  if [ "${GPU_SESSION_SPLIT_CHECK:-1}" = 1 ]; then
    export LLM_CUDA_LEAN_FORCE_SPLIT=4
    ggml_checks
    LLM_GPU_VOCAB=/tmp/llm-gpu/vocab.gguf LLM_BIN=/tmp/llm-gpu/llm timeout 200 /tmp/llm-gpu/test-gpu --test-threads 1 \
      synthetic --nocapture 2>&1 | grep -E "F16|Q4_K|test result|FAIL|panicked" | head -20
    el "split 4 checks"
  fi
  ;;
w25)
  # Session 41, after `gpu-bench.sh start` and w21 on the same machine
  # (meant for an H200, whose HBM is further from a warp's loads in
  # flight; an H100 came): once the rival's F16 file is written,
  # alternated decode of it (two rounds) under the F16 settings the H100
  # chose between in session 40. n9 follows.
  m=$W/models/m-F16.gguf
  wait_gen 60 2
  t0=$(date +%s)
  el "$(tail -1 "$W/gen.log")"
  # shellcheck disable=SC2086
  ab tg128 "-p 0 -n 128" ${GPU_SESSION_AB_TG-LLM_CUDA_F16_SPLIT_DEPTH=3 LLM_CUDA_LEAN_FORCE_SPLIT=2}
  el "F16 A/B"
  scripts/gpu-bench.sh poll | tail -3
  ;;
n9)
  # The issue's whole side by side in one call once llama.cpp is built:
  # n3's entries (prompt and decode), then partial offload, llama.cpp and
  # llm alternating (5 repetitions, two rounds).
  "$0" n3
  hybrid_rounds 2 5
  ;;
w27)
  # A short call (device time nearly spent; carry .gpu-o, no test_matmul):
  # llm alone on our writer's 7B F16 and Q4_K and 1B Q4_K (tg128, -r 10),
  # to set beside an earlier side by side on the same kind; on an H200
  # also F16 at split depth 3 (its HBM wants more bytes in flight),
  # alternated.
  start_call .gpu-o
  for spec in F16:7b Q4_K:7b Q4_K:1b; do
    our_model ${spec%:*} ${spec#*:}
    timeout 60 /tmp/llm-gpu/llm bench -m $m -ngl 99 -p 0 -n 128 -r 10 2>&1 | grep -E "^\| [0-9a-z]" | sed "s/^/$spec /"
    [ "$spec" = F16:7b ] && nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 &&
      ab tg128 "-p 0 -n 128" LLM_CUDA_F16_SPLIT_DEPTH=3
    rm -f $m
    el "$spec"
  done
  ;;
w36)
  # F16 on the GPU at hand without llama.cpp (carry .gpu-o; w35 runs it
  # beside llama.cpp's build): the GPU's peak bandwidth as llm sees it, F16's split depth
  # alternated on our writer's 7B F16 (the default against 2 and 4), and
  # where its decode step goes.
  start_call .gpu-o
  /tmp/llm-gpu/llm devices 2>&1 | tail -1
  our_model F16 7b
  el "gen"
  AB_LABEL=F16:7b ab tg128 "-p 0 -n 128" LLM_CUDA_F16_SPLIT_DEPTH=2 LLM_CUDA_F16_SPLIT_DEPTH=4
  el "ab"
  GPU_PROFILE_MODEL=$m GPU_PROFILE_CACHE=none timeout 100 scripts/gpu-profile.sh F16 7b 2>&1 | head -12
  rm -f $m
  el "profile"
  ;;
w35)
  # Session 44, on an H200 (carry .gpu-o with test_matmul, and .rivals):
  # llama.cpp's build started, then w36 (the bandwidth, F16's split depth
  # alternated, the F16 profile), test_matmul --bench-f16 (its products
  # alone and as a layer, by depth), then the F16 side by side under the
  # fastest setting (n3).
  scripts/gpu-bench.sh start .rivals >/dev/null
  "$0" w36 | tee "$out/w36.txt"
  timeout 80 /tmp/llm-gpu/test_matmul --bench-f16 2>&1 | tail -16
  el "bench-f16"
  # The setting of the fastest A/B row (the sum of its two rounds), for n3.
  best=$(grep '^F16:7b ' "$out/w36.txt" | awk -F'|' '{split($1, a, " "); split($(NF-1), t, " "); s[a[2]] += t[1]}
    END {for (k in s) if (s[k] > m) {m = s[k]; b = k}; print b}')
  echo "best: $best"
  [ "$best" = default ] && best=
  GPU_SESSION_ENV=$best GPU_SESSION_ONLY='^F16' "$0" n3 2>&1 | grep -E "^\| |^==" | tail -6
  el "n3 F16"
  ;;
w34)
  # Prepared in session 43, run in session 44 on an H200 (README), after
  # which the ahead-asking Q6_K kernels were removed (carry .gpu-o): why
  # Q4_K's adds read slowly (a 7B's output projection 1.10 TB/s, its down
  # projection 1.65, where the GLU reads 2.28: 128 blocks, one a
  # multiprocessor, 12% of the warps): where our writer's 7B Q4_K decode
  # step goes by default and with every lean product split over two and
  # four warps, kernel by kernel.
  # Then Q6_K's products asking L2 ahead (LLM_CUDA_Q6K_AHEAD, session 43,
  # checked on the emulator only): test_matmul's checks (carry test_matmul
  # in .gpu-o), and decode alternated with the default on our writer's 7B
  # and 1B Q6_K, with the greedy ids.
  start_call .gpu-o
  our_model Q4_K 7b
  for s in default LLM_CUDA_LEAN_FORCE_SPLIT=2 LLM_CUDA_LEAN_FORCE_SPLIT=4; do
    echo "== $s"
    # shellcheck disable=SC2046
    env $([ $s = default ] || echo $s) GPU_PROFILE_MODEL=$m GPU_PROFILE_CACHE=none timeout 150 \
      scripts/gpu-profile.sh "Q4_K-${s##*=}" 7b 2>&1 | head -10
  done
  rm -f $m
  el "profiles"
  GQ_XS_ONLY=q6_k timeout 60 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -2
  for spec in Q6_K:7b Q6_K:1b; do
    our_model ${spec%:*} ${spec#*:}
    AB_LABEL=$spec ab tg128 "-p 0 -n 128" LLM_CUDA_Q6K_AHEAD=1 LLM_CUDA_Q6K_AHEAD=2 LLM_CUDA_Q6K_AHEAD=4
    ids "$spec default"
    ids "$spec ahead 2" LLM_CUDA_Q6K_AHEAD=2
    rm -f $m
    el "$spec"
  done
  ;;
w33)
  # Session 43's last call (carry .gpu-n: the pack of Q6_K's 16-byte loads,
  # with llm-old the pack before it, and test_matmul): Q6_K's checks on the
  # GPU, llm-old and llm alternated with both's greedy ids on our writer's
  # 7B Q6_K (and Nsight Compute's speed of light on its products), the
  # synthetic models of every architecture and type against the CPU, then
  # the A/B on the 1B Q6_K.
  start_call .gpu-n
  chmod +x /tmp/llm-gpu/llm-old
  for t in q6_k q4_k; do GQ_XS_ONLY=$t timeout 60 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -2; done
  el "test_matmul"
  q6k_ab() {
    local spec=$1
    our_model ${spec%:*} ${spec#*:}
    old_new $spec
    old_new_ids $spec
    [ $spec = Q6_K:7b ] && timeout 90 ncu --graph-profiling node --clock-control none --section SpeedOfLight \
      -k "regex:matvec1_q6_k_lean" --launch-skip 300 --launch-count 4 /tmp/llm-gpu/llm bench -m $m -ngl 99 \
      -p 0 -n 16 -r 1 2>&1 | grep -E "^  matvec1|Duration|DRAM Throughput|L1/TEX Cache"
    rm -f $m
    el "$spec"
  }
  q6k_ab Q6_K:7b
  LLM_GPU_VOCAB=/tmp/llm-gpu/vocab.gguf timeout 150 /tmp/llm-gpu/test-gpu synthetic 2>&1 | grep -E "^test |test result" | tail -4
  el "synthetic"
  q6k_ab Q6_K:1b
  ;;
w32)
  # Session 43's first call (carry .gpu-o as w29's, and .rivals): llama.cpp's
  # builds and models in the background, the lean products' checks on the
  # GPU, then where a decode step of our writer's 7B Q6_K and Q4_K files
  # goes (gpu-profile.sh, warm L2) and Nsight Compute's full sections on a
  # few of their lean products (text under $OUT, a digest here), and the
  # greedy ids. The suite (w21) and the side by side (w30) follow.
  start_call .gpu-o
  chmod +x /tmp/llm-gpu/llm-old
  scripts/gpu-bench.sh start .rivals >/dev/null
  for t in q6_k q4_k q4_0 q8_0; do GQ_XS_ONLY=$t timeout 60 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -2; done
  el "test_matmul"
  for spec in Q6_K:7b Q4_K:7b; do
    ty=${spec%:*}
    our_model $ty ${spec#*:}
    GPU_PROFILE_MODEL=$m GPU_PROFILE_CACHE=none timeout 150 scripts/gpu-profile.sh $ty 7b 2>&1 | head -16
    timeout 150 ncu --graph-profiling node --clock-control none --set full -k "regex:matvec1_${ty,,}_lean" \
      --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" --launch-skip 300 --launch-count 8 /tmp/llm-gpu/llm bench -m $m -ngl 99 -p 0 -n 16 -r 1 \
      >"$out/ncu-$ty.txt" 2>&1
    echo "ncu rc=$?"
    grep -iE "^  matvec1|Duration|DRAM Throughput|Memory Throughput|Issue Slots Busy|Issued Ipc|No Eligible|Warp Cycles Per Issued|stalled_.*[1-9]|Achieved Occupancy|Registers Per" \
      "$out/ncu-$ty.txt" | head -120
    ids "$spec" LLM_CUDA_LEAN_EARLY=
    rm -f $m
    el "$spec"
  done
  # The 1B: where its step goes, and the two fusions that lost on the 7B
  # (the attention's output and the GLU's quantised in the kernel).
  our_model Q4_K 1b
  GPU_PROFILE_MODEL=$m GPU_PROFILE_CACHE=none timeout 150 scripts/gpu-profile.sh Q4_K-1b 1b 2>&1 | head -16
  ab tg128 "-p 0 -n 128" LLM_CUDA_ATT_X16=1 LLM_CUDA_LEAN_FUSE=1 LLM_CUDA_ATT_X16=1+LLM_CUDA_LEAN_FUSE=1
  el "1b"
  ;;
w29)
  # Session 42's first call where machines are scarce (carry .gpu-o:
  # `GPU_PACK=.gpu-o scripts/gpu-suite.sh pack`, test_matmul.xz and
  # llm-old.xz, an earlier pack's llm, beside it, then `... bundle`; and
  # .rivals): llama.cpp's builds and models in the background,
  # the lean products' checks on the GPU, then w21 (the suite, the greedy
  # ids). w30 follows.
  nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
  GPU_PACK=.gpu-o scripts/gpu-suite.sh unpack && chmod +x /tmp/llm-gpu/test_matmul /tmp/llm-gpu/llm-old
  scripts/gpu-bench.sh start .rivals >/dev/null
  for t in q6_k q4_k q4_0 q8_0; do GQ_XS_ONLY=$t timeout 60 /tmp/llm-gpu/test_matmul --xs 2>&1 | tail -2; done
  GPU_SESSION_SUITE_S=${GPU_SESSION_SUITE_S:-380} "$0" w21
  ;;
w30)
  # After w29 on the same machine: llm-old and llm alternated on the
  # rival's 7B and 1B Q4_K_M and our writer's 7B Q6_K, then n9.
  t0=$(date +%s)
  scripts/gpu-bench.sh wait MODELS_READY 100
  for q in Q4_K_M 1B-Q4_K_M; do
    m=$W/models/m-$q.gguf
    old_new m-$q
    el "m-$q"
  done
  our_model Q6_K 7b
  old_new Q6_K:7b
  rm -f $m
  el "Q6_K"
  "$0" n9
  el "n9"
  ;;
w31)
  # Session 42's last call (carry .gpu-f: llm, llm-old and test-gpu only):
  # llm-old and llm alternated (two rounds, tg128, -r 5) and both's greedy
  # ids on our writer's 7B and 1B Q6_K files.
  t0=$(date +%s)
  nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
  GPU_PACK=.gpu-f scripts/gpu-suite.sh unpack && chmod +x /tmp/llm-gpu/llm-old
  for spec in Q6_K:7b Q6_K:1b; do
    our_model ${spec%:*} ${spec#*:}
    old_new $spec
    old_new_ids $spec
    rm -f $m
    el "$spec"
  done
  ;;
w15)
  # After session 36 (carry .gpu-p as w14's, and .rivals): F16's layer
  # products with grids spread evenly (test_matmul --bench-f16), then
  # alternated decode (two rounds, a quiet machine: llama.cpp's builds start
  # only at the end) of LLM_CUDA_LEAN_SPREAD=1 beside the defaults on the
  # rival's F16 file and our writer's 7B Q4_K, Q4_0, Q8_0 and 1B Q4_K. Then
  # the suite (w3, carry .gpu-s) and the side by side (n3) on this machine.
  start_call .gpu-p
  timeout 150 /tmp/llm-gpu/test_matmul --bench-f16 2>&1
  el "test_matmul"
  f16_model
  ab tg128 "-p 0 -n 128" LLM_CUDA_LEAN_SPREAD=1 LLM_CUDA_F16_SPLIT_DEPTH=2+LLM_CUDA_LEAN_SPREAD=1
  el "F16 A/B"
  rm -f $m
  for spec in Q4_K:7b Q4_0:7b Q8_0:7b Q4_K:1b; do
    our_model ${spec%:*} ${spec#*:}
    ab tg128 "-p 0 -n 128" LLM_CUDA_LEAN_SPREAD=1 | sed "s/^F16/$spec/"
    el "$spec A/B"
  done
  scripts/gpu-bench.sh start .rivals >/dev/null
  ;;
w3)
  # The GPU suite on the machine w2 set up (carry .gpu-s: test-ggml.xz
  # alone; llm and test-gpu stay unpacked there).
  GPU_PACK=.gpu-s timeout "${GPU_SESSION_SUITE_S:-420}" scripts/gpu-suite.sh run >"$out/suite.log" 2>&1
  echo "suite rc=$?"
  grep -E "^test |test result|fail|panicked" "$out/suite.log" | grep -v " ok$" | tail -30
  scripts/gpu-bench.sh poll | tail -3
  ;;
n3)
  # Settings the A/B chose go in GPU_SESSION_ENV ("A=1 B=2"), for llm only.
  scripts/gpu-bench.sh wait READY 120
  mkdir -p "$results"
  # shellcheck disable=SC2086
  env ${GPU_SESSION_ENV:-} GPU_BENCH_ENGINES="rival llm" OUT=$results GPU_BENCH_TIMEOUT=80 \
    scripts/gpu-bench.sh run /tmp/llm-gpu/llm 10 "${ENTRIES[@]}" 2>&1 | tee "$out/bench.log"
  tar -C "$results" -czf "$out/results.tgz" .
  ;;
w40)
  # Session 46's first call (carry .gpu-o: `GPU_PACK=.gpu-o
  # scripts/gpu-suite.sh pack`, test_ops.xz and llm-old.xz, HEAD's llm
  # before the change, beside it, then `... bundle`; and .rivals):
  # llama.cpp's builds and models in the background; decode attention's
  # checks on the GPU (test_ops: fused against rope_store then attention_vec,
  # bit for bit), the backend's; then llm-old and llm alternated, with both's
  # greedy ids, on our writer's 7B and 1B Q4_K and the rival's F16 file.
  # (Session 46's pack also timed each without attention, by a switch that
  # was never committed.) w41 (n3 for F16) follows.
  start_call .gpu-o
  chmod +x /tmp/llm-gpu/test_ops /tmp/llm-gpu/llm-old
  scripts/gpu-bench.sh start .rivals >/dev/null
  timeout 60 /tmp/llm-gpu/test_ops 2>&1 | grep -v "^ok  " | tail -20
  el "test_ops"
  ggml_checks
  for spec in Q4_K:7b Q4_K:1b; do
    our_model ${spec%:*} ${spec#*:}
    old_new_ids "$spec"
    old_new "$spec"
    el "$spec"
  done
  wait_gen 60 5
  m=$W/models/m-F16.gguf
  el "gen $(tail -1 $W/gen.log)"
  old_new_ids F16
  old_new F16
  el "F16"
  scripts/gpu-bench.sh poll 2>&1 | tail -3
  ;;
w41)
  # After w40 on the same machine: F16's decode beside llama.cpp's, 10
  # repetitions (n3), then Q4_K_M's if time allows.
  GPU_SESSION_ONLY='^F16|^Q4_K_M:-ngl 99 -p 512' GPU_SESSION_TG_ONLY=1 "$0" n3
  ;;
w42)
  # Session 46: decode attention's checks on the GPU in full, the kernels
  # before the change (test_ops_old.xz, built from ea17158's) beside the new
  # (test_ops.xz), then llm-old and llm alternated, no build beside them, on
  # our writer's 7B Q4_K and F16 (carry .gpu-o as w40;
  # GPU_SESSION_SPECS="Q4_K:7b" where device time is short).
  start_call .gpu-o
  chmod +x /tmp/llm-gpu/test_ops /tmp/llm-gpu/test_ops_old /tmp/llm-gpu/llm-old
  for t in test_ops_old test_ops; do
    timeout 60 /tmp/llm-gpu/$t 2>&1 | grep -v "^ok  " | sed "s/^/$t: /" | tail -20
  done
  el "test_ops"
  for spec in ${GPU_SESSION_SPECS:-Q4_K:7b F16:7b}; do
    our_model ${spec%:*} ${spec#*:}
    old_new_ids "$spec"
    old_new "$spec"
    rm -f $m
    el "$spec"
  done
  ;;
*) sed -n 2,55p "$0" >&2; exit 2 ;;
esac
