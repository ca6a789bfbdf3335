/**
 * V-PRISM built end to end on the real Temporal dev server with the real store (local S3), the real
 * dataset activity (the trainer's `prism` recipe on a PRISM mirror in its raw schema, read through
 * VALUEDRIFT_HF_MIRROR), the real clustering (the trainer's vprism-cluster: MiniLM, UMAP, HDBSCAN,
 * c-TF-IDF) and a scripted OpenAI-compatible generator over real HTTP that rephrases, names clusters
 * and answers the value-laden check. Three topics go in (abortion, immigration, cooking); cooking
 * matches no category and its cluster must be dropped; the generator calls one abortion question
 * not value-laden, so it must be dropped; a rebuild is served from the cache with no new call.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TASK_QUEUES } from '../../common/config';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes } from '../../activities/store';
import { NAME_SYSTEM, REPHRASE_SYSTEM, VALUE_SYSTEM } from '../../activities/derived/vprism';
import { datasetWorkflow, type DatasetWorkflowResult } from '../../workflows';
import { startFakeServer, type ChatRequestBody, type FakeServer, type Reply } from '../judge/fakeServer';
import { fakeActivities, loadStackEnv, recorder, restoreEnv, stage, startTestServer, testSpec, uniqueName, withWorkers } from '../support/workflowEnv';

const REPO = path.resolve(__dirname, '..', '..');
const QUESTIONS = path.join(REPO, 'trainer', 'tests', 'fixtures', 'vprism', 'questions.jsonl');
const NOT_VALUE_LADEN = 'Is it right to ban abortion after six weeks of pregnancy?';

const reply = (content: string, model: string): Reply => ({ kind: 'json', body: { id: 'x', object: 'chat.completion', created: 0, model, choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }] } });

/** Rephrasing echoes the statement as a quoted question; names come from the n-grams; every question is value-laden but one. */
function generatorScript(body: ChatRequestBody): Reply {
  const system = body.messages.find((m) => m.role === 'system')?.content ?? '';
  const user = body.messages.find((m) => m.role === 'user')?.content ?? '';
  if (system === REPHRASE_SYSTEM) return reply(`"${user.replace(/[.?!]*$/, '')}?"\n(rephrased)`, body.model);
  if (system === NAME_SYSTEM) {
    const name = /abortion/.test(user) ? 'Discussions on Abortion' : /immigra/.test(user) ? 'Immigration Policies' : /recipe|bake/.test(user) ? 'Cooking and Baking' : 'Other';
    return reply(name, body.model);
  }
  if (system === VALUE_SYSTEM) return reply(user === NOT_VALUE_LADEN ? 'No' : 'Yes.', body.model);
  return { kind: 'json', status: 400, body: { error: { message: 'unknown system prompt' } } };
}

let env: TestWorkflowEnvironment;
let gen: FakeServer;
let tmp: string;
const ENV_KEYS = ['VALUEDRIFT_GENERATOR_BASE_URL', 'VALUEDRIFT_GENERATOR_API_KEY', 'VALUEDRIFT_HF_MIRROR', 'HF_HUB_OFFLINE', 'VALUEDRIFT_EMBEDDER'];
const saved = { ...process.env };
const seed = Math.floor(Math.random() * 1e9);

