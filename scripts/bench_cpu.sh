#!/usr/bin/env bash
# CPU benchmark of record: memory bandwidth, llama.cpp (F16 GGUF, same shape, random weights) and our engine
# (Llama-3.2-1B shape, --load-format dummy --dtype bfloat16), printed as one table with ratios.
#
#   scripts/bench_cpu.sh                    # everything
#   SKIP_LLAMACPP=1 scripts/bench_cpu.sh    # ours + bandwidth only
#   OUR_BASE_URL=http://127.0.0.1:30000 scripts/bench_cpu.sh   # use a server that is already running
#
# Settings (env): THREADS (2), PROMPT_LEN (512), GEN (64), DECODE_CONTEXT (32), BATCH (16), REPEATS (3),
# MODEL_NAME (llama-3.2-1b-instruct), LLM_MODELS_DIR (../shared/models), BENCH_DIR (.cache/bench), OUR_PORT (30123), SERVER_START_TIMEOUT (600).
# REPEATS rounds, each one llama.cpp run (after its untimed warm-up) and then ours (one prefill request, one
# batch-1 request, one BATCH-wide run), so that each ratio compares figures from the same minute. Every figure
# is the median over the rounds, and every ratio the median of the rounds' own ratios. The decode ceiling is
# given twice: from the best pass of the bandwidth probe, and from its median pass over 10 s a page kind
# (probed before and after the rounds). Decode tok/s is batch x 1000 / the median inter-token latency on both
# sides (bench_serving's median ITL for ours, the gaps between a sequence's tokens for llama.cpp); llama.cpp's
# wall-time rate is printed beside it.
set -euo pipefail
export MODEL_NAME

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
THREADS="${THREADS:-2}"
PROMPT_LEN="${PROMPT_LEN:-512}"
GEN="${GEN:-64}"
DECODE_CONTEXT="${DECODE_CONTEXT:-32}"
BATCH="${BATCH:-16}"
REPEATS="${REPEATS:-3}"
MODELS_DIR="${LLM_MODELS_DIR:-$REPO/../shared/models}"
MODEL_NAME="${MODEL_NAME:-llama-3.2-1b-instruct}"
MODEL_DIR="$MODELS_DIR/$MODEL_NAME"
BENCH_DIR="${BENCH_DIR:-$REPO/.cache/bench}"
OUR_PORT="${OUR_PORT:-30123}"
SERVER_START_TIMEOUT="${SERVER_START_TIMEOUT:-600}"
mkdir -p "$BENCH_DIR"

if [[ -x "$REPO/.tools/node_modules/.bin/deno" ]]; then DENO="$REPO/.tools/node_modules/.bin/deno"
elif [[ -x /work/main/.tools/node_modules/.bin/deno ]]; then DENO=/work/main/.tools/node_modules/.bin/deno
else DENO="$(command -v deno || true)"; fi
[[ -n "$DENO" ]] || { echo "deno not found: npm install --prefix .tools deno@2" >&2; exit 2; }
[[ -f "$MODEL_DIR/config.json" ]] || { echo "model config not found: $MODEL_DIR (set LLM_MODELS_DIR)" >&2; exit 2; }

log() { echo "[bench_cpu] $*" >&2; }
json_field() { node -e 'const v=JSON.parse(require("fs").readFileSync(0,"utf8"));const r=process.argv[1].split(".").reduce((o,k)=>o==null?o:o[k],v);console.log(r==null?"":r)' "$1"; }

# Bytes of weights one decode step reads (bf16/f16: 2 bytes a parameter; tied embeddings read once).
WEIGHT_BYTES="$(node -e '
const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const h = c.hidden_size, hd = c.head_dim ?? h / c.num_attention_heads;
const q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd, f = c.intermediate_size;
const layer = h * (q + 2 * kv) + q * h + 3 * h * f + 2 * h;
const params = c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + c.num_hidden_layers * layer + h;
console.log(params * 2);' "$MODEL_DIR/config.json")"

# 1. Memory bandwidth.
log "memory bandwidth probe"
cargo build --release --example membw -q
# Ten seconds on each kind of page: the best pass is the memory at its best moment, the median pass the speed
# that dominated those seconds (the Zen 4 VM reads ~35 GB/s or ~60, switching every few seconds). Probed again
# at the end.
probe() { RAYON_NUM_THREADS="$THREADS" "$REPO/target/release/examples/membw" --size-mib 1024 --passes 7 --seconds 10 --weight-bytes "$WEIGHT_BYTES" --json; }
MEMBW_JSON="$(probe)"
BANDWIDTH="$(echo "$MEMBW_JSON" | json_field read_gb_s)"
CEILING="$(echo "$MEMBW_JSON" | json_field decode_ceiling_tok_s)"
SMALL_PAGES="$(echo "$MEMBW_JSON" | json_field small_pages_gb_s)"
MEDIAN_BW_START="$(echo "$MEMBW_JSON" | json_field median_gb_s)"

