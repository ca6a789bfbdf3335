/** The worker's settings module: every variable parsed once, numbers coerced, defaults in one place. */
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { childProcessEnv, parseWorkerEnv, REPO_ROOT } from '../../activities/env';
import { DEFAULT_S3_BUCKET, DEFAULT_TEMPORAL_ADDRESS } from '../../common/defaults';

describe('worker settings', () => {
  it('has a default for everything a local worker needs', () => {
    const env = parseWorkerEnv({});
    expect(env.TEMPORAL_ADDRESS).toBe(DEFAULT_TEMPORAL_ADDRESS);
    expect(env.VALUEDRIFT_S3_BUCKET).toBe(DEFAULT_S3_BUCKET);
    expect(env.VALUEDRIFT_WORKER_ROLE).toBe('all');
    expect(env.VALUEDRIFT_CPU_CONCURRENCY).toBe(8);
    expect(env.VALUEDRIFT_GPUS).toBeUndefined();
    expect(env.python).toBe(path.join(REPO_ROOT, '.venv', 'bin', 'python'));
    expect(env.workDir).toBe(path.join(REPO_ROOT, '.data', 'work'));
  });

  it('coerces numbers and treats an empty variable as unset, except CUDA_VISIBLE_DEVICES', () => {
    const env = parseWorkerEnv({ VALUEDRIFT_CPU_CONCURRENCY: '3', VALUEDRIFT_GPUS: '4', VALUEDRIFT_WORKER_ROLE: 'gpu', VALUEDRIFT_PYTHON: '', CUDA_VISIBLE_DEVICES: '' });
    expect([env.VALUEDRIFT_CPU_CONCURRENCY, env.VALUEDRIFT_GPUS, env.VALUEDRIFT_WORKER_ROLE]).toEqual([3, 4, 'gpu']);
    expect(env.python).toBe(path.join(REPO_ROOT, '.venv', 'bin', 'python'));
    expect(env.CUDA_VISIBLE_DEVICES).toBe('');
  });

  it('refuses a malformed value, naming the variable and what it got', () => {
    expect(() => parseWorkerEnv({ VALUEDRIFT_CPU_CONCURRENCY: 'lots' })).toThrow(/VALUEDRIFT_CPU_CONCURRENCY="lots"/);
    expect(() => parseWorkerEnv({ VALUEDRIFT_GPUS: '-1' })).toThrow(/VALUEDRIFT_GPUS/);
    expect(() => parseWorkerEnv({ VALUEDRIFT_GPUS: '1.5' })).toThrow(/VALUEDRIFT_GPUS/);
    // The old per-job setting is refused, not silently ignored.
    expect(() => parseWorkerEnv({ VALUEDRIFT_GPUS_PER_JOB: '8' })).toThrow(/VALUEDRIFT_GPUS_PER_JOB is no longer read/);
    expect(() => parseWorkerEnv({ VALUEDRIFT_WORKER_ROLE: 'tpu' })).toThrow(/VALUEDRIFT_WORKER_ROLE="tpu"/);
    expect(() => parseWorkerEnv({ VALUEDRIFT_S3_ENDPOINT: 'not a url' })).toThrow(/VALUEDRIFT_S3_ENDPOINT/);
  });

  it('keeps the judge and Temporal credentials away from the trainer process', () => {
    const before = { ...process.env };
    try {
      process.env.OPENAI_API_KEY = 'sk-test';
      process.env.VALUEDRIFT_JUDGE_API_KEY = 'judge';
      process.env.TEMPORAL_API_KEY = 'temporal';
      const env = childProcessEnv({ CUDA_VISIBLE_DEVICES: '1' });
      expect(env.OPENAI_API_KEY).toBeUndefined();
      expect(env.VALUEDRIFT_JUDGE_API_KEY).toBeUndefined();
      expect(env.TEMPORAL_API_KEY).toBeUndefined();
      expect(env.CUDA_VISIBLE_DEVICES).toBe('1');
      expect(env.PATH).toBe(process.env.PATH);
    } finally {
      for (const k of ['OPENAI_API_KEY', 'VALUEDRIFT_JUDGE_API_KEY', 'TEMPORAL_API_KEY']) {
        if (before[k] === undefined) delete process.env[k];
        else process.env[k] = before[k];
      }
    }
  });
});
