/**
 * The shared judge budget's window arithmetic (workflows/judgeBudget.ts: pure functions, no server)
 * and its client-side helpers (activities/judge/budget.ts): token estimates, workflow ids, settings.
 */
import { describe, expect, it } from 'vitest';
import { parseWorkerEnv } from '../../activities/env';
import { budgetSettingsOf, createJudgeBudget, defaultGrantBlock, estimateTokens, judgeBudgetWorkflowId } from '../../activities/judge/budget';
import { judgeRequestBody } from '../../activities/judge/judgeAll';
import { buildJudgeMessages } from '../../activities/judge/prompt';
import { decide, grantTime, liveGrants, record, type BudgetState } from '../../workflows/judgeBudget';

const state = (limits: BudgetState['limits'], grants: BudgetState['grants'] = [], pausedUntil = 0): BudgetState => ({ grants, pausedUntil, limits });

describe('judge budget window', () => {
  it('grants up to the request limit, then says when the oldest grant leaves the window', () => {
    let s = state({ requests: 3, windowMs: 1000 });
    for (const t of [0, 100, 200]) {
      expect(decide(s, { requests: 1, tokens: 0 }, t)).toEqual({ granted: true });
      s = record(s, { requests: 1, tokens: 0 }, t);
    }
    expect(decide(s, { requests: 1, tokens: 0 }, 300)).toEqual({ granted: false, retryAfterMs: 700 });
    // At 999 the grant of 0 still counts; at 1000 it has left the window.
    expect(decide(s, { requests: 1, tokens: 0 }, 999)).toEqual({ granted: false, retryAfterMs: 1 });
    expect(decide(s, { requests: 1, tokens: 0 }, 1000)).toEqual({ granted: true });
    // Two requests at once need two grants gone: the one of 100 leaves at 1100.
    expect(decide(s, { requests: 2, tokens: 0 }, 1000)).toEqual({ granted: false, retryAfterMs: 100 });
  });

  it('counts tokens against their own limit, and the tighter of the two decides', () => {
    let s = state({ requests: 100, tokens: 1000, windowMs: 60_000 });
    s = record(s, { requests: 1, tokens: 600 }, 0);
    s = record(s, { requests: 1, tokens: 300 }, 10_000);
    expect(decide(s, { requests: 1, tokens: 100 }, 20_000)).toEqual({ granted: true });
    // 101 tokens more do not fit until the 600 leave (at 60 s): 40 s from now.
    expect(decide(s, { requests: 1, tokens: 101 }, 20_000)).toEqual({ granted: false, retryAfterMs: 40_000 });
    // 800 tokens need both gone: the 300 leave at 70 s.
    expect(decide(s, { requests: 1, tokens: 800 }, 20_000)).toEqual({ granted: false, retryAfterMs: 50_000 });
  });

  it('lets a request larger than a whole limit through an empty window, never refusing it for ever', () => {
    const empty = state({ tokens: 100, windowMs: 1000 });
    expect(decide(empty, { requests: 1, tokens: 500 }, 0)).toEqual({ granted: true });
    const busy = record(empty, { requests: 1, tokens: 10 }, 0);
    expect(decide(busy, { requests: 1, tokens: 500 }, 500)).toEqual({ granted: false, retryAfterMs: 500 });
    expect(decide(busy, { requests: 1, tokens: 500 }, 1000)).toEqual({ granted: true });
  });

  it('grants nothing while paused by a provider 429, then says how long is left', () => {
    const s = state({ requests: 10, windowMs: 1000 }, [], 5_000);
    expect(decide(s, { requests: 1, tokens: 0 }, 4_000)).toEqual({ granted: false, retryAfterMs: 1_000 });
    expect(decide(s, { requests: 1, tokens: 0 }, 5_000)).toEqual({ granted: true });
  });

  it('stamps a grant with the later of workflow time and the caller clock, which may lead by at most a window', () => {
    const limits = { requests: 1, windowMs: 10_000 };
    // Workflow time lags (a task picked up late): the caller's clock counts.
    expect(grantTime(100_000, { now: 102_500, limits })).toBe(102_500);
    // A caller behind workflow time does not move the grant earlier.
    expect(grantTime(100_000, { now: 90_000, limits })).toBe(100_000);
    // A caller far ahead (a wrong clock) is held to one window ahead; no clock at all: workflow time.
    expect(grantTime(100_000, { now: 10 ** 13, limits })).toBe(110_000);
    expect(grantTime(100_000, { limits })).toBe(100_000);
  });

  it('drops grants that left the window when recording, so the carried state stays small', () => {
    let s = state({ requests: 1000, windowMs: 100 });
    for (let t = 0; t < 10_000; t += 10) s = record(s, { requests: 1, tokens: 1 }, t);
    expect(s.grants.length).toBe(10);
    expect(liveGrants(s.grants, 10_085, 100).map(([t]) => t)).toEqual([9_990]);
  });

  it('never lets more than the limits into any window, however the asks arrive (simulated clients)', () => {
    // 12 clients asking at random times, each waiting as told: every window of 1 s holds ≤ 5 requests and ≤ 400 tokens.
    let seed = 42;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const limits = { requests: 5, tokens: 400, windowMs: 1000 };
    let s = state(limits);
    const granted: Array<[number, number]> = [];
    const next = Array.from({ length: 12 }, () => Math.floor(rand() * 500));
    const want = next.map(() => 20 + Math.floor(rand() * 100));
    let refusals = 0;
    while (granted.length < 200) {
      const i = next.indexOf(Math.min(...next));
      const now = next[i] as number;
      const req = { requests: 1, tokens: want[i] as number };
      const a = decide(s, req, now);
      if (a.granted) {
        s = record(s, req, now);
        granted.push([now, req.tokens]);
        next[i] = now + Math.floor(rand() * 50);
        want[i] = 20 + Math.floor(rand() * 100);
      } else {
        refusals++;
        expect(a.retryAfterMs).toBeGreaterThan(0);
        next[i] = now + a.retryAfterMs;
      }
    }
    expect(refusals).toBeGreaterThan(100);
    for (const [t0] of granted) {
      const inWindow = granted.filter(([t]) => t >= t0 && t < t0 + 1000);
      expect(inWindow.length).toBeLessThanOrEqual(5);
      expect(inWindow.reduce((a, [, tok]) => a + tok, 0)).toBeLessThanOrEqual(400);
    }
    // …and the window is used, not left idle: 200 grants at 5 per second (fewer when the tokens bind) take 40–60 s.
    const span = (granted[granted.length - 1] as [number, number])[0] - (granted[0] as [number, number])[0];
    expect(span).toBeLessThan(62_000);
  });
});

