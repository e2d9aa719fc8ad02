#!/usr/bin/env bash
# Speed on the same GGUF file, same threads: llama.cpp (node-llama-cpp prebuilt) vs our server.
#   scripts/bench_gguf.sh [FILE.gguf]        (default: the default model, fetched once)
# Env: THREADS (2), PROMPT_LEN (512), GEN (64), BATCH (16), REPEATS (3), OUR_PORT (30124), SKIP_LLAMACPP.
# Ours is timed through /generate with random input_ids: prefill = prompt_len / time of a 1-token request;
# decode = generated tokens / (time of a GEN-token request − its 1-token prefill time), batch B = B concurrent.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
GGUF="${1:-$("$REPO/scripts/fetch_default_model.sh")}"
THREADS="${THREADS:-2}" PROMPT_LEN="${PROMPT_LEN:-512}" GEN="${GEN:-64}" BATCH="${BATCH:-16}" REPEATS="${REPEATS:-3}"
OUR_PORT="${OUR_PORT:-30124}"
log() { echo "[bench_gguf] $*" >&2; }
LC_JSON='{}'
if [[ -z "${SKIP_LLAMACPP:-}" ]]; then
  if [[ ! -d "$REPO/.tools/llamacpp/node_modules/node-llama-cpp" ]]; then
    mkdir -p "$REPO/.tools/llamacpp"
    (cd "$REPO/.tools/llamacpp" && { [[ -f package.json ]] || echo '{"private":true,"type":"module"}' > package.json; } &&
      npm install --no-audit --no-fund --ignore-scripts --omit=optional node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 >&2)
  fi
  log "llama.cpp on $GGUF"
  LC_JSON="$(node scripts/bench_llamacpp.mjs --model "$GGUF" --threads "$THREADS" --prompt-len "$PROMPT_LEN" \
    --gen "$GEN" --batch "1,$BATCH" --repeats "$REPEATS" --json | tail -1)"
fi
source "$REPO/scripts/lib/setup.sh"
ensure_deno; ensure_engine; ensure_npm_deps
"$DENO" run -A main.ts --model-path "$GGUF" --threads "$THREADS" --port "$OUR_PORT" --skip-server-warmup \
  --disable-radix-cache > /tmp/bench_gguf_server.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$OUR_PORT/health" >/dev/null 2>&1 && break; sleep 1; done
python3 - "$OUR_PORT" "$PROMPT_LEN" "$GEN" "$BATCH" "$REPEATS" "$LC_JSON" "$THREADS" "$GGUF" <<'PY'
import json, random, statistics, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
port, plen, gen, batch, reps = map(int, sys.argv[1:6]); lc = json.loads(sys.argv[6]); threads = sys.argv[7]
def gen_req(ids, n):
    body = {"input_ids": ids, "sampling_params": {"temperature": 0, "max_new_tokens": n, "ignore_eos": True}}
    t = time.time()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/generate", json.dumps(body).encode(),
                                                  {"Content-Type": "application/json"})).read()
    return time.time() - t
rnd = random.Random(1)
ids = lambda n: [rnd.randrange(100, 49000) for _ in range(n)]
gen_req(ids(16), 4)  # warm-up
prefill = statistics.median(plen / gen_req(ids(plen), 1) for _ in range(reps))
def decode(b):
    rates = []
    for _ in range(reps):
        prompts = [ids(32) for _ in range(b)]
        with ThreadPoolExecutor(b) as ex:
            t = time.time(); list(ex.map(lambda p: gen_req(p, gen), prompts)); full = time.time() - t
        with ThreadPoolExecutor(b) as ex:
            t = time.time(); list(ex.map(lambda p: gen_req(p, 1), [ids(32) for _ in range(b)])); first = time.time() - t
        rates.append(b * (gen - 1) / max(full - first, 1e-9))
    return statistics.median(rates)
ours = {"prefill": prefill, "b1": decode(1), f"b{batch}": decode(batch)}
theirs = {"prefill": lc.get("prefill_tok_s"), "b1": (lc.get("decode_tok_s") or {}).get("1"), f"b{batch}": (lc.get("decode_tok_s") or {}).get(str(batch))}
import os
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"\n{sys.argv[8].split('/')[-1]}, {threads} threads, {cpu}, load average {os.getloadavg()[0]:.1f}, median of {reps}")
print(f"| | llama.cpp tok/s | ours tok/s | ours/llama.cpp |\n|---|---|---|---|")
for k, name in [("prefill", f"prefill {plen}"), ("b1", "decode batch 1"), (f"b{batch}", f"decode batch {batch}")]:
    a, b = theirs[k], ours[k]
    print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f}x |" if a else f"| {name} | n/a | {b:.1f} | n/a |")
PY
