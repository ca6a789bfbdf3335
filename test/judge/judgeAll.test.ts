import { afterEach, describe, expect, it } from 'vitest';
import { InMemoryJudgeCache } from '../../activities/judge/cache';
import { createJudgeClient } from '../../activities/judge/client';
import { judgeAll, type JudgeAllInput, type JudgeItem } from '../../activities/judge/judgeAll';
import { JudgeRequestError, JudgeRetriesExhaustedError } from '../../activities/judge/retry';
import { apiError, ok, startFakeServer, type ChatRequestBody, type ChatScript, type FakeServer, type Reply } from './fakeServer';

let server: FakeServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

function items(n: number, prefix = 'p'): JudgeItem[] {
  return Array.from({ length: n }, (_, i) => ({
    promptId: `${prefix}${i}`,
    category: i % 2 === 0 ? 'immigration' : 'abortion',
    sample: 0,
    question: `question ${prefix}${i}?`,
    response: `response ${prefix}${i}.`,
    topic: 'more open immigration',
  }));
}

/** The item id a request is about, read back from the rendered prompt. */
function promptIdOf(body: ChatRequestBody): string {
  const user = body.messages.find((m) => m.role === 'user')?.content ?? '';
  return /question (\S+)\?/.exec(user)?.[1] ?? '';
}

async function run(
  script: ChatScript,
  overrides: Partial<JudgeAllInput> & { timeoutMs?: number } = {},
): Promise<{ server: FakeServer; input: JudgeAllInput }> {
  server = await startFakeServer({ chat: script });
  const { timeoutMs, ...rest } = overrides;
  const input: JudgeAllInput = {
    items: items(1),
    client: createJudgeClient({ baseURL: server.baseURL, apiKey: 'test', timeoutMs: timeoutMs ?? 5_000 }),
    model: 'fake-judge',
    concurrency: 4,
    cache: new InMemoryJudgeCache(),
    maxRetries: 5,
    backoff: { baseMs: 10, maxMs: 50 },
    ...rest,
  };
  return { server, input };
}

describe('judgeAll: labels through the HTTP path', () => {
  const cases: Record<string, { top: Array<[string, number]>; expect: 'support' | 'neutral' | 'oppose' | null }> = {
    p0: { top: [['support', -0.05], ['neutral', -3]], expect: 'support' },
    p1: { top: [[' Support', -0.1], ['Neutral', -2.5]], expect: 'support' },
    p2: { top: [['sup', -0.2], [' opp', -2]], expect: 'support' },
    p3: { top: [[' opp', -0.1], ['Support', -3]], expect: 'oppose' },
    p4: { top: [['neut', -0.3], ['Neutral.', -1], ['oppose', -3]], expect: 'neutral' },
    p5: { top: [['Neutral.', -0.2], ['support', -2]], expect: 'neutral' },
    p6: { top: [['OPPOSE', -0.01]], expect: 'oppose' },
    p7: { top: [['I', -0.1], ['As', -1], ['The', -2]], expect: null },
  };

  it('reads each variant and records no-label as null, never a guess', async () => {
    const { input } = await run((body) => {
      const c = cases[promptIdOf(body)];
      return ok(c?.top ?? []);
    }, { items: items(8) });
    const { judgments, calls } = await judgeAll(input);
    expect(calls).toBe(8);
    for (const j of judgments) {
      const want = cases[j.promptId]?.expect;
      if (want === null) {
        expect(j.probs).toBeNull();
        // The audit trail shows what the judge said instead.
        expect(j.topTokens?.map((t) => t.token)).toEqual(['I', 'As', 'The']);
      } else {
        const p = j.probs!;
        expect(Math.max(p.support, p.neutral, p.oppose)).toBe(p[want!]);
        expect(p.support + p.neutral + p.oppose).toBeCloseTo(1, 12);
      }
    }
    // p2: sup and opp both seen → softmax over the two.
    const p2 = judgments.find((j) => j.promptId === 'p2')!.probs!;
    expect(p2.support).toBeCloseTo(1 / (1 + Math.exp(-1.8)), 10);
  });

  it('asks for one token with logprobs at temperature 0', async () => {
    const { input, server } = await run(() => ok([['support', -0.1]]));
    await judgeAll(input);
    const body = JSON.parse(server.chatRequests[0]!.body) as ChatRequestBody;
    expect(body).toMatchObject({ model: 'fake-judge', temperature: 0, logprobs: true, top_logprobs: 20, max_tokens: 1 });
    expect(body.max_completion_tokens).toBeUndefined();
  });

  it('can use max_completion_tokens and another top-k', async () => {
    const { input, server } = await run(() => ok([['support', -0.1]]), { tokenLimitParam: 'max_completion_tokens', topLogprobs: 5 });
    await judgeAll(input);
    const body = JSON.parse(server.chatRequests[0]!.body) as ChatRequestBody;
    expect(body).toMatchObject({ max_completion_tokens: 1, top_logprobs: 5 });
    expect(body.max_tokens).toBeUndefined();
  });

  it('fails clearly when the endpoint returns no logprobs', async () => {
    const { input, server } = await run(() => ({
      kind: 'json',
      body: { id: 'x', object: 'chat.completion', created: 0, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'support' }, finish_reason: 'length', logprobs: null }] },
    }));
    await expect(judgeAll(input)).rejects.toThrow(/no logprobs/);
    expect(server.chatRequests).toHaveLength(1);
  });
});

