#!/usr/bin/env bash
# The KV cache table of the README: for each cache type, the KL divergence
# of a model's next-token distributions against its own f16 cache on the
# shipped text, the cache's memory at the model's full context, and decode
# speed at a depth against f16. Usage: scripts/kv-cache-table.sh MODEL
# [CHUNKS] [DEPTH] [TOKENS] (defaults 4 chunks of 512, tg128 at depth 4096).
# Needs a release build of llm (`cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 chunks=${2:-4} depth=${3:-4096} n=${4:-128}
llm=target/release/llm
text=tests/data/gpl-3.0.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$llm" perplexity "$model" -f "$text" -c 512 --chunks "$chunks" \
  --kl-divergence-base "$work/base.kld" >/dev/null 2>&1
echo "| cache | KLD vs f16 | same top token | memory at full context | tg$n @ d$depth | vs f16 |"
echo "|---|---|---|---|---|---|"
f16_speed=
for t in f16 bf16 q8_0 q5_1 q5_0 q4_1 q4_0 iq4_nl; do
  kl=$("$llm" perplexity "$model" -f "$text" -c 512 --chunks "$chunks" -ctk "$t" -ctv "$t" \
    --kl-divergence-base "$work/base.kld" --kl-divergence 2>&1)
  kld=$(grep -m1 "^Mean *KLD" <<<"$kl" | awk -F: '{print $2}' | xargs)
  top=$(grep -m1 "^Same top" <<<"$kl" | awk -F: '{print $2}' | xargs)
  mem=$("$llm" info "$model" -c 0 -ctk "$t" -ctv "$t" | grep -m1 "KV cache" | sed 's/.*KV cache *//')
  tg=$("$llm" bench -m "$model" -p 0 -n "$n" -d "$depth" -r 2 -ctk "$t" -ctv "$t" -o json \
    | python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)[0]["avg_ts"])')
  f16_speed=${f16_speed:-$tg}
  ratio=$(python3 -c "print('%.2fx' % ($tg / $f16_speed))")
  echo "| $t | $kld | $top | $mem | $tg | $ratio |"
done
