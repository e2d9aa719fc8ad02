#!/usr/bin/env bash
# Serving-overhead benchmark: stories260K (compute is negligible), many concurrent streaming requests
# through HTTP. Starts the server, runs scripts/bench_serving.ts, prints tok/s and the CPU each side used.
#
#   scripts/bench_overhead.sh
#   CONCURRENCY=64 NUM_PROMPTS=256 OUTPUT_LEN=256 scripts/bench_overhead.sh
#   SERVER_ARGS="--stream-interval 4" scripts/bench_overhead.sh
#
# Settings (env): CONCURRENCY (64), NUM_PROMPTS (256), INPUT_LEN (32), OUTPUT_LEN (256), PORT (30177),
# MODEL_NAME (stories260K), LLM_MODELS_DIR (../shared/models), SERVER_ARGS (extra server flags),
# BACKEND (sglang | sglang-oai), SERVER_START_TIMEOUT (120), BENCH_SERVING (the client script, to compare
# clients against the same server; scripts/bench_serving.ts).
# The client shares the machine's cores with the server, so both CPU figures are printed: the server's
# share is what the serving stack costs per token.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CONCURRENCY="${CONCURRENCY:-64}"
NUM_PROMPTS="${NUM_PROMPTS:-256}"
INPUT_LEN="${INPUT_LEN:-32}"
OUTPUT_LEN="${OUTPUT_LEN:-256}"
PORT="${PORT:-30177}"
BACKEND="${BACKEND:-sglang}"
MODELS_DIR="${LLM_MODELS_DIR:-$REPO/../shared/models}"
MODEL_DIR="$MODELS_DIR/${MODEL_NAME:-stories260K}"
SERVER_START_TIMEOUT="${SERVER_START_TIMEOUT:-120}"
BENCH_SERVING="${BENCH_SERVING:-$REPO/scripts/bench_serving.ts}"
WORK="$(mktemp -d)"
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

log() { echo "[bench_overhead] $*" >&2; }
# utime + stime of one process in clock ticks (fields 14 and 15 of /proc/PID/stat, after the "(comm)").
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# The same for the engine's own threads (scheduler and compute pool, named llm-*): the rest is Deno (HTTP, JS).
engine_ticks() {
  local sum=0 t
  for t in /proc/"$1"/task/*; do
    [[ "$(cat "$t/comm" 2>/dev/null)" == llm-* ]] && sum=$((sum + $(cpu_ticks "${t#/proc/}" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
TICKS="$(getconf CLK_TCK)"

# shellcheck disable=SC2086
"$REPO/scripts/llm-server" --model-path "$MODEL_DIR" --port "$PORT" ${SERVER_ARGS:-} >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
source "$REPO/scripts/lib/setup.sh"
for ((i = 0; i < SERVER_START_TIMEOUT * 4; i++)); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; log "server exited"; exit 1; }
  sleep 0.25
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { cat "$WORK/server.log" >&2; log "server not healthy"; exit 1; }

bench() {
  "$DENO" run -A "$BENCH_SERVING" --base-url "http://127.0.0.1:$PORT" --backend "$BACKEND" \
    --dataset-name random --random-input-len "$INPUT_LEN" --random-output-len "$OUTPUT_LEN" --random-range-ratio 1 \
    --num-prompts "$1" --max-concurrency "$CONCURRENCY" --output-file "$WORK/bench.jsonl" "${@:2}"
}
log "warm-up"
bench "$CONCURRENCY" >/dev/null 2>&1 || { cat "$WORK/server.log" >&2; log "warm-up failed"; exit 1; }
rm -f "$WORK/bench.jsonl"

server_before="$(cpu_ticks "$SERVER_PID")"
engine_before="$(engine_ticks "$SERVER_PID")"
start_ns="$(date +%s%N)"
/usr/bin/time -f "%U %S" -o "$WORK/client.time" bash -c "$(declare -f bench); DENO='$DENO' REPO='$REPO' \
  BENCH_SERVING='$BENCH_SERVING' \
  PORT='$PORT' BACKEND='$BACKEND' INPUT_LEN='$INPUT_LEN' OUTPUT_LEN='$OUTPUT_LEN' CONCURRENCY='$CONCURRENCY' \
  WORK='$WORK' bench '$NUM_PROMPTS'" | tee "$WORK/bench.out"
end_ns="$(date +%s%N)"
server_after="$(cpu_ticks "$SERVER_PID")"
engine_after="$(engine_ticks "$SERVER_PID")"

node -e '
const [jsonl, clientTime, serverTicks, engineTicks, ticks, wallNs] = process.argv.slice(1);
const r = JSON.parse(require("fs").readFileSync(jsonl, "utf8").trim().split("\n").pop());
const [cu, cs] = require("fs").readFileSync(clientTime, "utf8").trim().split(/\s+/).map(Number);
const server = Number(serverTicks) / Number(ticks), engine = Number(engineTicks) / Number(ticks), client = cu + cs, wall = Number(wallNs) / 1e9;
const toks = r.total_output_tokens;
const row = (k, v) => console.log(k.padEnd(40) + v);
console.log("=".repeat(20) + " Serving overhead " + "=".repeat(20));
row("Completed requests:", r.completed);
row("Output tokens:", toks);
row("Benchmark duration (s):", r.duration.toFixed(2));
row("Output token throughput (tok/s):", r.output_throughput.toFixed(0));
row("Server CPU (s, user+sys):", server.toFixed(2));
row("Client CPU (s, user+sys, incl. start):", client.toFixed(2));
row("  of which engine threads (s):", engine.toFixed(2));
row("  of which Deno: HTTP, JS (s):", (server - engine).toFixed(2));
row("Server CPU per 1k tokens (ms):", (1e6 * server / toks).toFixed(1));
row("  Deno CPU per 1k tokens (ms):", (1e6 * (server - engine) / toks).toFixed(1));
row("  Engine CPU per 1k tokens (ms):", (1e6 * engine / toks).toFixed(1));
row("Server tok/s per busy core:", (toks / server).toFixed(0));
row("Cores busy, server + client:", ((server + client) / wall).toFixed(2));
' "$WORK/bench.jsonl" "$WORK/client.time" "$((server_after - server_before))" \
  "$((engine_after - engine_before))" "$TICKS" "$((end_ns - start_ns))"
