/**
 * Where the local stack keeps its files. Everything it writes lives under `.data/` (git-ignored),
 * except the Python virtual environment in `.venv/`.
 */
import path from 'node:path';

/** The repository root: this file sits in `<root>/infra/`. */
export const REPO_ROOT = path.resolve(__dirname, '..');

export const DATA_DIR = path.join(REPO_ROOT, '.data');
export const LOG_DIR = path.join(DATA_DIR, 'logs');
export const TEMPORAL_DATA_DIR = path.join(DATA_DIR, 'temporal');
/** Temporal's SQLite store: workflow histories survive a stack restart. */
export const TEMPORAL_DB_FILE = path.join(TEMPORAL_DATA_DIR, 'temporal.db');
export const S3_DATA_DIR = path.join(DATA_DIR, 's3');
export const STACK_FILE = path.join(DATA_DIR, 'stack.json');
export const STACK_LOCK_FILE = path.join(DATA_DIR, 'stack.lock');
export const STACK_ENV_FILE = path.join(DATA_DIR, 'stack.env');
/** Written by infra/judge-process.ts: the pid of the judge server it started. */
export const JUDGE_SERVER_PID_FILE = path.join(DATA_DIR, 'judge-server.pid');

export const VENV_DIR = path.join(REPO_ROOT, '.venv');
export const REQUIREMENTS_FILE = path.join(REPO_ROOT, 'infra', 'requirements.txt');
export const REQUIREMENTS_LOCK_FILE = path.join(REPO_ROOT, 'infra', 'requirements.lock');
export const JUDGE_REQUIREMENTS_FILE = path.join(REPO_ROOT, 'infra', 'judge', 'requirements.txt');
export const TRAINER_DIR = path.join(REPO_ROOT, 'trainer');
export const TRAINER_PYPROJECT = path.join(TRAINER_DIR, 'pyproject.toml');

export const TSX_BIN = path.join(REPO_ROOT, 'node_modules', '.bin', 'tsx');
export const VITEST_BIN = path.join(REPO_ROOT, 'node_modules', '.bin', 'vitest');

export function logFileFor(service: string): string {
  return path.join(LOG_DIR, `${service}.log`);
}