# 2. Rounds: llama.cpp, then ours, back to back, REPEATS times. The machines' memory bandwidth moves by a
# third from one minute to the next, so each ratio is taken within its round and the table gives the
# median of the rounds' ratios (and of each side's figures).
GGUF="$BENCH_DIR/$MODEL_NAME-f16-random.gguf"
if [[ -z "${SKIP_LLAMACPP:-}" ]]; then
  if [[ ! -s "$GGUF" ]]; then
    WRITER="$REPO/scripts/gguf_writer.ts"
    [[ -f "$WRITER" ]] || WRITER="$REPO/scripts/bench/gguf_f16.ts"
    log "writing $GGUF with $WRITER"
    "$DENO" run -A "$WRITER" --config "$MODEL_DIR/config.json" --tokenizer "$MODEL_DIR/tokenizer.json" \
      --type f16 --seed 1 --out "$GGUF" >&2
  fi
  if [[ ! -d "$REPO/.tools/llamacpp/node_modules/node-llama-cpp" ]]; then
    log "installing node-llama-cpp prebuilt CPU binaries (no build, no download at run time)"
    mkdir -p "$REPO/.tools/llamacpp"
    (cd "$REPO/.tools/llamacpp" && { [[ -f package.json ]] || echo '{"private":true,"type":"module"}' > package.json; } &&
      npm install --no-audit --no-fund --ignore-scripts --omit=optional node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 >&2)
  fi
fi

# Our engine, through its HTTP server (idle while llama.cpp runs: no pass, no busy worker).
SERVER_PID=""
# Stops the server we started (if any) and waits for it, so what runs next has the machine to itself.
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; fi
}
trap cleanup EXIT
BASE_URL="${OUR_BASE_URL:-}"
if [[ -z "$BASE_URL" ]]; then
  BASE_URL="http://127.0.0.1:$OUR_PORT"
  log "starting our server (log: $BENCH_DIR/server.log)"
  cargo build --release -p llm-engine -q
  "$DENO" run -A main.ts --model-path "$MODEL_DIR" --load-format dummy --dtype bfloat16 --threads "$THREADS" \
    --port "$OUR_PORT" > "$BENCH_DIR/server.log" 2>&1 &
  SERVER_PID=$!
  for ((waited = 0; waited < SERVER_START_TIMEOUT; waited++)); do
    curl -sf "$BASE_URL/health" > /dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { log "server exited; see $BENCH_DIR/server.log"; SERVER_PID=""; break; }
    sleep 1
  done
