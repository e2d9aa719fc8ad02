#!/usr/bin/env bash
# Builds ./llm-server: one executable holding the server and the engine library, runnable with no Deno,
# no Rust and no network (`deno task compile`).
#
#   scripts/compile.sh [-o OUTPUT] [--entry FILE]
#
# With DENORT_BIN (Deno's `denort` runtime for this platform) it runs `deno compile` and embeds the engine
# library (--include); the program writes it to its cache folder on first start. Without it (an air-gapped
# host: `deno compile` would download denort, and no npm package provides it) it makes the equivalent
# self-extracting file from the same parts: scripts/compile/launcher.sh followed by a gzip'd tar of the Deno
# runtime from npm, `deno bundle` output with the npm packages inlined, and the engine library.
#
# Environment: DENORT_BIN; LLM_ENGINE_LIB (a prebuilt library to ship instead of building
# target/release/libllm_engine.so); LLM_SERVER_BUILD (CPU or CUDA, shown by --version; default CPU);
# LLM_SERVER_GZIP_LEVEL (1-9, default 6: 1 builds faster, 9 is smaller).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/setup.sh"

output="$ROOT/llm-server"
entry="$ROOT/main.ts"
while [ $# -gt 0 ]; do
  case "$1" in
    -o|--output) [ $# -ge 2 ] || { echo "error: $1 needs a path" >&2; exit 2; }; output="$2"; shift 2;;
    --entry) [ $# -ge 2 ] || { echo "error: $1 needs a file" >&2; exit 2; }; entry="$2"; shift 2;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2;;
  esac
done
[ -f "$entry" ] || { echo "error: entry point $entry does not exist" >&2; exit 1; }
entry="$(cd "$(dirname "$entry")" && pwd)/$(basename "$entry")"
case "$output" in /*) ;; *) output="$PWD/$output";; esac

build="${LLM_SERVER_BUILD:-CPU}"
case "$build" in CPU|CUDA) ;; *) echo "error: LLM_SERVER_BUILD must be CPU or CUDA, not '$build'" >&2; exit 2;; esac
level="${LLM_SERVER_GZIP_LEVEL:-6}"
case "$level" in [1-9]) ;; *) echo "error: LLM_SERVER_GZIP_LEVEL must be 1-9, not '$level'" >&2; exit 2;; esac
version=$(sed -n 's/^export const VERSION = "\([^"]*\)";.*/\1/p' "$ROOT/server/version.ts")
[ -n "$version" ] || { echo "error: no VERSION in server/version.ts" >&2; exit 1; }

log() { echo "[compile] $*" >&2; }

ensure_deno
built_library="$ROOT/target/release/libllm_engine.so"
if [ -n "${LLM_ENGINE_LIB:-}" ]; then
  library="$LLM_ENGINE_LIB"
else
  ensure_engine
  library="$built_library"
fi
[ -f "$library" ] || { echo "error: engine library $library does not exist" >&2; exit 1; }
ensure_npm_deps
cd "$ROOT"

# A new file is made beside the output and renamed over it: a running ./llm-server is never rewritten.
partial="$output.partial.$$"
trap 'rm -f "$partial"' EXIT

if [ -n "${DENORT_BIN:-}" ]; then
  [ -x "$DENORT_BIN" ] || { echo "error: DENORT_BIN=$DENORT_BIN is not an executable file" >&2; exit 1; }
  # server/cli/embedded_engine.ts reads the library at this path inside the executable.
  if [ "$(readlink -f "$library")" != "$(readlink -f "$built_library")" ]; then
    echo "error: with DENORT_BIN the shipped library must be $built_library (LLM_ENGINE_LIB=$library)" >&2; exit 1
  fi
  [ "$build" = CPU ] || log "note: deno compile builds report the build from LLM_SERVER_BUILD at run time"
  log "deno compile with DENORT_BIN=$DENORT_BIN"
  DENORT_BIN="$DENORT_BIN" "$DENO" compile --allow-all --quiet --unstable-no-legacy-abort --no-check \
    --include "target/release/libllm_engine.so" --output "$partial" "$entry"
else
  stage="$ROOT/target/llm-server-compile"
  rm -rf "$stage"; mkdir -p "$stage/payload"
  runtime=$("$DENO" eval 'console.log(Deno.execPath())')
  log "bundling $(basename "$entry") with its npm packages"
  "$DENO" bundle --quiet --platform deno --packages bundle --output "$stage/payload/server.js" "$entry"
  cp "$runtime" "$stage/payload/deno"
  cp "$library" "$stage/payload/libllm_engine.so"
  chmod 0755 "$stage/payload/deno" "$stage/payload/libllm_engine.so"; chmod 0644 "$stage/payload/server.js"
  log "packing the Deno runtime ($("$DENO" --version | head -1)), server.js and the engine library (gzip -$level)"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage/payload" \
    -cf - deno server.js libllm_engine.so | gzip -n "-$level" > "$stage/payload.tar.gz"
  hash=$(sha256sum "$stage/payload.tar.gz" | cut -c1-16)
  # The payload offset is the launcher's own size, which depends on the digits written into it:
  # render with a fixed-width placeholder, then substitute the same number of characters.
  render() { sed -e "s/@VERSION@/$version/" -e "s/@BUILD@/$build/" -e "s/@HASH@/$hash/" \
    -e "s/@OFFSET@/$1/" "$ROOT/scripts/compile/launcher.sh"; }
  placeholder="000000000000"
  size=$(render "$placeholder" | wc -c)
  offset=$(printf '%-12s' "$size")
  render "$offset" > "$partial"
  [ "$(wc -c < "$partial")" -eq "$size" ] || { echo "error: launcher size changed while rendering" >&2; exit 1; }
  cat "$stage/payload.tar.gz" >> "$partial"
  rm -rf "$stage"
fi

chmod 0755 "$partial"
mv -f "$partial" "$output"
trap - EXIT
log "wrote $output ($(du -h "$output" | cut -f1), llm-server $version, build $build)"
