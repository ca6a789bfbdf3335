/**
 * Worker environment: where secrets and endpoints live (never in workflow inputs or histories).
 * Parsed with zod so a missing or malformed variable fails the worker at start with its name.
 */
import { z } from 'zod';
import * as path from 'node:path';

const Env = z.object({
  TEMPORAL_ADDRESS: z.string().default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  TEMPORAL_UI_URL: z.string().default('http://127.0.0.1:8233'),
  TEMPORAL_TLS_CERT: z.string().optional(),
  TEMPORAL_TLS_KEY: z.string().optional(),
  TEMPORAL_API_KEY: z.string().optional(),
  VALUEDRIFT_S3_ENDPOINT: z.string().url().optional(),
  VALUEDRIFT_S3_BUCKET: z.string().min(3).default('valuedrift'),
  VALUEDRIFT_S3_REGION: z.string().default('us-east-1'),
  VALUEDRIFT_S3_FORCE_PATH_STYLE: z.enum(['true', 'false']).default('false'),
  VALUEDRIFT_JUDGE_BASE_URL: z.string().url().optional(),
  VALUEDRIFT_JUDGE_API_KEY: z.string().optional(),
  VALUEDRIFT_JUDGE_MODEL: z.string().optional(),
  VALUEDRIFT_PYTHON: z.string().optional(),
  /** Root for `file:` dataset URIs. */
  VALUEDRIFT_DATA_ROOT: z.string().optional(),
  /** Scratch space for checkpoints in flight and downloaded models. */
  VALUEDRIFT_WORK_DIR: z.string().optional(),
});
export type WorkerEnv = z.infer<typeof Env> & { python: string; dataRoot: string; workDir: string };

let cached: WorkerEnv | undefined;

/** The repository root (two levels above this file). */
export const REPO_ROOT = path.resolve(__dirname, '..');

export function workerEnv(): WorkerEnv {
  if (cached) return cached;
  const parsed = Env.safeParse(process.env);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new Error(`worker environment: ${first?.path.join('.')}: ${first?.message}`);
  }
  const e = parsed.data;
  cached = {
    ...e,
    python: e.VALUEDRIFT_PYTHON ?? path.join(REPO_ROOT, '.venv', 'bin', 'python'),
    dataRoot: e.VALUEDRIFT_DATA_ROOT ?? REPO_ROOT,
    workDir: e.VALUEDRIFT_WORK_DIR ?? path.join(REPO_ROOT, '.data', 'work'),
  };
  return cached;
}

/** For tests that change the environment between cases. */
export function resetWorkerEnv(): void {
  cached = undefined;
}
