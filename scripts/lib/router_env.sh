# Installs SGLang's router (PyPI `sglang-router`) into the project-local venv .venv-router/, idempotently.
# Sourced, not run: defines ROUTER_VENV, ROUTER_PY and ensure_router. Pin the version so that the
# worker calls listed in docs/scale-out.md stay the ones the router really makes.

ROUTER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SGLANG_ROUTER_VERSION="${SGLANG_ROUTER_VERSION:-0.3.2}"
ROUTER_VENV="$ROUTER_ROOT/.venv-router"
ROUTER_PY="$ROUTER_VENV/bin/python"

ensure_router() {
  if [ -x "$ROUTER_PY" ] && "$ROUTER_PY" - "$SGLANG_ROUTER_VERSION" 2>/dev/null <<'PY'
import sys, importlib.metadata as m
sys.exit(0 if m.version("sglang-router") == sys.argv[1] else 1)
PY
  then return 0; fi
  local python
  python="$(command -v python3 || true)"
  if [ -z "$python" ]; then echo "error: python3 is required to install sglang-router" >&2; return 1; fi
  echo "[setup] installing sglang-router $SGLANG_ROUTER_VERSION into .venv-router/" >&2
  if [ ! -x "$ROUTER_PY" ]; then
    "$python" -m venv "$ROUTER_VENV" >&2 || { echo "error: python3 -m venv failed (apt-get install python3-venv)" >&2; return 1; }
  fi
  "$ROUTER_PY" -m pip install --quiet --disable-pip-version-check "sglang-router==$SGLANG_ROUTER_VERSION" >&2 \
    || { echo "error: pip could not install sglang-router==$SGLANG_ROUTER_VERSION" >&2; return 1; }
}
