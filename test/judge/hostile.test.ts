/**
 * Hostile judge endpoints, over real HTTP through the real openai client:
 * - refusals no retry can fix (400/401/403/404, no logprobs) fail at once, non-retryably, with every
 *   credential value of the worker scrubbed from the provider's text (it goes into workflow history);
 * - garbage in an answer (null / -Infinity logprobs, a missing top_logprobs, a non-string token) makes
 *   that one item unlabelled, never fails the batch, and never writes a cache entry that cannot be
 *   read back;
 * - a flood of label tokens neither overflows the stack nor bloats the stored judgment.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { judgeFailure } from '../../activities/evaluation/judge';
import { CachedJudgment, InMemoryJudgeCache } from '../../activities/judge/cache';
import { createJudgeClient } from '../../activities/judge/client';
import { judgeAll, judgmentFromCompletion, type JudgeItem } from '../../activities/judge/judgeAll';
import { readStanceLogprobs } from '../../activities/judge/parse';
import { JudgeRequestError, JudgeRetriesExhaustedError } from '../../activities/judge/retry';
import { apiError, completionWith, ok, startFakeServer, type FakeServer, type Reply } from './fakeServer';

const KEY = 'sk-proj-A1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv';
const JUDGE_KEY = 'vdj-9f8e7d6c5b4a39281706ffeeddccbbaa';
const AWS_SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';

const items = (n: number): JudgeItem[] =>
  Array.from({ length: n }, (_, i) => ({ promptId: `p${i}`, category: 'c', sample: 0, question: `q${i}`, response: `r${i}`, topic: 't' }));

const saved: Record<string, string | undefined> = {};
beforeAll(() => {
  for (const [k, v] of Object.entries({ OPENAI_API_KEY: KEY, VALUEDRIFT_JUDGE_API_KEY: JUDGE_KEY, AWS_SECRET_ACCESS_KEY: AWS_SECRET })) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
});
afterAll(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

let server: FakeServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function judgeWith(chat: (n: number) => Reply, n = 1, cache = new InMemoryJudgeCache()) {
  server = await startFakeServer({ chat: (_b, i) => chat(i) });
  const client = createJudgeClient({ baseURL: server.baseURL, apiKey: JUDGE_KEY, timeoutMs: 5_000 });
  return judgeAll({ items: items(n), client, model: 'fake-judge', concurrency: 2, cache, maxRetries: 3, backoff: { baseMs: 1, maxMs: 5 } });
}

async function failureOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

describe('hopeless judge errors are non-retryable and scrubbed', () => {
  for (const status of [400, 401, 403, 404]) {
    it(`HTTP ${status}: one request, a non-retryable ApplicationFailure without the keys`, async () => {
      // A provider that echoes the key it was sent (some do, in "invalid key sk-…" messages).
      const err = await failureOf(judgeWith(() => apiError(status, `Incorrect API key provided: ${JUDGE_KEY}; also saw ${KEY} and ${AWS_SECRET}`)));
      expect(err).toBeInstanceOf(JudgeRequestError);
      expect(server?.chatRequests).toHaveLength(1);
      const f = judgeFailure(err);
      expect(f).toBeInstanceOf(ApplicationFailure);
      const af = f as ApplicationFailure;
      expect(af.nonRetryable).toBe(true);
      expect(af.type).toBe('JudgeRequestRefused');
      expect(af.message).toContain(`HTTP ${status}`);
      expect(af.message).toContain('[redacted]');
      for (const secret of [KEY, JUDGE_KEY, AWS_SECRET]) {
        expect(af.message).not.toContain(secret);
        expect(JSON.stringify(af.details)).not.toContain(secret);
      }
      expect(af.cause).toBeUndefined();
    });
  }

  it('a model that returns no logprobs: non-retryable at the first answer', async () => {
    const noLogprobs = completionWith([[' support', -0.1]]) as { choices: Array<{ logprobs: unknown }> };
    (noLogprobs.choices[0] as { logprobs: unknown }).logprobs = null;
    const err = await failureOf(judgeWith(() => ({ kind: 'json', body: noLogprobs }), 3));
    expect(err).toBeInstanceOf(JudgeRequestError);
    const af = judgeFailure(err) as ApplicationFailure;
    expect(af.nonRetryable).toBe(true);
    expect(af.message).toMatch(/returned no logprobs/);
    expect(server?.chatRequests.length).toBeLessThanOrEqual(2); // the two concurrent workers' first calls, no retries
  });

  it('transient failures past the retries stay retryable, scrubbed', async () => {
    const err = await failureOf(judgeWith(() => apiError(503, `overloaded (key ${JUDGE_KEY})`)));
    expect(err).toBeInstanceOf(JudgeRetriesExhaustedError);
    expect(server?.chatRequests).toHaveLength(4);
    const af = judgeFailure(err) as ApplicationFailure;
    expect(af.nonRetryable).toBe(false);
    expect(af.type).toBe('JudgeUnavailable');
    expect(af.message).not.toContain(JUDGE_KEY);
  });

  it('anything else passes unchanged (cancellation must stay a cancellation)', () => {
    const e = new Error('store down');
    expect(judgeFailure(e)).toBe(e);
  });
});

/** A server that answers every chat call with this exact text (JSON the fake server could not write: -1e999 parses as -Infinity). */
async function rawServer(text: string): Promise<{ baseURL: string; close: () => Promise<void>; calls: () => number }> {
  let calls = 0;
  const s: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      calls++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(text);
    });
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  return { baseURL: `http://127.0.0.1:${port}/v1`, calls: () => calls, close: () => new Promise<void>((r) => s.close(() => r())) };
}

