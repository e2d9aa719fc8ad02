#!/bin/sh
# llm-server, self-extracting build (made by scripts/compile.sh). After this script, at byte
# payload_offset, lies a gzip'd tar of the Deno runtime, the bundled server (server.js) and the engine
# library. The first start unpacks it once into ${XDG_CACHE_HOME:-~/.cache}/llm-server/<version>-<hash>/
# (a private temporary folder renamed into place, so concurrent first starts are safe and a folder
# that exists is always complete); every start then execs the runtime there. This file is never modified.
set -eu
version='@VERSION@'
build='@BUILD@'
payload_hash='@HASH@'
payload_offset=@OFFSET@

die() { echo "llm-server: $*" >&2; exit 1; }

self=$(readlink -f -- "$0") || die "cannot resolve the path of this executable ($0)"
if [ -n "${XDG_CACHE_HOME:-}" ] && [ "${XDG_CACHE_HOME#/}" != "$XDG_CACHE_HOME" ]; then
  root="$XDG_CACHE_HOME/llm-server"
elif [ -n "${HOME:-}" ] && [ "${HOME#/}" != "$HOME" ]; then
  root="$HOME/.cache/llm-server"
else
  die "cannot choose a cache folder: set XDG_CACHE_HOME or HOME to an absolute path"
fi
dir="$root/$version-$payload_hash"

payload() { tail -c "+$((payload_offset + 1))" "$self"; }

if [ ! -x "$dir/deno" ]; then
  umask 077
  mkdir -p "$root" || die "cannot create the cache folder $root (set XDG_CACHE_HOME to a writable folder)"
  tmp=$(mktemp -d "$root/.unpack.XXXXXXXX") || die "cannot write to the cache folder $root"
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT TERM
  if command -v sha256sum >/dev/null 2>&1; then
    actual=$(payload | sha256sum | cut -c1-16)
    [ "$actual" = "$payload_hash" ] || die "this file is damaged or truncated (payload hash $actual, expected $payload_hash)"
  fi
  payload | gzip -dc | tar -xf - -C "$tmp" --no-same-owner || die "cannot unpack into $tmp"
  [ -x "$tmp/deno" ] && [ -f "$tmp/server.js" ] && [ -f "$tmp/libllm_engine.so" ] || die "the payload is incomplete"
  # rename(2) is atomic; losing the race to another first start leaves its complete copy in place.
  if ! mv -T -- "$tmp" "$dir" 2>/dev/null; then
    [ -x "$dir/deno" ] || die "cannot move the unpacked files to $dir"
    rm -rf "$tmp"
  fi
  trap - EXIT INT TERM
fi

export LLM_ENGINE_LIB="$dir/libllm_engine.so"
export LLM_SERVER_EXE="$self"
export LLM_SERVER_BUILD="$build"
export DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
export DENO_DIR="${DENO_DIR:-$root/deno}"
# --no-config/--no-lock: a deno.json or lock file in the caller's folder must not change the program.
exec "$dir/deno" run --allow-all --quiet --unstable-no-legacy-abort --no-config --no-lock --no-remote --no-npm --cached-only \
  "$dir/server.js" "$@"
