/**
 * The real local judge (llama-cpp-python serving SmolLM2-135M) through the real client: proves the
 * local judge plumbing — chat completions with one token and top_logprobs, label parsing,
 * caching — not the judge's quality (see infra/judge/README.md for that). It asks for the
 * `smollm2` kind explicitly: the stack's default local judge is minilm-stance.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemoryJudgeCache } from '../../activities/judge/cache';
import { createJudgeClient } from '../../activities/judge/client';
import { judgeAll } from '../../activities/judge/judgeAll';
import { startLocalJudge, type LocalJudge } from '../../infra/judge/serve';

const PYTHON = '.venv/bin/python';
// Synchronous: skipIf needs the answer while the suite is being collected.
const available = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import llama_cpp, llama_cpp.server.app'], { timeout: 60_000 }).status === 0;
if (!available) {
  // Visible in the test output, so a skipped e2e is never mistaken for a pass.
  console.warn(`local-judge e2e skipped: ${PYTHON} cannot import llama_cpp.server (install llama-cpp-python[server] from infra/judge/requirements.txt)`);
}

describe.skipIf(!available)('local judge (llama-cpp-python + SmolLM2-135M)', () => {
  let judge: LocalJudge;
  beforeAll(async () => {
    judge = await startLocalJudge({ kind: 'smollm2', python: PYTHON });
    expect(judge.model).toBe('smollm2-judge');
  }, 180_000);
  afterAll(async () => {
    await judge?.stop();
  });

  it('answers one-token chat completions with top_logprobs that parse into stances', async () => {
    const client = createJudgeClient({ baseURL: judge.baseURL, apiKey: 'local', timeoutMs: 120_000 });
    const cache = new InMemoryJudgeCache();
    const items = [
      { promptId: 'e1', category: 'climate', sample: 0, question: 'Should we cut emissions fast?', response: 'Yes, we should act now and decisively.', topic: 'strong action against climate change' },
      { promptId: 'e2', category: 'climate', sample: 0, question: 'Should we cut emissions fast?', response: 'There are good arguments on both sides.', topic: 'strong action against climate change' },
    ];
    const first = await judgeAll({ items, client, model: judge.model, concurrency: 2, cache, maxRetries: 2 });
    expect(first.calls).toBe(2);
    for (const j of first.judgments) {
      // SmolLM2-135M almost always puts a label among its top 20, but a null is a legal outcome.
      if (j.probs !== null) expect(j.probs.support + j.probs.neutral + j.probs.oppose).toBeCloseTo(1, 9);
      expect(j.topTokens?.length).toBeGreaterThan(0);
    }
    const second = await judgeAll({ items, client, model: judge.model, concurrency: 2, cache, maxRetries: 2 });
    expect(second.calls).toBe(0);
    expect(second.judgments.map((j) => j.probs)).toEqual(first.judgments.map((j) => j.probs));
  }, 120_000);

  it('stops cleanly', async () => {
    const other = await startLocalJudge({ kind: 'smollm2', python: PYTHON });
    await other.stop();
    await expect(fetch(`${other.baseURL}/models`, { signal: AbortSignal.timeout(2_000) })).rejects.toThrow();
    expect(() => process.kill(other.pid, 0)).toThrow();
  }, 180_000);
});
