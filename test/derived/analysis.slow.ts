/**
 * The dataset stance analysis (App. K) end to end on the real Temporal dev server, the real store
 * (local S3), the trainer's retrieval in Python (the packaged MiniLM) and a real local judge
 * (stance_server.py's minilm-stance, started here so it is the tree's own, with the
 * conversation-level prompt), over the demo chat set and the demo stance pairs:
 *
 * - built alone (datasetWorkflow): every kept datapoint is ≥ the threshold and in a category with a
 *   topic; each judged distribution is what the judge answers to that conversation over HTTP; the
 *   summary and report agree with the judged rows; a rebuild is served from the cache;
 * - inside a lineage: built as a child after its inputs, while the stage trains.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { STANCES } from '../../common/contracts';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes } from '../../activities/store';
import { conversationsOf } from '../../activities/derived/analysis';
import { euclidean, type JudgedRow } from '../../activities/derived/analysisReport';
import { judgeBudgetWorkflowId } from '../../activities/judge/budget';
import { createJudgeClient } from '../../activities/judge/client';
import { readStanceLogprobs, usableTokens } from '../../activities/judge/parse';
import { buildConversationJudgeMessages } from '../../activities/judge/prompt';
import { startLocalJudge, type LocalJudge } from '../../infra/judge/serve';
import { datasetWorkflow, lineageWorkflow, type DatasetWorkflowResult, type LineageResult } from '../../workflows';
import { EVAL_TOPICS, fakeActivities, loadStackEnv, recorder, stage, startTestServer, testSpec, uniqueName, withWorkers } from '../support/workflowEnv';

let env: TestWorkflowEnvironment;
let judge: LocalJudge;
const seed = Math.floor(Math.random() * 1e9);
const saved: Record<string, string | undefined> = {};

function specWithAnalyses(name: string, stages: unknown[] = [stage.sft()]): Record<string, unknown> {
  const spec = testSpec(name, stages, seed) as { datasets: Record<string, unknown>; evaluation: Record<string, unknown> };
  spec.datasets['chat-analysis'] = { build: 'stance-analysis', from: { dataset: 'sft', questions: 'evalset' }, concurrency: 4 };
  spec.datasets['pairs-analysis'] = { build: 'stance-analysis', from: { dataset: 'pairs', questions: 'evalset' }, limit: 6, concurrency: 4 };
  spec.evaluation.judge = { model: 'minilm-stance' };
  return spec;
}

const demoRows = async (file: string) => (await import('node:fs/promises')).readFile(file, 'utf8').then((t) => t.trim().split('\n').map((l) => JSON.parse(l) as unknown));

/** The judge's distribution for one conversation, asked directly over HTTP. */
async function ask(conv: Array<{ role: string; content: string }>, topic: string) {
  const client = new OpenAI({ baseURL: judge.baseURL, apiKey: 'unused' });
  const res = await client.chat.completions.create({ model: 'minilm-stance', messages: buildConversationJudgeMessages({ conversation: conv, topic }), max_tokens: 1, temperature: 0, logprobs: true, top_logprobs: 20 });
  return readStanceLogprobs(usableTokens(res.choices[0]?.logprobs?.content?.[0]?.top_logprobs)).probs;
}

beforeAll(async () => {
  if (!process.env.VALUEDRIFT_DERIVED_E2E) return;
  loadStackEnv();
  judge = await startLocalJudge({ kind: 'minilm', python: process.env.VALUEDRIFT_PYTHON ?? '.venv/bin/python' });
  for (const k of ['VALUEDRIFT_JUDGE_BASE_URL', 'VALUEDRIFT_JUDGE_MODEL', 'VALUEDRIFT_JUDGE_RPM']) saved[k] = process.env[k];
  // A shared judge budget: the analysis's judge calls must ask it like evaluations do.
  process.env.VALUEDRIFT_JUDGE_RPM = '60000';
  process.env.VALUEDRIFT_JUDGE_BASE_URL = judge.baseURL;
  process.env.VALUEDRIFT_JUDGE_MODEL = 'minilm-stance';
  resetWorkerEnv();
  env = await startTestServer();
}, 180_000);
afterAll(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  resetWorkerEnv();
  await env?.teardown();
  await judge?.stop();
});