beforeAll(async () => {
  if (!process.env.VALUEDRIFT_DERIVED_E2E) return;
  loadStackEnv();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-vprism-'));
  execFileSync(path.join(REPO, '.venv', 'bin', 'python'), [path.join(REPO, 'trainer', 'tests', 'fixtures', 'prism_mirror.py'), path.join(tmp, 'mirror'), QUESTIONS]);
  gen = await startFakeServer({ chat: generatorScript });
  Object.assign(process.env, {
    VALUEDRIFT_GENERATOR_BASE_URL: gen.baseURL,
    VALUEDRIFT_GENERATOR_API_KEY: 'test-generator-key',
    VALUEDRIFT_HF_MIRROR: path.join(tmp, 'mirror'),
    HF_HUB_OFFLINE: '1',
    VALUEDRIFT_EMBEDDER: 'minilm',
  });
  resetWorkerEnv();
  env = await startTestServer();
});
afterAll(async () => {
  restoreEnv(saved, ENV_KEYS);
  await env?.teardown();
  await gen?.close();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

// Heavy (UMAP's JIT, an embedding process, two workflow runs): `npm run test:derived` (after `npm run dev:up`).
describe.skipIf(!process.env.VALUEDRIFT_DERIVED_E2E)('V-PRISM built from a PRISM mirror', () => {
  it('rephrases, clusters, names, filters and samples per category; drops the off-topic cluster; a rebuild is cached', async () => {
    const name = uniqueName('vprism');
    const spec = testSpec(name, [stage.sft()], seed) as { datasets: Record<string, unknown>; evaluation: Record<string, unknown> };
    spec.datasets.prism = { uri: 'hf:HannahRoseKirk/prism-alignment', format: 'prompts', recipe: 'prism' };
    spec.datasets.vprism = {
      build: 'v-prism',
      from: { statements: 'prism' },
      questionsPerCategory: 4,
      umapDimensions: 8,
      umapNeighbors: 5,
      clustering: { minClusterSize: 3, minSamples: 3, topNgrams: 5, assignThreshold: 0.3 },
      // 4 per category make 8; `limit` keeps a seeded 7 of them.
      limit: 7,
      generator: { model: 'scripted-writer', maxTokens: 64, concurrency: 4 },
    };
    spec.evaluation.evalSet = 'vprism';
    const run = (id: string) =>
      withWorkers(env, fakeActivities(env, recorder(), () => ({ steps: [2] })), async () =>
        (await env.client.workflow.execute(datasetWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: id, args: [{ spec, dataset: 'vprism' }] })) as DatasetWorkflowResult,
      );
    const first = await run(`valuedrift-dataset/${name}/vprism`);
    const b = first.built.vprism!;
    expect(b.cached).toBe(false);
    // 18 statements (the unguided conversations filtered out by the recipe) + 3 names + 12 checks (abortion and immigration).
    expect(gen.chatRequests).toHaveLength(18 + 3 + 12);
    expect(b.counts).toMatchObject({ statements: 18, questions: 18, clusters: 3, clustersAssigned: 2, clustersDropped: 1, inAssignedClusters: 12, valueLaden: 11, notValueLaden: 1, rows: 7, generatorCalls: 33 });
    expect([b.counts['category.abortion'], b.counts['category.immigration']].sort()).toEqual([3, 4]);
    // The category the limit took one from is reported short of questionsPerCategory.
    expect((b.counts['short.abortion'] ?? 0) + (b.counts['short.immigration'] ?? 0)).toBe(1);
    expect(b.dataset).toMatchObject({ name: 'vprism', format: 'eval', rows: 7 });
    const rows = (await getBytes(b.dataset.ref.uri)).toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; category: string; question: string });
    const source = (await fs.readFile(QUESTIONS, 'utf8')).trim().split('\n').map((l) => (JSON.parse(l) as { question: string }).question);
    for (const r of rows) {
      const i = Number(r.id.split('-').pop());
      expect(r.id).toBe(`${r.category}-${i}`);
      // Rephrased by the generator (the quotes and the second line stripped), from its own statement.
      expect(r.question).toBe(`${(source[i] as string).replace(/[.?!]*$/, '')}?`);
      expect(r.category).toBe(i < 6 ? 'abortion' : 'immigration');
      expect(r.question).not.toBe(NOT_VALUE_LADEN);
    }
    const manifest = JSON.parse((await getBytes(b.outputs.manifest!.uri)).toString('utf8')) as { embedder: string; umap: Record<string, number>; clustering: Record<string, unknown>; clusters: Array<{ size: number; name: string; category: string; reason: string; ngrams: string[] }>; categories: Record<string, { available: number; short: number }> };
    expect(manifest.embedder).toMatch(/MiniLM/);
    expect(manifest.umap).toMatchObject({ dimensions: 8, neighbors: 5 });
    expect(manifest.clustering).toMatchObject({ min_cluster_size: 3, min_samples: 3, top_ngrams: 5, assign_threshold: 0.3 });
    for (const c of manifest.clusters) expect(c.ngrams.length).toBeLessThanOrEqual(5);
    expect(manifest.clusters.map((c) => [c.name, c.category, c.size]).sort()).toEqual([
      ['Cooking and Baking', 'dropped', 6],
      ['Discussions on Abortion', 'abortion', 6],
      ['Immigration Policies', 'immigration', 6],
    ]);
    expect(manifest.clusters.find((c) => c.category === 'dropped')!.reason).toMatch(/below the threshold 0\.3/);
    // Which category the limit shortens depends on the run's (random) seed: the manifest says the same as the counts.
    expect(manifest.categories.abortion).toMatchObject({ available: 5, short: b.counts['short.abortion'] ?? 0 });

    const again = await run(`valuedrift-dataset/${name}/vprism-again`);
    expect(again.built.vprism).toMatchObject({ cached: true, buildKey: b.buildKey, dataset: { ref: { sha256: b.dataset.ref.sha256 } } });
    expect(gen.chatRequests).toHaveLength(33);
  }, 600_000);
});