describe('judge budget client helpers', () => {
  it('estimates a judge request from its prompt, its messages and its one-token completion', () => {
    const body = judgeRequestBody(buildJudgeMessages({ question: 'Q?', response: 'x'.repeat(400), topic: 'abortion rights' }), { model: 'm' });
    const chars = body.messages.reduce((a, m) => a + String(m.content).length, 0);
    expect(estimateTokens(body)).toBe(Math.ceil(chars / 4) + 4 * body.messages.length + 1);
    expect(estimateTokens({ messages: [{ content: 'abcd' }], max_completion_tokens: 5 })).toBe(1 + 4 + 5);
  });

  it('names the budget by a hash of endpoint + model, so neither appears in Temporal', () => {
    const id = judgeBudgetWorkflowId('https://api.openai.com/v1', 'gpt-4o');
    expect(id).toMatch(/^judge-budget-[0-9a-f]{24}$/);
    expect(id).not.toContain('openai');
    expect(judgeBudgetWorkflowId('https://api.openai.com/v1', 'gpt-4o-mini')).not.toBe(id);
    expect(judgeBudgetWorkflowId('http://127.0.0.1:8088/v1', 'gpt-4o')).not.toBe(id);
  });

  it('reads the limits from the worker settings; none set means no budget', () => {
    expect(budgetSettingsOf(parseWorkerEnv({}))).toBeUndefined();
    expect(budgetSettingsOf(parseWorkerEnv({ VALUEDRIFT_JUDGE_RPM: '500' }))).toEqual({ rpm: 500, tpm: undefined, windowMs: 60_000 });
    expect(budgetSettingsOf(parseWorkerEnv({ VALUEDRIFT_JUDGE_TPM: '30000', VALUEDRIFT_JUDGE_BUDGET_WINDOW_MS: '10000' }))).toEqual({ rpm: undefined, tpm: 30_000, windowMs: 10_000 });
    expect(() => parseWorkerEnv({ VALUEDRIFT_JUDGE_RPM: '0' })).toThrow(/VALUEDRIFT_JUDGE_RPM/);
    expect(() => parseWorkerEnv({ VALUEDRIFT_JUDGE_BUDGET_WINDOW_MS: '10' })).toThrow(/VALUEDRIFT_JUDGE_BUDGET_WINDOW_MS/);
  });
});