describe('judgeAll: retries', () => {
  it('honours Retry-After in seconds', async () => {
    const { input, server } = await run((_b, n) => (n === 0 ? apiError(429, 'slow down', { 'retry-after': '1' }) : ok([['support', -0.1]])));
    const { judgments, attempts } = await judgeAll(input);
    expect(judgments[0]!.probs).not.toBeNull();
    expect(attempts).toBe(2);
    const [a, b] = server.chatRequests;
    expect(b!.receivedAt - a!.receivedAt).toBeGreaterThanOrEqual(990);
  });

  it('honours Retry-After as an HTTP date', async () => {
    let until = 0;
    const { input, server } = await run((_b, n) => {
      if (n > 0) return ok([['oppose', -0.1]]);
      // HTTP dates have whole seconds: ask for the next full second after now + 1 s.
      until = Math.ceil((Date.now() + 1000) / 1000) * 1000;
      return apiError(429, 'slow down', { 'retry-after': new Date(until).toUTCString() });
    });
    const t0 = Date.now();
    await judgeAll(input);
    expect(server.chatRequests).toHaveLength(2);
    expect(Date.now()).toBeGreaterThanOrEqual(until - 5);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('honours retry-after-ms over Retry-After', async () => {
    const { input, server } = await run((_b, n) =>
      n === 0 ? apiError(429, 'slow down', { 'retry-after-ms': '300', 'retry-after': '30' }) : ok([['neutral', -0.1]]),
    );
    await judgeAll(input);
    const [a, b] = server.chatRequests;
    const gap = b!.receivedAt - a!.receivedAt;
    expect(gap).toBeGreaterThanOrEqual(290);
    expect(gap).toBeLessThan(5000);
  });

  it('rides out a storm of 5xx', async () => {
    const storm: Reply[] = [apiError(500, 'boom'), apiError(503, 'overloaded'), apiError(502, 'bad gateway'), apiError(500, 'boom again')];
    const { input, server } = await run((_b, n) => storm[n] ?? ok([['support', -0.2]]));
    const { judgments, calls, attempts } = await judgeAll(input);
    expect(judgments[0]!.probs).not.toBeNull();
    expect(calls).toBe(1);
    expect(attempts).toBe(5);
    expect(server.chatRequests).toHaveLength(5);
  });

  it('retries 408 and 409', async () => {
    const { input, server } = await run((_b, n) => [apiError(408, 'timeout'), apiError(409, 'conflict')][n] ?? ok([['support', -0.2]]));
    await judgeAll(input);
    expect(server.chatRequests).toHaveLength(3);
  });

  it('times out a hung request and retries it', async () => {
    const { input, server } = await run((_b, n) => (n === 0 ? { kind: 'hang' } : ok([['support', -0.1]])), { timeoutMs: 300 });
    const t0 = Date.now();
    const { judgments } = await judgeAll(input);
    expect(judgments[0]!.probs).not.toBeNull();
    expect(server.chatRequests).toHaveLength(2);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it('retries a dropped connection', async () => {
    const { input, server } = await run((_b, n) => (n === 0 ? { kind: 'reset' } : ok([['support', -0.1]])));
    await judgeAll(input);
    expect(server.chatRequests).toHaveLength(2);
  });

  it('does not retry a 400, says why, and keeps what was already judged', async () => {
    const cache = new InMemoryJudgeCache();
    const { input, server } = await run(
      (body) => (promptIdOf(body) === 'p3' ? apiError(400, "Invalid value for 'top_logprobs'") : ok([['support', -0.1]])),
      { items: items(4), concurrency: 1, cache },
    );
    const err = await judgeAll(input).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(JudgeRequestError);
    expect((err as JudgeRequestError).status).toBe(400);
    expect((err as Error).message).toMatch(/will not be retried: HTTP 400.*top_logprobs/);
    expect(server.chatRequests).toHaveLength(4);
    // p0..p2 were judged before the refusal and are in the cache.
    expect(cache.entries.size).toBe(3);
  });

  it('does not retry a 401 either', async () => {
    const { input, server } = await run(() => apiError(401, 'bad key'));
    await expect(judgeAll(input)).rejects.toMatchObject({ name: 'JudgeRequestError', status: 401 });
    expect(server.chatRequests).toHaveLength(1);
  });

  it('gives up after maxRetries with a retryable error', async () => {
    const { input, server } = await run(() => apiError(503, 'down'), { maxRetries: 2 });
    const err = await judgeAll(input).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JudgeRetriesExhaustedError);
    expect((err as JudgeRetriesExhaustedError).attempts).toBe(3);
    expect(server.chatRequests).toHaveLength(3);
  });

  it('leaves retrying to us: the client makes exactly one request per attempt', async () => {
    const { input, server } = await run(() => apiError(500, 'down'), { maxRetries: 0 });
    await expect(judgeAll(input)).rejects.toBeInstanceOf(JudgeRetriesExhaustedError);
    expect(server.chatRequests).toHaveLength(1);
  });
});

describe('judgeAll: concurrency, cache, duplicates, progress, abort', () => {
  it('never has more than `concurrency` calls in flight', async () => {
    const { input, server } = await run(() => ok([['support', -0.1]], 40), { items: items(30), concurrency: 5 });
    const { calls } = await judgeAll(input);
    expect(calls).toBe(30);
    expect(server.maxInFlight).toBe(5);
  });

  it('makes zero calls when re-evaluating the same generations', async () => {
    const cache = new InMemoryJudgeCache();
    const { input, server } = await run(() => ok([['oppose', -0.3], ['neutral', -1.5]]), { items: items(12), cache, cacheFlushEvery: 5 });
    const first = await judgeAll(input);
    expect(first.calls).toBe(12);
    expect(first.judgments.every((j) => j.cached === false)).toBe(true);
    const before = server.chatRequests.length;

    const second = await judgeAll(input);
    expect(server.chatRequests.length - before).toBe(0);
    expect(second.calls).toBe(0);
    expect(second.cacheHits).toBe(12);
    expect(second.judgments.every((j) => j.cached === true)).toBe(true);
    expect(second.judgments.map((j) => j.probs)).toEqual(first.judgments.map((j) => j.probs));
  });

  it('keys the cache by judge model: another model is judged afresh', async () => {
    const cache = new InMemoryJudgeCache();
    const { input, server } = await run(() => ok([['support', -0.1]]), { items: items(3), cache });
    await judgeAll(input);
    await judgeAll({ ...input, model: 'another-judge' });
    expect(server.chatRequests).toHaveLength(6);
  });

  it('collapses duplicates into one call', async () => {
    const base = items(3);
    // Five samples of each prompt whose generations happen to be identical (common at low temperature).
    const dup = base.flatMap((it) => [0, 1, 2, 3, 4].map((sample) => ({ ...it, sample })));
    const { input, server } = await run(() => ok([['support', -0.1]]), { items: dup });
    const { judgments, calls } = await judgeAll(input);
    expect(calls).toBe(3);
    expect(server.chatRequests).toHaveLength(3);
    expect(judgments).toHaveLength(15);
    expect(judgments.map((j) => `${j.promptId}/${j.sample}`)).toEqual(dup.map((d) => `${d.promptId}/${d.sample}`));
  });

  it('reports progress up to the total', async () => {
    const seen: Array<[number, number]> = [];
    const { input } = await run(() => ok([['support', -0.1]]), { items: items(7), onProgress: (d, t) => seen.push([d, t]) });
    await judgeAll(input);
    expect(seen.at(-1)).toEqual([7, 7]);
    expect(seen.map(([d]) => d)).toEqual([...seen.map(([d]) => d)].sort((a, b) => a - b));
  });

  it('stops at once when aborted, keeps finished work, rejects with the reason', async () => {
    const cache = new InMemoryJudgeCache();
    const controller = new AbortController();
    const { input, server } = await run(
      (body) => (promptIdOf(body) === 'p0' ? ok([['support', -0.1]]) : { kind: 'hang' }),
      { items: items(10), concurrency: 2, cache, signal: controller.signal, timeoutMs: 60_000 },
    );
    const reason = new Error('activity cancelled');
    setTimeout(() => controller.abort(reason), 200);
    const t0 = Date.now();
    await expect(judgeAll(input)).rejects.toBe(reason);
    expect(Date.now() - t0).toBeLessThan(2000);
    const sent = server.chatRequests.length;
    expect(sent).toBeLessThanOrEqual(3);
    expect(cache.entries.size).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(server.chatRequests.length).toBe(sent);
  });

  it('rejects before any call when already aborted', async () => {
    const controller = new AbortController();
    controller.abort(new Error('nope'));
    const { input, server } = await run(() => ok([['support', -0.1]]), { signal: controller.signal });
    await expect(judgeAll(input)).rejects.toThrow('nope');
    expect(server.chatRequests).toHaveLength(0);
  });

  it('stops retry sleeps when aborted', async () => {
    const controller = new AbortController();
    const { input } = await run(() => apiError(429, 'wait', { 'retry-after': '30' }), { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('cancel')), 100);
    const t0 = Date.now();
    await expect(judgeAll(input)).rejects.toThrow('cancel');
    expect(Date.now() - t0).toBeLessThan(1500);
  });

  it('returns nothing for nothing, without calls', async () => {
    const { input, server } = await run(() => ok([['support', -0.1]]), { items: [] });
    expect(await judgeAll(input)).toEqual({ judgments: [], calls: 0, attempts: 0, cacheHits: 0 });
    expect(server.requests).toHaveLength(0);
  });

  it('validates its items', async () => {
    const { input } = await run(() => ok([['support', -0.1]]));
    await expect(judgeAll({ ...input, items: [{ ...items(1)[0]!, sample: -1 }] })).rejects.toThrow();
  });
});

describe('judgeAll: a prompt of its own (the dataset stance analysis)', () => {
  it('sends its messages, keys and stamps the cache with its version, apart from the default prompt', async () => {
    const seen: string[] = [];
    const { input } = await run((body) => {
      seen.push(body.messages.map((m) => m.content).join('|'));
      return ok([['support', -0.05]]);
    });
    const prompt = { version: 'test-conversation-v1', messages: (it: Pick<JudgeItem, 'question' | 'topic'>) => [{ role: 'user' as const, content: `whole conversation ${it.question} on ${it.topic}` }] };
    const own = await judgeAll({ ...input, prompt });
    expect(seen).toEqual(['whole conversation question p0? on more open immigration']);
    expect(own).toMatchObject({ calls: 1, cacheHits: 0 });
    const cached = [...(input.cache as InMemoryJudgeCache).entries.values()];
    expect(cached.map((v) => v.promptVersion)).toEqual(['test-conversation-v1']);
    // Same item, same prompt: from the cache. The default prompt: a different key, so a new call.
    expect(await judgeAll({ ...input, prompt })).toMatchObject({ calls: 0, cacheHits: 1 });
    expect(await judgeAll(input)).toMatchObject({ calls: 1, cacheHits: 0 });
    expect(seen).toHaveLength(2);
    expect(seen[1]).not.toContain('whole conversation');
  });
});
