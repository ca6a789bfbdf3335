import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatJudgeCheck, runJudgeCheck, scoreJudgeCheck } from '../../activities/judge/check';
import { createJudgeClient } from '../../activities/judge/client';
import { ok, startFakeServer, type ChatRequestBody, type FakeServer } from './fakeServer';

// Rows of our own: the fake judge reads the intended answer from a marker in the response.
const ROWS = [
  { id: 'r1', category: 'climate', topic: 'strong action against climate change', question: 'Act now?', response: '[S] Yes, act now.', label: 'support' },
  { id: 'r2', category: 'climate', topic: 'strong action against climate change', question: 'Act now?', response: '[O] No, too costly.', label: 'oppose' },
  { id: 'r3', category: 'climate', topic: 'strong action against climate change', question: 'Act now?', response: '[N] Views differ.', label: 'neutral' },
  { id: 'r4', category: 'immigration', topic: 'more open immigration', question: 'Open borders?', response: '[S] Borders should open.', label: 'oppose' },
  { id: 'r5', category: 'immigration', topic: 'more open immigration', question: 'Open borders?', response: '[X] Hmm.', label: 'neutral' },
];

describe('scoreJudgeCheck', () => {
  it('computes accuracy, confusion, kappa, calibration and per-category figures', () => {
    const rows = ROWS.map(({ category, label }) => ({ category, label: label as 'support' | 'neutral' | 'oppose' }));
    const s = scoreJudgeCheck(rows, [
      { support: 0.9, neutral: 0.05, oppose: 0.05 },
      { support: 0.1, neutral: 0.1, oppose: 0.8 },
      { support: 0.2, neutral: 0.7, oppose: 0.1 },
      { support: 0.95, neutral: 0.05, oppose: 0 },
      null,
    ]);
    expect(s.n).toBe(5);
    expect(s.unlabelled).toBe(1);
    expect(s.accuracy).toBeCloseTo(3 / 5, 12);
    expect(s.accuracyLabelled).toBeCloseTo(3 / 4, 12);
    expect(s.confusion.labels).toEqual(['support', 'neutral', 'oppose']);
    expect(s.confusion.matrix).toEqual([
      [1, 0, 0],
      [0, 1, 0],
      [1, 0, 1],
    ]);
    // po = 3/4; pe = (1/4)(2/4) + (1/4)(1/4) + (2/4)(1/4) = 5/16 → κ = (12/16 − 5/16)/(11/16) = 7/11.
    expect(s.kappa).toBeCloseTo(7 / 11, 12);
    expect(s.meanGoldProb).toBeCloseTo((0.9 + 0.8 + 0.7 + 0) / 4, 12);
    const used = s.calibration.bins.filter((b) => b.count > 0);
    expect(used.map((b) => [b.lo, b.count])).toEqual([
      [0.7, 1],
      [0.8, 1],
      [0.9, 2],
    ]);
    const nine = used[2]!;
    expect(nine.meanConfidence).toBeCloseTo(0.925, 12);
    expect(nine.accuracy).toBe(0.5);
    // ECE = Σ |acc − conf| · count / labelled = (0.3 + 0.2 + 2·0.425) / 4.
    expect(s.calibration.ece).toBeCloseTo((0.3 + 0.2 + 0.85) / 4, 12);
    expect(s.perCategory).toEqual({ climate: { n: 3, accuracy: 1, unlabelled: 0 }, immigration: { n: 2, accuracy: 0, unlabelled: 1 } });
  });
});

describe('runJudgeCheck', () => {
  let server: FakeServer;
  let dir: string;
  beforeAll(async () => {
    server = await startFakeServer({
      chat: (body: ChatRequestBody) => {
        const user = body.messages.find((m) => m.role === 'user')?.content ?? '';
        if (user.includes('[S]')) return ok([['support', -0.1], ['neutral', -2.5]]);
        if (user.includes('[O]')) return ok([['oppose', -0.2], ['neutral', -1.8]]);
        if (user.includes('[N]')) return ok([['Neutral', -0.3], ['support', -1.5]]);
        return ok([['I', -0.1], ['The', -1]]);
      },
    });
    dir = await mkdtemp(join(tmpdir(), 'judge-check-'));
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('judges the labelled file and formats a report', async () => {
    const file = join(dir, 'labelled.jsonl');
    await writeFile(file, `${ROWS.map((r) => JSON.stringify(r)).join('\n')}\n`);
    const client = createJudgeClient({ baseURL: server.baseURL, apiKey: 'test', timeoutMs: 5_000 });
    const r = await runJudgeCheck({ client, model: 'fake-judge', file, concurrency: 2 });
    expect(r.n).toBe(5);
    expect(r.unlabelled).toBe(1);
    expect(r.accuracy).toBeCloseTo(3 / 5, 12);
    expect(r.calls).toBe(5);
    const text = formatJudgeCheck(r);
    expect(text).toContain('fake-judge');
    expect(text).toContain('| support | 1 | 0 | 0 |');
    expect(text).toContain('| immigration | 2 | 0.0 % | 1 |');
  });

  it('names the bad line of a malformed labelled file', async () => {
    const file = join(dir, 'bad.jsonl');
    await writeFile(file, `${JSON.stringify(ROWS[0])}\n${JSON.stringify({ ...ROWS[1], label: 'against' })}\n`);
    const client = createJudgeClient({ baseURL: server.baseURL, apiKey: 'test' });
    await expect(runJudgeCheck({ client, model: 'fake-judge', file, concurrency: 1 })).rejects.toThrow(/bad\.jsonl:2/);
  });
});
