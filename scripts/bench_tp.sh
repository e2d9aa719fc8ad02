#!/usr/bin/env bash
# Decode speed per tensor-parallel size, through the real server: for each --tp-size it starts
# ./scripts/llm-server on the model, sends one warm-up and then RUNS greedy /generate requests of
# OUT new tokens (ignore_eos), and prints the median decode tok/s with the ratio to the first size.
# Usage: scripts/bench_tp.sh [MODEL_DIR] [TP_SIZES...]   (env: OUT=64 RUNS=3 EXTRA="--load-format dummy --dtype bfloat16")
# On a CPU host the ranks share the cores (each gets threads / tp_size), so this measures the cost of the
# split (collectives, smaller GEMMs), not a speed-up; on a multi-GPU host add EXTRA="--tp-comm nccl".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${1:-$ROOT/../shared/models/llama-3.2-1b-instruct}"
shift || true
if [ $# -gt 0 ]; then SIZES=("$@"); else SIZES=(1 2); fi
OUT="${OUT:-64}"; RUNS="${RUNS:-3}"; EXTRA="${EXTRA:---load-format dummy --dtype bfloat16}"
PORT=$((20000 + RANDOM % 10000))
printf "%-8s %-16s %-10s\n" "tp_size" "decode tok/s" "vs first"
base=""
for tp in "${SIZES[@]}"; do
  log="$(mktemp)"
  # shellcheck disable=SC2086
  "$ROOT/scripts/llm-server" --model-path "$MODEL" --port "$PORT" --tp-size "$tp" --skip-server-warmup $EXTRA >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "server with tp $tp exited:"; tail -5 "$log"; exit 1; }
    sleep 0.5
  done
  body="{\"text\": \"The quick brown fox\", \"sampling_params\": {\"temperature\": 0, \"max_new_tokens\": $OUT, \"ignore_eos\": true}}"
  curl -sf "http://127.0.0.1:$PORT/generate" -H 'Content-Type: application/json' -d "$body" >/dev/null
  rates=()
  for _ in $(seq 1 "$RUNS"); do
    t0=$(date +%s.%N)
    curl -sf "http://127.0.0.1:$PORT/generate" -H 'Content-Type: application/json' -d "$body" >/dev/null
    t1=$(date +%s.%N)
    rates+=("$(python3 -c "print(f'{$OUT / ($t1 - $t0):.2f}')")")
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$log"
  med=$(printf "%s\n" "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}')
  [ -z "$base" ] && base="$med"
  printf "%-8s %-16s %-10s\n" "$tp" "$med" "$(python3 -c "print(f'{$med / $base:.2f}x')")"
done