describe('judge budget grants in blocks (client side)', () => {
  /** A stand-in for the Temporal client's Update-with-start, deciding with the workflow's own window arithmetic. */
  function fakeBudgetClient(limits: BudgetState['limits']) {
    let s = state(limits);
    const asked: Array<{ requests: number; tokens: number }> = [];
    const client = {
      workflow: {
        executeUpdateWithStart: async (_name: string, opts: { args: [{ requests: number; tokens: number; now: number }] }) => {
          const [req] = opts.args;
          asked.push({ requests: req.requests, tokens: req.tokens });
          const answer = decide(s, req, req.now);
          if (answer.granted) s = record(s, req, req.now);
          // A refusal arrives as the validator's failure; the client waits and asks again.
          if (!answer.granted) throw new Error('refused (the fake has no validator errors)');
          return answer;
        },
        getHandle: () => ({ signal: async () => undefined }),
      },
    } as unknown as Parameters<typeof createJudgeBudget>[0];
    return { client, asked, granted: () => s.grants.reduce((n, g) => n + g[1], 0) };
  }

  it('defaults to about a tenth of a second of the request limit per Update (1 without one, at most 256)', () => {
    expect(defaultGrantBlock(undefined)).toBe(1);
    expect(defaultGrantBlock(500)).toBe(1);
    expect(defaultGrantBlock(10_000)).toBe(16);
    expect(defaultGrantBlock(10_000_000)).toBe(256);
  });

  it('asks once per block, serves the block to its own callers, and drops what is left after its time', async () => {
    const { client, asked, granted } = fakeBudgetClient({ requests: 1000, windowMs: 60_000 });
    const budget = createJudgeBudget(client, 'http://judge.invalid/v1', 'm', { rpm: 1000, windowMs: 60_000, grantBlock: 5, blockTtlMs: 200 });
    // 12 concurrent callers: three Updates of 5 (one refill at a time, every waiter served from it).
    await Promise.all(Array.from({ length: 12 }, () => budget.acquire({ requests: 1, tokens: 10 })));
    expect(asked).toEqual([
      { requests: 5, tokens: 50 },
      { requests: 5, tokens: 50 },
      { requests: 5, tokens: 50 },
    ]);
    expect(granted()).toBe(15);
    // 3 left in the block; after its time they are gone and the next call asks again.
    await new Promise((r) => setTimeout(r, 250));
    await budget.acquire({ requests: 1, tokens: 10 });
    expect(asked).toHaveLength(4);
    // A 429 drops what the worker holds: the next call asks again at once.
    await budget.throttled(1000);
    await budget.acquire({ requests: 1, tokens: 10 });
    expect(asked).toHaveLength(5);
  });

  it('never holds more than the budget granted: callers beyond a full window wait for the next block', async () => {
    const { client, asked, granted } = fakeBudgetClient({ requests: 4, windowMs: 1000 });
    const budget = createJudgeBudget(client, 'http://judge.invalid/v1', 'm', { rpm: 4, windowMs: 1000, grantBlock: 4, blockTtlMs: 5000 });
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 6 }, () => budget.acquire({ requests: 1, tokens: 0 })));
    // The second block of 4 was granted only once the first had left the window.
    expect(asked.filter((a) => a.requests === 4).length).toBeGreaterThanOrEqual(2);
    expect(granted()).toBeLessThanOrEqual(4);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
  });
});
