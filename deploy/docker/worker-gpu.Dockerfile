# syntax=docker/dockerfile:1
# valuedrift gpu worker: training and generation (VALUEDRIFT_WORKER_ROLE=gpu). The TypeScript worker
# supervises `python -m valuedrift_trainer` (torch, transformers, TRL, accelerate from
# trainer/pyproject.toml, pinned by infra/requirements.lock) and vLLM for generation.
# Build from the repository root:
#   docker build -f deploy/docker/worker-gpu.Dockerfile -t valuedrift/worker-gpu:dev .
#   docker build ... --build-arg VLLM_REQUIREMENT=vllm==<version pinning torch 2.15.0> .
# Run with GPUs: `docker run --gpus all ...` (NVIDIA Container Toolkit) or the compose/k8s files.
# No secret is baked in: HF_TOKEN, AWS and Temporal credentials come from the environment at run time.

# --- npm packages (production only) ---
FROM node:20.20.2-bookworm-slim AS node-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- uv, the installer the project's bootstrap uses (infra/python.ts pins uv 0.13.9) ---
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# --- the trainer's Python environment (CUDA wheels) ---
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04 AS trainer-env
COPY --from=uv /uv /usr/local/bin/uv
# Python 3.11 (the lock was made on 3.11; Ubuntu 24.04 ships 3.12) as a standalone build under /opt.
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
WORKDIR /app
COPY infra/requirements.lock infra/requirements.lock
COPY trainer/ trainer/
COPY specs/lineage.schema.json specs/lineage.schema.json
# vLLM's wheels pin torch exactly (trainer/pyproject.toml): the resolver must find a vLLM release whose
# torch pin agrees with the lock's torch==2.15.0, or the build stops naming the conflict. Pin it with
# --build-arg once known.
ARG VLLM_REQUIREMENT=vllm
RUN uv python install 3.11.14 \
 && uv venv --python 3.11.14 /opt/venv \
 && VIRTUAL_ENV=/opt/venv uv pip install --no-cache -c infra/requirements.lock -e ./trainer "${VLLM_REQUIREMENT}"

# --- runtime ---
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04
# Triton (torch.compile, vLLM kernels) compiles small launchers with the system C compiler at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node-deps /usr/local/bin/node /usr/local/bin/node
COPY --from=trainer-env /opt/python /opt/python
COPY --from=trainer-env /opt/venv /opt/venv
RUN groupadd --gid 10001 valuedrift \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/valuedrift --shell /usr/sbin/nologin valuedrift \
 && mkdir -p /var/lib/valuedrift/work /var/lib/valuedrift/hf \
 && chown -R 10001:10001 /var/lib/valuedrift
WORKDIR /app
COPY --from=node-deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY common/ common/
COPY activities/ activities/
COPY workflows/ workflows/
COPY worker/ worker/
COPY specs/ specs/
COPY data/ data/
COPY trainer/ trainer/
ENV NODE_ENV=production \
    VALUEDRIFT_WORKER_ROLE=gpu \
    VALUEDRIFT_PYTHON=/opt/venv/bin/python \
    VALUEDRIFT_WORK_DIR=/var/lib/valuedrift/work \
    VALUEDRIFT_DATA_ROOT=/app \
    HF_HOME=/var/lib/valuedrift/hf \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
ENTRYPOINT ["/app/node_modules/.bin/tsx", "worker/main.ts"]
