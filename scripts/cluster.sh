#!/usr/bin/env bash
# One-command local data-parallel cluster: N llm-server workers behind SGLang's router.
#   ./scripts/cluster.sh --model-path DIR [--workers 3] [--port 30000] [--worker-base-port 31001]
#                        [--policy cache_aware|round_robin|power_of_two|random] [--host 127.0.0.1]
#                        [-- extra worker arguments, e.g. --max-total-tokens 8192]
# Clients talk to the router on --port; worker i listens on worker-base-port + i. Logs go to
# .cache/cluster/{router,worker-PORT}.log. Ctrl-C (or SIGTERM) stops the router and every worker.
# The router (PyPI sglang-router) is installed on first use into .venv-router/.
# LLM_SERVER_CMD replaces the worker command (default ./scripts/llm-server), e.g. to run the mock worker.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/lib/router_env.sh"

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

model_path="" workers=3 port=30000 base_port=31001 policy="cache_aware" host="127.0.0.1"
worker_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model-path) model_path="${2:?--model-path needs a value}"; shift 2;;
    --workers) workers="${2:?--workers needs a value}"; shift 2;;
    --port) port="${2:?--port needs a value}"; shift 2;;
    --worker-base-port) base_port="${2:?--worker-base-port needs a value}"; shift 2;;
    --policy) policy="${2:?--policy needs a value}"; shift 2;;
    --host) host="${2:?--host needs a value}"; shift 2;;
    -h|--help) usage; exit 0;;
    --) shift; worker_args=("$@"); break;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2;;
  esac
done
[ -n "$model_path" ] || { echo "error: --model-path is required (see --help)" >&2; exit 2; }
[ -d "$model_path" ] || { echo "error: --model-path '$model_path' is not a directory" >&2; exit 2; }
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || { echo "error: --workers must be a positive integer, got '$workers'" >&2; exit 2; }
case "$policy" in cache_aware|round_robin|power_of_two|random) ;;
  *) echo "error: --policy must be cache_aware, round_robin, power_of_two or random, got '$policy'" >&2; exit 2;; esac
model_path="$(cd "$model_path" && pwd)"  # the router reads the tokenizer from the path the workers report

ensure_router
log_dir="$ROOT/.cache/cluster"
mkdir -p "$log_dir"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_healthy() { # $1: url; $2: seconds; $3: pid
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$3" 2>/dev/null || return 1
    curl -sf -o /dev/null "$1/health" && return 0
    sleep 0.5
  done
  return 1
}

read -ra worker_cmd <<<"${LLM_SERVER_CMD:-$ROOT/scripts/llm-server}"
urls=()
for ((i = 0; i < workers; i++)); do
  wport=$((base_port + i))
  log="$log_dir/worker-$wport.log"
  "${worker_cmd[@]}" --model-path "$model_path" --host 127.0.0.1 --port "$wport" "${worker_args[@]}" >"$log" 2>&1 &
  pids+=($!)
  urls+=("http://127.0.0.1:$wport")
  # The first worker may build the engine; let it finish before the others start building too.
  if [ "$i" -eq 0 ]; then
    wait_healthy "${urls[0]}" 600 "${pids[0]}" || { echo "error: worker ${urls[0]} did not become healthy; see $log" >&2; tail -20 "$log" >&2; exit 1; }
  fi
done
for ((i = 1; i < workers; i++)); do
  wait_healthy "${urls[$i]}" 300 "${pids[$i]}" || { echo "error: worker ${urls[$i]} did not become healthy; see $log_dir/worker-$((base_port + i)).log" >&2; exit 1; }
done
echo "[cluster] $workers workers healthy: ${urls[*]}" >&2

# Health every 5 s and a 10 s circuit-breaker pause, so a dead worker drops out and a restarted one
# returns in seconds (the router's defaults are 60 s each).
"$ROUTER_PY" -m sglang_router.launch_router --host "$host" --port "$port" --policy "$policy" \
  --worker-urls "${urls[@]}" --health-check-interval-secs 5 --cb-timeout-duration-secs 10 \
  >"$log_dir/router.log" 2>&1 &
pids+=($!)
wait_healthy "http://127.0.0.1:$port" 60 "${pids[-1]}" || { echo "error: router did not start; see $log_dir/router.log" >&2; tail -20 "$log_dir/router.log" >&2; exit 1; }
echo "[cluster] router ($policy) on http://$host:$port; logs in $log_dir; Ctrl-C stops everything" >&2

# Stay up until any process dies (then stop the rest) or we are told to stop.
wait -n "${pids[@]}" || true
echo "[cluster] a process exited; stopping the cluster" >&2
exit 1
