import { afterEach, describe, expect, it } from 'vitest';
import { judgeBatch, type BatchHeartbeat, type JudgeBatchInput } from '../../activities/judge/batch';
import { InMemoryJudgeCache } from '../../activities/judge/cache';
import { createJudgeClient } from '../../activities/judge/client';
import { judgeAll, type JudgeItem } from '../../activities/judge/judgeAll';
import { JudgeRequestError } from '../../activities/judge/retry';
import { apiError, ok, startFakeServer, type ChatRequestBody, type FakeServer, type FakeServerOptions } from './fakeServer';

let server: FakeServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const item = (id: string, sample = 0): JudgeItem => ({
  promptId: id,
  category: 'climate',
  sample,
  question: `question ${id}?`,
  response: `response ${id}.`,
  topic: 'strong action against climate change',
});

const idOf = (body: ChatRequestBody): string => /question (\S+)\?/.exec(body.messages.find((m) => m.role === 'user')?.content ?? '')?.[1] ?? '';

async function setup(opts: FakeServerOptions, overrides: Partial<JudgeBatchInput> = {}): Promise<{ server: FakeServer; input: JudgeBatchInput; beats: BatchHeartbeat[] }> {
  server = await startFakeServer(opts);
  const beats: BatchHeartbeat[] = [];
  const input: JudgeBatchInput = {
    items: [item('a'), item('b'), item('c')],
    client: createJudgeClient({ baseURL: server.baseURL, apiKey: 'test', timeoutMs: 5_000 }),
    model: 'fake-judge',
    concurrency: 4,
    cache: new InMemoryJudgeCache(),
    maxRetries: 3,
    backoff: { baseMs: 10, maxMs: 50 },
    pollIntervalMs: 20,
    heartbeat: (b) => beats.push(b),
    ...overrides,
  };
  return { server, input, beats };
}

const paths = (s: FakeServer): string[] => s.requests.map((r) => `${r.method} ${r.path.replace(/(file|batch)[-_][0-9a-f-]+/g, '$1')}`);

describe('judgeBatch', () => {
  it('uploads only uncached, distinct items, polls, and fills the same cache', async () => {
    const cache = new InMemoryJudgeCache();
    const { server, input, beats } = await setup(
      { chat: (body) => (idOf(body) === 'b' ? ok([['oppose', -0.1], ['neutral', -3]]) : ok([['support', -0.2]])) },
      { cache, items: [item('pre'), item('a'), item('b'), item('b', 1), item('c')] },
    );
    // One item is already judged by an earlier synchronous run.
    await judgeAll({ ...input, items: [item('pre')], signal: undefined });
    const before = server.requests.length;

    const res = await judgeBatch(input);
    expect(res.cacheHits).toBe(1);
    expect(res.calls).toBe(3);
    expect(res.fallbackCalls).toBe(0);
    expect(res.batchId).toMatch(/^batch_/);
    expect(res.judgments.map((j) => [j.promptId, j.sample, j.cached])).toEqual([
      ['pre', 0, true],
      ['a', 0, false],
      ['b', 0, false],
      ['b', 1, false],
      ['c', 0, false],
    ]);
    expect(res.judgments[2]!.probs!.oppose).toBeGreaterThan(0.9);

    // The uploaded file holds exactly the three distinct uncached requests, as one-token logprob calls.
    const upload = [...server.files.values()].find((f) => f.purpose === 'batch');
    const lines = upload!.content.trim().split('\n').map((l) => JSON.parse(l) as { custom_id: string; url: string; body: ChatRequestBody });
    expect(lines).toHaveLength(3);
    expect(lines.every((l) => l.url === '/v1/chat/completions' && l.body.max_tokens === 1 && l.body.logprobs === true && l.body.temperature === 0)).toBe(true);
    expect(new Set(lines.map((l) => l.custom_id)).size).toBe(3);

    expect(paths(server).slice(before)).toEqual([
      'POST /v1/files',
      'POST /v1/batches',
      'GET /v1/batches/batch',
      'GET /v1/batches/batch',
      'GET /v1/batches/batch',
      'GET /v1/files/file/content',
    ]);
    expect(beats[0]!.batchId).toBe(res.batchId);
    expect(beats.at(-1)!.status).toBe('completed');

    // Everything is cached now: a second run touches nothing.
    const n = server.requests.length;
    const again = await judgeBatch(input);
    expect(server.requests.length).toBe(n);
    expect(again.batchId).toBeUndefined();
    expect(again.cacheHits).toBe(4);
    expect(again.judgments.map((j) => j.probs)).toEqual(res.judgments.map((j) => j.probs));
  });

  it('judges synchronously what the batch could not serve', async () => {
    let batchPhase = true;
    const { server, input } = await setup({
      chat: (body) => (batchPhase && idOf(body) === 'c' ? apiError(500, 'batch worker crashed') : ok([['neutral', -0.1]])),
    });
    const p = judgeBatch({ ...input, heartbeat: (b) => (b.status === 'completed' ? (batchPhase = false) : undefined) });
    const res = await p;
    expect(res.fallbackCalls).toBe(1);
    expect(res.calls).toBe(3);
    expect(res.judgments.every((j) => j.probs !== null)).toBe(true);
    expect(server.chatRequests).toHaveLength(1);
    expect(idOf(JSON.parse(server.chatRequests[0]!.body) as ChatRequestBody)).toBe('c');
  });

  it('resumes an existing batch instead of submitting another', async () => {
    const { server, input } = await setup({});
    const first = await judgeBatch({ ...input, cache: new InMemoryJudgeCache() });
    const uploads = server.requests.filter((r) => r.path.endsWith('/files')).length;
    const resumed = await judgeBatch({ ...input, cache: new InMemoryJudgeCache(), batchId: first.batchId });
    expect(server.requests.filter((r) => r.path.endsWith('/files')).length).toBe(uploads);
    expect(server.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/batches')).length).toBe(1);
    expect(resumed.judgments.map((j) => j.probs)).toEqual(first.judgments.map((j) => j.probs));
  });

  it('cancels the batch when aborted while polling', async () => {
    const controller = new AbortController();
    const { server, input } = await setup({ batchPollsUntilDone: 1_000 }, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('activity cancelled')), 150);
    await expect(judgeBatch(input)).rejects.toThrow('activity cancelled');
    expect(server.requests.some((r) => r.path.endsWith('/cancel'))).toBe(true);
    expect([...server.batches.values()][0]!.status).toBe('cancelled');
  });

  it('surfaces a failed batch as non-retryable', async () => {
    const { input } = await setup({ batchFails: true });
    const err = await judgeBatch(input).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JudgeRequestError);
    expect((err as Error).message).toMatch(/line 1: model not available for batch/);
  });
});