fi
SERVING=""
curl -sf "$BASE_URL/health" > /dev/null 2>&1 && SERVING=1 || log "our server is not answering at $BASE_URL; its column stays empty"
# Prints the run's JSONL record ({"completed":0} when it failed) and keeps it in ours.jsonl.
bench() {
  local record="$BENCH_DIR/last_run.jsonl"
  rm -f "$record"
  "$DENO" run -A scripts/bench_serving.ts --base-url "$BASE_URL" --backend sglang --tokenizer "$MODEL_DIR" \
    --dataset-name random --random-range-ratio 1 --output-file "$record" "$@" >&2 || true
  if [[ -s "$record" ]]; then cat "$record" >> "$BENCH_DIR/ours.jsonl"; tail -1 "$record"; else echo '{"completed":0}'; fi
}
LC_PREFILLS=() LC_B1S=() LC_BNS=() LC_B1_WALLS=() LC_BN_WALLS=() OUR_PREFILLS=() OUR_B1S=() OUR_BNS=()
for ((round = 1; round <= REPEATS; round++)); do
  if [[ -z "${SKIP_LLAMACPP:-}" ]]; then
    log "round $round/$REPEATS, llama.cpp: prefill $PROMPT_LEN, decode batch 1 and $BATCH"
    LC_JSON="$(node scripts/bench_llamacpp.mjs --model "$GGUF" --threads "$THREADS" --prompt-len "$PROMPT_LEN" \
      --gen "$GEN" --batch "1,$BATCH" --decode-context "$DECODE_CONTEXT" --repeats 1 --json | tail -1)"
    echo "$LC_JSON" >> "$BENCH_DIR/llamacpp.jsonl"
    LC_PREFILLS+=("$(echo "$LC_JSON" | json_field prefill_tok_s)")
    # Decode from the median inter-token latency, the statistic ours is given (bench_serving's median
    # ITL); the wall-time rate (tokens / seconds) is kept beside it.
    LC_B1S+=("$(echo "$LC_JSON" | json_field decode_itl_tok_s.1)")
    LC_BNS+=("$(echo "$LC_JSON" | json_field "decode_itl_tok_s.$BATCH")")
    LC_B1_WALLS+=("$(echo "$LC_JSON" | json_field decode_tok_s.1)")
    LC_BN_WALLS+=("$(echo "$LC_JSON" | json_field "decode_tok_s.$BATCH")")
  fi
  if [[ -n "$SERVING" ]]; then
    log "round $round/$REPEATS, ours: prefill $PROMPT_LEN (TTFT of a 1-token request), decode batch 1 and $BATCH"
    REC="$(bench --max-concurrency 1 --num-prompts 1 --seed "$round" --random-input-len "$PROMPT_LEN" --random-output-len 1)"
    OUR_PREFILLS+=("$(node -e 'const r=JSON.parse(process.argv[1]);console.log(r.completed?process.argv[2]/(r.median_ttft_ms/1000):"")' "$REC" "$PROMPT_LEN")")
    REC="$(bench --max-concurrency 1 --num-prompts 1 --seed "$round" --random-input-len "$DECODE_CONTEXT" --random-output-len "$GEN")"
    OUR_B1S+=("$(node -e 'const r=JSON.parse(process.argv[1]);console.log(r.completed?1000/r.median_itl_ms:"")' "$REC")")
    REC="$(bench --max-concurrency "$BATCH" --num-prompts "$BATCH" --seed "$round" --random-input-len "$DECODE_CONTEXT" --random-output-len "$GEN")"
    # Steady-state decode: every ITL gap is one step producing a token for each running sequence.
    OUR_BNS+=("$(node -e 'const r=JSON.parse(process.argv[1]);console.log(r.completed===+process.argv[2]?process.argv[2]*1000/r.median_itl_ms:"")' "$REC" "$BATCH")")
  fi
done
# One comma-separated list per figure (a round per entry, empty where it failed) for the table.
csv() { local IFS=,; echo "$*"; }

# 4. Our engine alone (bench_one_batch, after the server is gone): the batch-1 step against the time to read
# that step's own weights once, read right after each step (same pages, same minute: the fresh probe
# buffer's rate varies by run on these VMs).
cleanup
log "ours, engine only: batch-1 step vs reading its own weights"
cargo build --release --example bench_one_batch -q
ENGINE_JSON="$("$REPO/target/release/examples/bench_one_batch" --model-path "$MODEL_DIR" --load-format dummy --dtype bfloat16 \
  --input-len "$DECODE_CONTEXT" --output-len "$GEN" --batch-size 1 --threads "$THREADS" --json | tail -1)"
echo "$ENGINE_JSON" >> "$BENCH_DIR/engine.jsonl"
STEP_MS="$(echo "$ENGINE_JSON" | json_field batch1_step_ms)"
READ_MS="$(echo "$ENGINE_JSON" | json_field weights_read_ms)"
READ_GBS="$(echo "$ENGINE_JSON" | json_field weights_read_gb_s)"

log "memory bandwidth probe, again"
MEDIAN_BW_END="$(probe | json_field median_gb_s)"

# 5. One table: medians over the rounds; the ratio columns are medians of the rounds' own ratios.
node - "$BANDWIDTH" "$CEILING" "$WEIGHT_BYTES" "$BATCH" "$PROMPT_LEN" "$THREADS" \
  "$(csv "${LC_PREFILLS[@]}")" "$(csv "${LC_B1S[@]}")" "$(csv "${LC_BNS[@]}")" \
  "$(csv "${OUR_PREFILLS[@]}")" "$(csv "${OUR_B1S[@]}")" "$(csv "${OUR_BNS[@]}")" "$SMALL_PAGES" "$STEP_MS" "$READ_MS" "$READ_GBS" \
  "$MEDIAN_BW_START" "$MEDIAN_BW_END" "$(csv "${LC_B1_WALLS[@]}")" "$(csv "${LC_BN_WALLS[@]}")" <<'JS'