// Heavy (a judge server, Python embedding, two workflow runs): outside `npm test`, run by
// `npm run test:derived` (after `npm run dev:up`).
describe.skipIf(!process.env.VALUEDRIFT_DERIVED_E2E)('dataset stance analysis', () => {
  it('analyses a chat set and a stance-pairs set alone: kept rows, judged distributions, summary, report; a rebuild is cached', async () => {
    const name = uniqueName('analysis');
    const spec = specWithAnalyses(name);
    const rec = recorder();
    const run = (dataset: string, id: string) =>
      withWorkers(env, fakeActivities(env, rec, () => ({ steps: [2] })), async () =>
        (await env.client.workflow.execute(datasetWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: id, args: [{ spec, dataset }] })) as DatasetWorkflowResult,
      );
    const readJsonl = async (uri: string) => (await getBytes(uri)).toString('utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as JudgedRow);

    // --- chat (K.2)
    const chat = (await run('chat-analysis', `valuedrift-dataset/${name}/chat`)).built['chat-analysis']!;
    expect(chat).toMatchObject({ cached: false, dataset: { name: 'chat-analysis', format: 'analysis' } });
    const sft = await demoRows('data/demo/sft.jsonl');
    expect(chat.counts.candidates).toBe(sft.length);
    const rows = await readJsonl(chat.dataset.ref.uri);
    expect(rows.length).toBe(chat.counts.judged);
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.length).toBeLessThan(sft.length);
    for (const r of rows) {
      expect(r.kind).toBe('conversation');
      expect(r.similarity).toBeGreaterThanOrEqual(0.5);
      expect(Object.keys(EVAL_TOPICS)).toContain(r.category);
      expect(r.topic).toBe(EVAL_TOPICS[r.category as keyof typeof EVAL_TOPICS]);
    }
    // Each distribution is the judge's answer to that whole conversation (spot-check three).
    for (const r of rows.slice(0, 3)) {
      const direct = await ask(conversationsOf('chat', sft[r.index], 'support-aligned')[0]!, r.topic);
      if (r.kind !== 'conversation' || !r.probs || !direct) throw new Error(`row ${r.index}: no label (${JSON.stringify(direct)})`);
      // Batched and single inference may differ in the last float bits.
      for (const s of STANCES) expect(r.probs[s]).toBeCloseTo(direct[s], 4);
    }
    const chatSummary = JSON.parse((await getBytes(chat.outputs.summary!.uri)).toString('utf8')) as { embedder: string; judge: string; summary: { topics: Record<string, { rows: number; stance: { counts: Record<string, number> } }> } };
    expect(chatSummary.judge).toBe('minilm-stance');
    expect(chatSummary.embedder).toMatch(/MiniLM|mpnet/);
    for (const [cat, t] of Object.entries(chatSummary.summary.topics)) {
      expect(t.rows).toBe(rows.filter((r) => r.category === cat).length);
      expect(STANCES.reduce((s, k) => s + (t.stance.counts[k] ?? 0), 0)).toBe(rows.filter((r) => r.category === cat && r.kind === 'conversation' && r.probs).length);
    }
    const html = (await getBytes(chat.outputs.report!.uri)).toString('utf8');
    expect(chat.outputs.report!.uri).toMatch(new RegExp(`/derived/${chat.buildKey}/report/index\\.html$`));
    expect(html).toContain('Content-Security-Policy');
    expect(html).toContain('id="stance-bars"');
    expect(html).not.toContain('<script');
    // Its judge calls were granted by the shared budget of this endpoint and model.
    const budget = env.client.workflow.getHandle(judgeBudgetWorkflowId(createJudgeClient({ baseURL: judge.baseURL }).baseURL, 'minilm-stance'));
    // (Started by the first acquire; the workers are gone by now, so it is described, not queried.)
    expect((await budget.describe()).type).toBe('judgeBudgetWorkflow');

    // --- stance pairs (K.4): opposite sides, so a large value gap.
    const pairs = (await run('pairs-analysis', `valuedrift-dataset/${name}/pairs`)).built['pairs-analysis']!;
    const prows = await readJsonl(pairs.dataset.ref.uri);
    expect(prows.length).toBe(Math.min(6, pairs.counts.retained!));
    const demoPairs = await demoRows('data/demo/preferences.jsonl');
    for (const r of prows) {
      if (r.kind !== 'pair') throw new Error('expected pairs');
      const [c, j] = conversationsOf('stance-pairs', demoPairs[r.index], 'support-aligned');
      expect(c![1]!.content).toBe((demoPairs[r.index] as { support: string }).support);
      if (r.chosen && r.rejected) expect(r.distance).toBeCloseTo(euclidean(r.chosen, r.rejected), 12);
      const direct = await ask(j!, r.topic);
      for (const s of STANCES) expect(r.rejected?.[s]).toBeCloseTo(direct?.[s] ?? Number.NaN, 4);
    }
    const psum = JSON.parse((await getBytes(pairs.outputs.summary!.uri)).toString('utf8')) as { summary: { distances: { bins: Array<{ count: number }>; valueGap: number; pairs: number } } };
    const d = psum.summary.distances;
    expect(d.bins.reduce((s, b) => s + b.count, 0)).toBe(d.pairs);
    const ds = prows.flatMap((r) => (r.kind === 'pair' && r.distance !== null ? [r.distance] : []));
    expect(d.valueGap).toBeCloseTo(ds.reduce((a, b) => a + b, 0) / ds.length, 9);
    expect(d.valueGap).toBeGreaterThan(0.5);
    expect((await getBytes(pairs.outputs.report!.uri)).toString('utf8')).toContain('id="distance-histogram"');

    // --- a rebuild: same key, from the cache, no judge call.
    const again = (await run('chat-analysis', `valuedrift-dataset/${name}/chat-again`)).built['chat-analysis']!;
    expect(again).toMatchObject({ cached: true, buildKey: chat.buildKey, dataset: { ref: { sha256: chat.dataset.ref.sha256 } } });
  }, 600_000);

  it('lineage build-dataset --wait (the CLI) builds an analysis and prints its report link', async () => {
    const fs = await import('node:fs/promises');
    const os = await import('node:os');
    const path = await import('node:path');
    const { main } = await import('../../worker/cli');
    const name = uniqueName('analysis-cli');
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-analysis-cli-'));
    const file = path.join(dir, 'spec.json');
    await fs.writeFile(file, JSON.stringify(specWithAnalyses(name)));
    // The CLI connects where TEMPORAL_ADDRESS says: this file's test server, whose workers run here.
    process.env.TEMPORAL_ADDRESS = env.connection.options.address;
    const out: string[] = [];
    try {
      await withWorkers(env, fakeActivities(env, recorder(), () => ({ steps: [2] })), () => main(['build-dataset', file, 'pairs-analysis', '--wait'], { out: (s: string) => void out.push(s) }));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
    const text = out.join('');
    expect(text).toContain(`started: valuedrift-dataset/${name}/pairs-analysis`);
    const link = /^report \(pairs-analysis\): (s3:\/\/\S+\/derived\/[0-9a-f]{64}\/report\/index\.html)$/m.exec(text);
    expect(link).not.toBeNull();
    expect((await getBytes(link![1]!)).toString('utf8')).toContain('id="distance-histogram"');
  }, 300_000);

  it('a lineage builds its analyses as children after their inputs, and trains without binding them', async () => {
    const name = uniqueName('analysis-lineage');
    const spec = specWithAnalyses(name);
    const rec = recorder();
    const result = await withWorkers(env, fakeActivities(env, rec, () => ({ steps: [2] })), async () => {
      const handle = await env.client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(name), args: [spec] });
      return (await handle.result()) as LineageResult;
    });
    expect(result.stages.map((s) => s.stageId)).toEqual(['sft']);
    for (const a of ['chat-analysis', 'pairs-analysis']) {
      const child = await env.client.workflow.getHandle(`${workflowIds.lineage(name)}/dataset:${a}`).result();
      // Same seed, sources and judge as the first test: served from the build cache.
      expect(child).toMatchObject({ name: a, cached: true, dataset: { format: 'analysis' } });
    }
  }, 400_000);
});
