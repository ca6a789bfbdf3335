#!/usr/bin/env bash
# GPU check for a GPU machine without network (the device tool runs it over a copy of the repo).
# Prepare here first: `.venv/bin/python infra/gpu/prepare.py` fills .gpu/ (wheels the device image lacks,
# SmolLM2's tokenizer); then run `bash infra/gpu/check.sh` there with carry [".gpu"]. The wheels go into
# a private site dir ahead of the image's packages; check.py verifies their requirements before any
# GPU work, runs the sections (train, generation, fsdp, generation-256; `--sections` picks some) and
# writes $OUT/gpu-check.json after each, and a line per section (tokens/s, losses matching after the fsdp
# resume, the vLLM/transformers generation ratio). Arguments are passed on to check.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
CARRY=${VALUEDRIFT_GPU_CARRY:-$PWD/.gpu}   # what prepare.py wrote (--out); another folder to rehearse here
SITE=${VALUEDRIFT_GPU_SITE:-/tmp/vd-gpu-site}
ARGS=()
if [ -d "$CARRY/whl" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$CARRY"/whl/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  ARGS+=(--carried-site "$SITE")
elif ! "$PY" -c 'import torch, transformers, trl, datasets' 2>/dev/null; then
  echo "gpu check: torch/transformers/trl/datasets missing and no .gpu/whl carried (run infra/gpu/prepare.py here)" >&2
  exit 2
fi
if [ -d "$CARRY/tokenizer" ]; then ARGS+=(--tokenizer "$CARRY/tokenizer"); fi
export PYTHONPATH=$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PY" infra/gpu/check.py "${ARGS[@]}" "$@"
