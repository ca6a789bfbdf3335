# syntax=docker/dockerfile:1
# valuedrift cpu worker: workflow tasks plus judge, store, metrics and report activities
# (VALUEDRIFT_WORKER_ROLE=cpu). Build from the repository root:
#   docker build -f deploy/docker/worker-cpu.Dockerfile -t valuedrift/worker-cpu:dev .
# The trainer's Python (CPU torch) is included because `hf:` datasets are exported by the trainer's
# `export-dataset` command on the cpu queue (activities/datasets.ts). No secret is baked in: every
# credential comes from the environment at run time (activities/env.ts).

# --- npm packages (production only) ---
FROM node:20.20.2-bookworm-slim AS node-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- the trainer's Python environment, CPU-only torch ---
FROM python:3.11.14-slim-bookworm AS trainer-env
WORKDIR /app
COPY infra/requirements.lock infra/requirements.lock
COPY trainer/ trainer/
COPY specs/lineage.schema.json specs/lineage.schema.json
# torch comes from PyTorch's CPU wheel index (no CUDA libraries); every version is constrained by the
# project's lock (torch==2.15.0 matches 2.15.0+cpu). Editable: the trainer finds
# specs/lineage.schema.json relative to its checkout (trainer/valuedrift_trainer/config.py).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir \
      --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
      -c infra/requirements.lock -e ./trainer

# --- runtime ---
FROM python:3.11.14-slim-bookworm
COPY --from=node-deps /usr/local/bin/node /usr/local/bin/node
RUN groupadd --gid 10001 valuedrift \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/valuedrift --shell /usr/sbin/nologin valuedrift \
 && mkdir -p /var/lib/valuedrift/work \
 && chown -R 10001:10001 /var/lib/valuedrift
WORKDIR /app
COPY --from=trainer-env /opt/venv /opt/venv
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
    VALUEDRIFT_WORKER_ROLE=cpu \
    VALUEDRIFT_PYTHON=/opt/venv/bin/python \
    VALUEDRIFT_WORK_DIR=/var/lib/valuedrift/work \
    VALUEDRIFT_DATA_ROOT=/app
USER 10001:10001
# tsx runs the TypeScript directly, as `npm run worker` does (without its npm-deps check: the
# packages were installed above from the same package-lock.json).
ENTRYPOINT ["/app/node_modules/.bin/tsx", "worker/main.ts"]
