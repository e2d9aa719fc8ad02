# Shared set-up for scripts/llm-server and scripts/test: installs what the project needs, idempotently.
# Deno comes from npm into ./.tools (no JSR, no GitHub downloads); the engine is a cargo release build.
# Sourced, not run: defines ROOT, DENO and the ensure_* functions.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DENO_VERSION="2.9.6"
DENO="$ROOT/.tools/node_modules/.bin/deno"
export DENO_NO_UPDATE_CHECK=1

log_setup() { echo "[setup] $*" >&2; }

ensure_deno() {
  if [ -x "$DENO" ] && "$DENO" --version 2>/dev/null | grep -q "^deno $DENO_VERSION"; then return 0; fi
  command -v npm >/dev/null || { echo "error: npm is required to install Deno (apt-get install npm)" >&2; exit 1; }
  log_setup "installing Deno $DENO_VERSION from npm into .tools/"
  mkdir -p "$ROOT/.tools"
  npm install --prefix "$ROOT/.tools" --no-audit --no-fund --loglevel=error "deno@$DENO_VERSION" >&2
  "$DENO" --version >/dev/null
}

ensure_cargo() {
  if command -v cargo >/dev/null; then return 0; fi
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
  echo "error: cargo (Rust) is required to build the engine" >&2; exit 1
}

# Builds target/release/libllm_engine.so; a no-op when nothing changed.
ensure_engine() {
  ensure_cargo
  if [ -n "${LLM_ENGINE_LIB:-}" ]; then return 0; fi
  (cd "$ROOT" && cargo build --release --quiet -p llm-engine >&2) || { echo "error: engine build failed" >&2; exit 1; }
}

# npm packages named in deno.json, cached in ./node_modules.
ensure_npm_deps() {
  (cd "$ROOT" && "$DENO" install --quiet >&2 2>/dev/null) || (cd "$ROOT" && "$DENO" install >&2)
}

# llama.cpp as a peer for tests and benchmarks: node-llama-cpp's prebuilt CPU library from npm,
# never built from source (--ignore-scripts), in ./.tools/llamacpp.
LLAMACPP_DIR="$ROOT/.tools/llamacpp"
ensure_llamacpp() {
  if [ -f "$LLAMACPP_DIR/node_modules/node-llama-cpp/dist/index.js" ] && [ -d "$LLAMACPP_DIR/node_modules/@node-llama-cpp/linux-x64" ]; then return 0; fi
  log_setup "installing node-llama-cpp (prebuilt llama.cpp) from npm into .tools/llamacpp"
  mkdir -p "$LLAMACPP_DIR"
  (npm install --prefix "$LLAMACPP_DIR" --no-audit --no-fund --loglevel=error --ignore-scripts --omit=optional \
     node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 >&2)
}