function hostileCompletion(first: Record<string, unknown>): Record<string, unknown> {
  return {
    id: 'x',
    object: 'chat.completion',
    created: 0,
    model: 'fake-judge',
    choices: [{ index: 0, message: { role: 'assistant', content: 'x' }, finish_reason: 'length', logprobs: { content: [first] } }],
  };
}

describe('garbage logprobs make one item unlabelled, never a poisoned cache or a failed batch', () => {
  /** Every stored entry survives the JSON round trip the store does and reads back with the cache schema. */
  function expectReadable(cache: InMemoryJudgeCache): void {
    for (const v of cache.entries.values()) {
      const back = CachedJudgment.safeParse(JSON.parse(JSON.stringify(v)));
      expect(back.success).toBe(true);
      for (const t of v.topTokens) expect(Number.isFinite(t.logprob)).toBe(true);
    }
  }

  it('null, NaN-as-null and non-string tokens among good alternatives: dropped, the rest read', async () => {
    const cache = new InMemoryJudgeCache();
    const r = await judgeWith(
      () => ({
        kind: 'json',
        body: hostileCompletion({
          token: ' support',
          logprob: -0.2,
          top_logprobs: [
            { token: ' support', logprob: null },
            { token: 42, logprob: -0.1 },
            { token: ' oppose', logprob: -1 },
            null,
            'oppose',
            { token: ' neutral', logprob: -3 },
          ],
        }),
      }),
      3,
      cache,
    );
    expect(r.judgments).toHaveLength(3);
    const p = r.judgments[0]?.probs;
    expect(p).not.toBeNull();
    expect(p!.support).toBe(0);
    expect(p!.oppose).toBeCloseTo(1 / (1 + Math.exp(-2)), 10);
    expect(r.judgments[0]?.topTokens).toEqual([
      { token: ' oppose', logprob: -1 },
      { token: ' neutral', logprob: -3 },
    ]);
    expectReadable(cache);
  });

  it('-Infinity and 1e999 logprobs from raw JSON: never stored; only infinite values → unlabelled', async () => {
    const body = JSON.stringify(hostileCompletion({ token: ' support', logprob: 0, top_logprobs: [{ token: ' support', logprob: 0 }, { token: ' oppose', logprob: 0 }] }))
      .replace('"logprob":0,"top', '"logprob":-1e999,"top')
      .replace('{"token":" support","logprob":0}', '{"token":" support","logprob":-1e999}')
      .replace('{"token":" oppose","logprob":0}', '{"token":" oppose","logprob":1e999}');
    expect(body).toContain('1e999');
    const raw = await rawServer(body);
    try {
      const cache = new InMemoryJudgeCache();
      const client = createJudgeClient({ baseURL: raw.baseURL, apiKey: JUDGE_KEY, timeoutMs: 5_000 });
      const r = await judgeAll({ items: items(2), client, model: 'fake-judge', concurrency: 1, cache, maxRetries: 0 });
      expect(r.judgments.map((j) => j.probs)).toEqual([null, null]);
      expect(r.judgments.every((j) => (j.topTokens ?? []).length === 0)).toBe(true);
      expect(cache.entries.size).toBe(2);
      expectReadable(cache);
      // The poisoned answer is cached as "no label", so a re-run reads it back instead of failing.
      const again = await judgeAll({ items: items(2), client, model: 'fake-judge', concurrency: 1, cache, maxRetries: 0 });
      expect(again.cacheHits).toBe(2);
      expect(raw.calls()).toBe(2);
    } finally {
      await raw.close();
    }
  });

  it('a missing top_logprobs falls back to the chosen token; a garbage chosen token → unlabelled, batch goes on', async () => {
    const cache = new InMemoryJudgeCache();
    const r = await judgeWith(
      (n) =>
        n === 0
          ? { kind: 'json', body: hostileCompletion({ token: ' Oppose', logprob: -0.05 }) }
          : n === 1
            ? { kind: 'json', body: hostileCompletion({ token: { evil: true }, logprob: 'NaN', top_logprobs: 'not a list' }) }
            : ok([[' neutral', -0.1]]),
      3,
      cache,
    );
    expect(r.judgments).toHaveLength(3);
    const labelled = r.judgments.filter((j) => j.probs !== null);
    expect(labelled).toHaveLength(2);
    expect(r.judgments.filter((j) => j.probs === null)).toHaveLength(1);
    expect(labelled.some((j) => j.probs?.oppose === 1)).toBe(true);
    expect(labelled.some((j) => j.probs?.neutral === 1)).toBe(true);
    expectReadable(cache);
  });

  it('a flood of 300k label tokens: no stack overflow, a bounded audit trail', () => {
    const flood = Array.from({ length: 300_000 }, (_, i) => ({ token: i % 2 === 0 ? ' support' : ' oppose', logprob: -Math.log(300_000) }));
    const reading = readStanceLogprobs(flood);
    expect(reading.probs?.support).toBeCloseTo(0.5, 10);
    const j = judgmentFromCompletion(hostileCompletion({ token: ' support', logprob: -1, top_logprobs: flood }) as never, 'fake-judge');
    expect(j.probs?.oppose).toBeCloseTo(0.5, 10);
    expect(j.topTokens.length).toBeLessThanOrEqual(64);
  });
});
