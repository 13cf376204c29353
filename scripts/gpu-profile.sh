#!/usr/bin/env bash
# Where a decode step's time goes on the GPU machine, kernel by kernel:
# Nsight Compute times each kernel of a few decode steps (graph nodes one
# by one, clocks as they run) and this sums them by kernel name per token,
# beside the step's wall time from llm bench. Run there after
# `scripts/gpu-suite.sh run` has unpacked llm and the test binary:
#
#   scripts/gpu-profile.sh TYPE [SHAPE]     e.g. F16, Q4_K; SHAPE 7b (default) or 1b
#
# GPU_PROFILE_MODEL=FILE profiles that file instead (the rival's Q4_K_M
# mixes: TYPE then only names the output). GPU_PROFILE_CACHE=none keeps L2 warm between kernels, as a decode step
# runs them (ncu flushes it before each by default, which overstates the
# small kernels). GPU_PROFILE_ARGS sets the profiled run's bench arguments
# (default "-p 0 -n 64 -r 1"; a prompt batch: "-p 512 -n 0 -r 2" with
# GPU_PROFILE_SKIP=600 GPU_PROFILE_KERNELS=700 for a 7B).
# Output under $OUT: profile-TYPE.csv (ncu's raw rows) and a summary on stdout.
set -uo pipefail
ty=$1 shape=${2:-7b}
w=/tmp/llm-gpu
out=${OUT:-/tmp/gpu-out}
m=${GPU_PROFILE_MODEL:-$w/models/$shape-$ty.gguf}
mkdir -p $w/models
[ -f "$m" ] || LLM_GPU_VOCAB=$w/vocab.gguf LLM_WRITE_MODEL=$m LLM_WRITE_TYPE=$ty LLM_WRITE_SHAPE=$shape \
  $w/test-gpu --ignored write_a_bench_model >/dev/null 2>&1
timeout 120 $w/llm bench -m "$m" -ngl 99 -p 0 -n 128 -r 3 2>&1 | grep -E "^\| "
# Kernels of one decode step: skip the load, the first steps and warm-up.
timeout 400 ncu --graph-profiling node --clock-control none --cache-control ${GPU_PROFILE_CACHE:-all} --csv --page raw \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum \
  --launch-skip ${GPU_PROFILE_SKIP:-2000} --launch-count ${GPU_PROFILE_KERNELS:-900} \
  $w/llm bench -m "$m" -ngl 99 ${GPU_PROFILE_ARGS:--p 0 -n 64 -r 1} >"$out/profile-$ty.csv" 2>"$out/profile-$ty.err"
echo "ncu rc=$?"
layers=$([ "$shape" = 1b ] && echo 16 || echo 32)
python3 - "$out/profile-$ty.csv" "$layers" <<'PY'
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
cols, units = rows[head], rows[head + 1]
k, t, b = cols.index("Kernel Name"), cols.index("gpu__time_duration.sum"), cols.index("dram__bytes_read.sum")
scale = {"nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9,
         "byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}
st, sb = scale.get(units[t], 1), scale.get(units[b], 1)
data = [r for r in rows[head + 2:] if len(r) == len(cols)]
by = collections.defaultdict(lambda: [0, 0.0, 0.0])
for r in data:
    e = by[r[k].split("(")[0]]
    e[0] += 1
    e[1] += float(r[t].replace(",", "")) * st
    e[2] += float(r[b].replace(",", "")) * sb
# A decode step runs one attention kernel a layer.
steps = sum(v[0] for n, v in by.items() if "attention" in n) / float(sys.argv[2])
total = sum(v[1] for v in by.values())
print(f"{len(data)} kernels over {steps:.2f} steps; kernel time {total / steps / 1e3:.1f} us a step, {sum(v[2] for v in by.values()) / steps / 1e6:.0f} MB read")
for name, (n, ns, nb) in sorted(by.items(), key=lambda kv: -kv[1][1]):
    print(f"{name[:44]:44} {n / steps:6.1f}/step {ns / steps / 1e3:8.1f} us/step {ns / n / 1e3:7.2f} us each {nb / ns if ns else 0:7.0f} GB/s")
PY