const [bw, ceiling, bytes, batch, promptLen, threads, lcP, lc1, lcN, ourP, our1, ourN, small, stepMs, readMs, readGbs, medStart, medEnd, lc1Wall, lcNWall] = process.argv.slice(2);
const num = (s) => (s === "" || s === undefined ? null : Number(s));
const list = (s) => (s ?? "").split(",").map((v) => (v === "" ? null : Number(v)));
const median = (vs) => {
  const v = vs.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const cell = (v) => (v === null ? "n/a" : v.toFixed(2));
const x = (v) => (v === null ? "n/a" : v.toFixed(2) + "x");
// Ratio of two same-round lists, round by round (null where either side is missing).
const perRound = (a, b) => a.map((v, i) => (v === null || b[i] === null || b[i] === undefined || b[i] === 0 ? null : v / b[i]));
console.log(`\nCPU benchmark: ${process.env.MODEL_NAME ?? "llama-3.2-1b-instruct"} shape, ${threads} threads, weights ${(bytes / 1e9).toFixed(3)} GB (16-bit)`);
console.log(`memory read bandwidth ${Number(bw).toFixed(2)} GB/s (best pass, 2 MiB and 4 KiB pages; 4 KiB pages alone ` +
  `${Number(small).toFixed(2)} GB/s, ceiling ${(Number(small) * 1e9 / bytes).toFixed(2)}) -> decode ceiling ${Number(ceiling).toFixed(2)} tok/s at batch 1`);
const [lcPs, lc1s, lcNs, ourPs, our1s, ourNs] = [lcP, lc1, lcN, ourP, our1, ourN].map(list);
const rows = [
  [`prefill ${promptLen} (tok/s)`, lcPs, ourPs, null],
  ["decode batch 1 (tok/s)", lc1s, our1s, num(ceiling)],
  [`decode batch ${batch} (tok/s)`, lcNs, ourNs, null],
];
const line = (cols) => cols.map((c, i) => (i === 0 ? c.padEnd(26) : c.padStart(12))).join(" ");
console.log(line(["", "llama.cpp", "ours", "ours/llama", "ours/ceiling"]));
for (const [name, lc, ours, ceil] of rows) {
  const ourMedian = median(ours);
  console.log(line([name, cell(median(lc)), cell(ourMedian), x(median(perRound(ours, lc))), ceil === null ? "" : x(ourMedian === null ? null : ourMedian / ceil)]));
}
// The memory of these VMs switches between two speeds every few seconds: the median passes say which one
// dominated the ten seconds before and after the rounds, where the best pass above may be one fast spell.
const ceilingOf = (gbs) => ((Number(gbs) * 1e9) / bytes).toFixed(2);
console.log(`median-pass read (10 s a page kind) before / after the rounds: ${Number(medStart).toFixed(2)} / ` +
  `${Number(medEnd).toFixed(2)} GB/s -> decode ceiling ${ceilingOf(medStart)} / ${ceilingOf(medEnd)} tok/s at batch 1`);
console.log(`ours, batch ${batch} over batch 1: ${x(median(perRound(ourNs, our1s)))} (median of the rounds' ratios)`);
// Decode above is 1000 / median ITL on both sides; llama.cpp's wall-time rate (tokens / seconds of the
// whole run) also counts the tokens of fast memory spells, which the median leaves out.
const [lc1Walls, lcNWalls] = [lc1Wall, lcNWall].map(list);
console.log(`llama.cpp decode from wall time (tokens / run seconds): batch 1 ${cell(median(lc1Walls))} tok/s ` +
  `(ours/llama ${x(median(perRound(our1s, lc1Walls)))}), batch ${batch} ${cell(median(lcNWalls))} tok/s ` +
  `(ours/llama ${x(median(perRound(ourNs, lcNWalls)))})`);
console.log("per round (llama.cpp / ours): " + our1s.map((_, i) =>
  `${i + 1}: prefill ${cell(lcPs[i] ?? null)} / ${cell(ourPs[i])}, b1 ${cell(lc1s[i] ?? null)} / ${cell(our1s[i])}, b${batch} ${cell(lcNs[i] ?? null)} / ${cell(ourNs[i])}`).join("; "));
if (num(stepMs) !== null && num(readMs) !== null) {
  console.log(`engine only, batch 1: step ${Number(stepMs).toFixed(1)} ms; reading the step's own weights once ` +
    `${Number(readMs).toFixed(1)} ms (${Number(readGbs).toFixed(2)} GB/s) -> step at ${x(num(readMs) / num(stepMs))} of that ceiling`);
}
JS
