# Sourced: build the llama.cpp oracle (llama-cpp-sys-2) for this machine's CPU,
# as llama.cpp's own users build it, without compiling our crates for it.
# llama-cpp-sys-2 forwards GGML_* variables to cmake; without them ggml gets
# only the x86-64 baseline and is a slow, unfair rival.
if [ -r /proc/cpuinfo ] && [ "$(uname -m)" = x86_64 ]; then
  _flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  _has() { case "$_flags" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
  _has avx && export GGML_AVX=ON
  _has avx2 && export GGML_AVX2=ON
  _has fma && export GGML_FMA=ON
  _has f16c && export GGML_F16C=ON
  _has bmi2 && export GGML_BMI2=ON
  _has avx512f && export GGML_AVX512=ON
  _has avx512_vnni && export GGML_AVX512_VNNI=ON
  _has avx512vbmi && export GGML_AVX512_VBMI=ON
  _has avx512_bf16 && export GGML_AVX512_BF16=ON
  _has avx_vnni && export GGML_AVX_VNNI=ON
  unset _flags
  unset -f _has
fi
# llama.cpp's OpenMP threads spin after their work; in-process races need them asleep.
export OMP_WAIT_POLICY=PASSIVE
