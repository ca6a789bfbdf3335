#!/usr/bin/env bash
# GPU check for a GPU machine without network (the device tool runs it over a copy of the repo).
# Installs the carried wheels (.whl/, see the device README) and the trainer package into a private
# site dir when torch/transformers/trl are missing, then runs infra/gpu/check.py. Results:
# $OUT/gpu-check.json and the printed table (tokens/s per stage, generation time).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import torch, transformers, trl, gguf' 2>/dev/null; then
  [ -d .whl ] || { echo "gpu check: torch/transformers/trl missing and no .whl folder carried" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PY" infra/gpu/check.py "$@"
