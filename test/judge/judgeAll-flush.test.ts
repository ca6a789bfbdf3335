/**
 * What a killed worker pays again. judgeAll keeps answers in memory until their cache write
 * (groups of `cacheFlushEvery`, or `cacheFlushMs` after the first unwritten answer); a worker killed
 * outright writes nothing more. Here the kill happens mid-run against the scripted judge HTTP server
 * (test/judge/fakeServer.ts): at the chosen request the activity is aborted and the cache stops
 * accepting writes, as if the process were gone. The retry runs on the same cache and server, and
 * the judgments it asks for again, which the server had already answered, are counted.
 */
import { afterEach, describe, expect, it } from 'vitest';

import { parseWorkerEnv } from '../../activities/env';
import { type CachedJudgment, InMemoryJudgeCache, type JudgeCache } from '../../activities/judge/cache';
import { createJudgeClient } from '../../activities/judge/client';
import { DEFAULT_CACHE_FLUSH_EVERY, DEFAULT_CACHE_FLUSH_MS, judgeAll, type JudgeAllInput, type JudgeItem } from '../../activities/judge/judgeAll';
import { ok, startFakeServer, type ChatRequestBody, type FakeServer } from './fakeServer';

let server: FakeServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

function items(n: number): JudgeItem[] {
  return Array.from({ length: n }, (_, i) => ({
    promptId: `p${i}`,
    category: 'immigration',
    sample: 0,
    question: `question p${i}?`,
    response: `response p${i}.`,
    topic: 'more open immigration',
  }));
}

function promptIdOf(body: ChatRequestBody): string {
  const user = body.messages.find((m) => m.role === 'user')?.content ?? '';
  return /question (\S+)\?/.exec(user)?.[1] ?? '';
}

/** A cache in a process that can die: after kill() nothing it is handed is written. */
class KillableCache implements JudgeCache {
  dead = false;
  constructor(readonly store: InMemoryJudgeCache) {}
  get(key: string): Promise<CachedJudgment | undefined> {
    return this.store.get(key);
  }
  putMany(entries: ReadonlyArray<{ key: string; value: CachedJudgment }>): Promise<void> {
    return this.dead ? Promise.resolve() : this.store.putMany(entries);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Judges 30 items one at a time; when request `killAt` arrives (after `killAfterMs`), the worker
 * dies. Then a retry on the surviving cache. Returns the judgments paid twice.
 */
async function killThenRetry(opts: { killAt: number; killAfterMs?: number } & Pick<JudgeAllInput, 'cacheFlushEvery' | 'cacheFlushMs'>): Promise<{ paidBefore: number; repeated: number; retryCalls: number }> {
  const store = new InMemoryJudgeCache();
  const cache = new KillableCache(store);
  const controller = new AbortController();
  let phase: 'first' | 'retry' = 'first';
  const paid = new Set<string>();
  const askedAgain = new Set<string>();
  server = await startFakeServer({
    chat: async (body, n) => {
      const id = promptIdOf(body);
      if (phase === 'first' && n === opts.killAt) {
        if (opts.killAfterMs !== undefined) await sleep(opts.killAfterMs);
        cache.dead = true;
        controller.abort(new Error('worker killed'));
        return { kind: 'hang' };
      }
      if (phase === 'first') paid.add(id);
      else if (paid.has(id)) askedAgain.add(id);
      return ok([['support', -0.1], ['oppose', -2]]);
    },
  });
  const input: JudgeAllInput = {
    items: items(30),
    client: createJudgeClient({ baseURL: server.baseURL, apiKey: 'test', timeoutMs: 5_000 }),
    model: 'fake-judge',
    concurrency: 1,
    cache,
    maxRetries: 0,
    backoff: { baseMs: 10, maxMs: 50 },
    cacheFlushEvery: opts.cacheFlushEvery,
    cacheFlushMs: opts.cacheFlushMs,
  };
  await expect(judgeAll({ ...input, signal: controller.signal })).rejects.toThrow('worker killed');
  expect(paid.size).toBe(opts.killAt);

  // The retry: a new worker process, the same (persistent) cache.
  phase = 'retry';
  const retry = await judgeAll({ ...input, cache: store });
  expect(retry.judgments).toHaveLength(30);
  return { paidBefore: paid.size, repeated: askedAgain.size, retryCalls: retry.calls };
}

describe('judge cache flush bound after a kill', () => {
  it('defaults to groups of 8 and a 5 s bound, as the worker setting does', () => {
    expect(DEFAULT_CACHE_FLUSH_EVERY).toBe(8);
    expect(DEFAULT_CACHE_FLUSH_MS).toBe(5_000);
    const env = parseWorkerEnv({});
    expect([env.VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY, env.VALUEDRIFT_JUDGE_CACHE_FLUSH_MS]).toEqual([8, 5_000]);
    const set = parseWorkerEnv({ VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY: '3', VALUEDRIFT_JUDGE_CACHE_FLUSH_MS: '250' });
    expect([set.VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY, set.VALUEDRIFT_JUDGE_CACHE_FLUSH_MS]).toEqual([3, 250]);
    expect(() => parseWorkerEnv({ VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY: '0' })).toThrow(/VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY/);
    expect(() => parseWorkerEnv({ VALUEDRIFT_JUDGE_CACHE_FLUSH_MS: 'soon' })).toThrow(/VALUEDRIFT_JUDGE_CACHE_FLUSH_MS/);
  });

  for (const killAt of [5, 8, 13, 21]) {
    it(`a kill after ${killAt} paid answers repeats fewer than the flush size (8) on retry`, async () => {
      const { repeated, retryCalls } = await killThenRetry({ killAt, cacheFlushMs: 60_000 });
      // Written: every full group of 8 before the kill; lost: the rest.
      expect(repeated).toBe(killAt % 8);
      expect(repeated).toBeLessThan(DEFAULT_CACHE_FLUSH_EVERY);
      expect(retryCalls).toBe(30 - Math.floor(killAt / 8) * 8);
    });
  }

  it('the flush size is what bounds it: groups of 32 lose all 21', async () => {
    const { repeated } = await killThenRetry({ killAt: 21, cacheFlushEvery: 32, cacheFlushMs: 60_000 });
    expect(repeated).toBe(21);
  });

  it('the time bound writes a short group that waited: nothing is repeated after a slow answer', async () => {
    // Three answers, then the judge takes 400 ms before the kill: the 100 ms bound wrote them.
    const timed = await killThenRetry({ killAt: 3, killAfterMs: 400, cacheFlushEvery: 100, cacheFlushMs: 100 });
    expect(timed.repeated).toBe(0);
    // Without it (a bound longer than the wait) the same three are paid again.
    const untimed = await killThenRetry({ killAt: 3, killAfterMs: 400, cacheFlushEvery: 100, cacheFlushMs: 60_000 });
    expect(untimed.repeated).toBe(3);
  });
});
