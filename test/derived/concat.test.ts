/**
 * `concat` built datasets: the spec's checks, and the build through `datasetWorkflow` on the real dev
 * server with the real activities and store (the stack's S3 server): rows of both sources in label
 * order, a cached rebuild, and a seeded `limit`.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TASK_QUEUES } from '../../common/config';
import { validateLineageSpec } from '../../common/spec';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes, getVerified } from '../../activities/store';
import { datasetWorkflow, type DatasetWorkflowResult } from '../../workflows';
import { fakeActivities, loadStackEnv, recorder, stage, startTestServer, testSpec, uniqueName, withWorkers } from '../support/workflowEnv';
import * as fs from 'node:fs/promises';

const concat = (extra: Record<string, unknown> = {}) => ({ build: 'concat', format: 'chat', from: { b: 'sft', a: 'more' }, ...extra });
// A seed of its own per run: the build key must be new, or the first build would come from the cache.
const SEED = Math.floor(Math.random() * 1e9);
function spec(name: string, datasets: Record<string, unknown>, seed = SEED): Record<string, unknown> {
  const s = testSpec(name, [stage.sft()], seed) as { datasets: Record<string, unknown> };
  s.datasets.more = { uri: 'file:test/fixtures/chat-small.jsonl', format: 'chat' };
  Object.assign(s.datasets, datasets);
  return s;
}
const issues = (input: unknown) => {
  const r = validateLineageSpec(input);
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
};

describe('concat in the spec', () => {
  it('accepts two entries of its format and lets a stage train on the result', () => {
    const s = spec('c', { joined: concat() }) as { stages: Array<Record<string, unknown>> };
    s.stages[0]!.dataset = 'joined';
    expect(issues(s)).toEqual([]);
  });
  it('refuses a source of another format, a single source and an unknown one', () => {
    expect(issues(spec('c', { joined: concat({ from: { a: 'sft', b: 'pairs' } }) }))).toEqual(['datasets.joined.from.b: dataset "pairs" has format stance-pairs; concat needs chat here']);
    expect(issues(spec('c', { joined: concat({ from: { a: 'sft' } }) }))[0]).toMatch(/^datasets\.joined\.from: concat needs 2 to 32 datasets/);
    expect(issues(spec('c', { joined: concat({ from: { a: 'sft', b: 'nope' } }) }))).toEqual(['datasets.joined.from.b: unknown dataset "nope" (not in datasets)']);
  });
});

let env: TestWorkflowEnvironment;
const lines = async (file: string) => (await fs.readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as unknown);

beforeAll(async () => {
  loadStackEnv();
  resetWorkerEnv();
  env = await startTestServer();
}, 180_000);
afterAll(async () => {
  await env?.teardown();
});

describe('concat through datasetWorkflow (real dev server, activities and store)', () => {
  it('joins the rows in label order, serves a rebuild from the cache, samples with limit', async () => {
    const name = uniqueName('concat');
    const rec = recorder();
    const run = (s: Record<string, unknown>, dataset: string, id: string) =>
      withWorkers(env, fakeActivities(env, rec, () => ({ steps: [2] })), async () =>
        (await env.client.workflow.execute(datasetWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: id, args: [{ spec: s, dataset }] })) as DatasetWorkflowResult,
      );
    const sft = await lines('data/demo/sft.jsonl');
    const more = await lines('test/fixtures/chat-small.jsonl');
    const s = spec(name, { joined: concat(), sampled: concat({ limit: 5 }) });

    const built = (await run(s, 'joined', `valuedrift-dataset/${name}/joined`)).built.joined!;
    expect(built).toMatchObject({ cached: false, dataset: { name: 'joined', format: 'chat', rows: sft.length + more.length } });
    expect(built.counts).toEqual({ 'from.a': more.length, 'from.b': sft.length, rows: sft.length + more.length });
    // Label a ("more") before label b ("sft"), whatever order `from` lists them in.
    const rows = (await getVerified(built.dataset.ref)).toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as unknown);
    expect(rows).toEqual([...more, ...sft]);
    const manifest = JSON.parse((await getBytes(built.outputs.manifest!.uri)).toString('utf8')) as { parts: Array<{ label: string; dataset: string; rows: number }> };
    expect(manifest.parts.map((p) => [p.label, p.dataset, p.rows])).toEqual([['a', 'more', more.length], ['b', 'sft', sft.length]]);

    const again = (await run(s, 'joined', `valuedrift-dataset/${name}/joined-again`)).built.joined!;
    expect(again).toMatchObject({ cached: true, buildKey: built.buildKey, dataset: { ref: { sha256: built.dataset.ref.sha256 } } });

    const sampled = (await run(s, 'sampled', `valuedrift-dataset/${name}/sampled`)).built.sampled!;
    expect(sampled.buildKey).not.toBe(built.buildKey);
    const picked = (await getVerified(sampled.dataset.ref)).toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as unknown);
    expect(picked).toHaveLength(5);
    for (const r of picked) expect(rows).toContainEqual(r);
    // Another seed, another sample (and another key).
    const other = (await run(spec(name, { sampled: concat({ limit: 5 }) }, SEED + 1), 'sampled', `valuedrift-dataset/${name}/sampled-8`)).built.sampled!;
    expect(other.buildKey).not.toBe(sampled.buildKey);

  }, 300_000);
});
