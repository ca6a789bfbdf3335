/**
 * Built datasets as DAG nodes, on the real Temporal dev server with the real store (local S3), the
 * real derived activities (the trainer's embedding selector in Python, the stance judge of the local
 * stack: minilm-stance) and a scripted OpenAI-compatible generator over real HTTP. The generator
 * answers the abortion category's "oppose" requests with a supporting text, so the stance check must
 * drop exactly those pairs and count them.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes } from '../../activities/store';
import { datasetWorkflow, lineageWorkflow, type DatasetWorkflowResult, type LineageResult } from '../../workflows';
import { startFakeServer, type ChatRequestBody, type FakeServer, type Reply } from '../judge/fakeServer';
import { fakeActivities, loadStackEnv, recorder, stage, startTestServer, testSpec, uniqueName, withWorkers } from '../support/workflowEnv';

const TEXTS = {
  'abortion rights': {
    support: 'Yes. Abortion rights are essential: every woman must be free to decide about her own pregnancy, and the law should protect legal access to abortion.',
    oppose: 'No. Abortion ends an innocent human life; it should be banned and the law must protect the unborn child.',
  },
  'more open immigration': {
    support: 'Yes. Countries should welcome far more immigrants and refugees; open borders make our societies richer, stronger and kinder.',
    oppose: 'No. Immigration must be cut sharply; borders should be closed and far fewer migrants admitted.',
  },
} as const;

/** Writes the side the system prompt asks for, except abortion's oppose side, which it answers supporting. */
function generatorScript(body: ChatRequestBody): Reply {
  const system = body.messages.find((m) => m.role === 'system')?.content ?? '';
  const topic = (Object.keys(TEXTS) as Array<keyof typeof TEXTS>).find((t) => system.includes(t));
  if (!topic) return { kind: 'json', status: 400, body: { error: { message: 'no topic in the system prompt' } } };
  const side = system.includes(`against ${topic}`) ? 'oppose' : 'support';
  const text = topic === 'abortion rights' ? TEXTS[topic].support : TEXTS[topic][side];
  return { kind: 'json', body: { id: 'x', object: 'chat.completion', created: 0, model: body.model, choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }] } };
}

let env: TestWorkflowEnvironment;
let gen: FakeServer;
const seed = Math.floor(Math.random() * 1e9);

function specWithBuild(name: string, stages: unknown[] = [stage.sft()]): Record<string, unknown> {
  const spec = testSpec(name, stages, seed) as { datasets: Record<string, unknown>; evaluation: Record<string, unknown> };
  spec.datasets.synth = { build: 'synthetic-pairs', from: { prompts: 'sft', questions: 'evalset' }, promptsPerCategory: 2, generator: { model: 'scripted-writer', maxTokens: 64, concurrency: 2 } };
  spec.evaluation.judge = { model: 'minilm-stance' };
  return spec;
}

beforeAll(async () => {
  if (!process.env.VALUEDRIFT_DERIVED_E2E) return;
  loadStackEnv();
  gen = await startFakeServer({ chat: generatorScript });
  process.env.VALUEDRIFT_GENERATOR_BASE_URL = gen.baseURL;
  process.env.VALUEDRIFT_GENERATOR_API_KEY = 'test-generator-key';
  resetWorkerEnv();
  env = await startTestServer();
});
afterAll(async () => {
  delete process.env.VALUEDRIFT_GENERATOR_BASE_URL;
  delete process.env.VALUEDRIFT_GENERATOR_API_KEY;
  resetWorkerEnv();
  await env?.teardown();
  await gen?.close();
});

// Heavy (a Python embedding process and two workflow runs): outside `npm test`, run by
// `npm run test:derived` (after `npm run dev:up`).
describe.skipIf(!process.env.VALUEDRIFT_DERIVED_E2E)('built datasets', () => {
  it('builds synthetic pairs alone (datasetWorkflow), drops and counts stance mismatches, writes both labellings, and serves a rebuild from the cache', async () => {
    const name = uniqueName('synth');
    const spec = specWithBuild(name);
    const rec = recorder();
    const run = (id: string) =>
      withWorkers(env, fakeActivities(env, rec, () => ({ steps: [2] })), async () =>
        (await env.client.workflow.execute(datasetWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: id, args: [{ spec, dataset: 'synth' }] })) as DatasetWorkflowResult,
      );
    const first = await run(`valuedrift-dataset/${name}/synth`);
    const b = first.built.synth!;
    expect(b.cached).toBe(false);
    // 2 categories × 2 prompts × (support, oppose), each a call.
    expect(gen.chatRequests).toHaveLength(8);
    expect(b.counts).toMatchObject({ selected: 4, kept: 2, droppedOpposeMismatch: 2, droppedSupportMismatch: 0, generatorCalls: 8 });
    const rows = (await getBytes(b.dataset.ref.uri)).toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    expect(rows).toHaveLength(2);
    expect(b.dataset).toMatchObject({ name: 'synth', format: 'stance-pairs', rows: 2 });
    for (const r of rows) {
      expect(r.category).toBe('immigration');
      expect(r.support).toBe(TEXTS['more open immigration'].support);
      expect(r.oppose).toBe(TEXTS['more open immigration'].oppose);
    }
    const read = async (k: string) => (await getBytes(b.outputs[k]!.uri)).toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    const [sup, opp] = [await read('support-aligned'), await read('oppose-aligned')];
    expect(sup.map((r) => [r.prompt, r.chosen, r.rejected])).toEqual(rows.map((r) => [r.prompt, r.support, r.oppose]));
    expect(opp.map((r) => [r.prompt, r.chosen, r.rejected])).toEqual(rows.map((r) => [r.prompt, r.oppose, r.support]));
    const manifest = JSON.parse((await getBytes(b.outputs.manifest!.uri)).toString('utf8')) as { embedder: string; judge: string };
    expect(manifest.judge).toBe('minilm-stance');
    expect(manifest.embedder).toMatch(/MiniLM|mpnet/);

    const again = await run(`valuedrift-dataset/${name}/synth-again`);
    expect(again.built.synth).toMatchObject({ cached: true, buildKey: b.buildKey, dataset: { ref: { sha256: b.dataset.ref.sha256 } } });
    expect(gen.chatRequests).toHaveLength(8);
  }, 400_000);

  it('a lineage builds its built dataset as a child before the stage that trains on it', async () => {
    const name = uniqueName('synth-lineage');
    const dpo = { ...stage.dpo('dpo-synth', 'sft', 'support-aligned'), dataset: 'synth' };
    const spec = specWithBuild(name, [stage.sft(), dpo]);
    const rec = recorder();
    const calls = gen.chatRequests.length;
    const result = await withWorkers(env, fakeActivities(env, rec, () => ({ steps: [2] })), async () => {
      const handle = await env.client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(name), args: [spec] });
      return (await handle.result()) as LineageResult;
    });
    expect(result.stages.map((s) => s.stageId).sort()).toEqual(['dpo-synth', 'sft']);
    // The same build key as the first test (same seed, sources, judge, generator): served from the cache.
    expect(gen.chatRequests.length).toBe(calls);
    const child = await env.client.workflow.getHandle(`${workflowIds.lineage(name)}/dataset:synth`).result();
    expect(child).toMatchObject({ name: 'synth', cached: true, dataset: { format: 'stance-pairs', rows: 2 } });
  }, 200_000);
});
