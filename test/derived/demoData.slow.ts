/**
 * specs/demo-data.json, the spec `npm run demo:data` runs, as a lineage on a real Temporal dev server
 * with the real activities, the stack's S3 server, SmolLM2 as the generator and MiniLM as the judge,
 * unchanged: V-PRISM from the shipped PRISM-shaped export, the synthetic pairs on the demo SFT prompts,
 * both stance analyses, the SFT and the DPO stage on the synthetic pairs, evaluated on the built V-PRISM.
 * `npm run test:derived` (after `npm run dev:up`); minutes, not for `npm test`.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities } from '../../activities';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes, getVerified } from '../../activities/store';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { validateLineageSpec } from '../../common/spec';
import { lineageWorkflow, type LineageResult } from '../../workflows';
import { loadStackEnv, restoreEnv, startTestServer, uniqueName, withWorkers } from '../support/workflowEnv';

const REPO = path.resolve(__dirname, '..', '..');
const ENV_KEYS = ['VALUEDRIFT_EMBEDDER', 'VALUEDRIFT_WORK_DIR', 'VALUEDRIFT_GENERATOR_BASE_URL'];
const saved = { ...process.env };
let env: TestWorkflowEnvironment;
let tmp: string;

beforeAll(async () => {
  if (!process.env.VALUEDRIFT_DERIVED_E2E) return;
  loadStackEnv();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-demodata-'));
  Object.assign(process.env, { VALUEDRIFT_EMBEDDER: 'minilm', VALUEDRIFT_WORK_DIR: path.join(tmp, 'work') });
  delete process.env.VALUEDRIFT_GENERATOR_BASE_URL;
  resetWorkerEnv();
  env = await startTestServer();
}, 180_000);
afterAll(async () => {
  restoreEnv(saved, ENV_KEYS);
  resetWorkerEnv();
  await env?.teardown();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

describe.skipIf(!process.env.VALUEDRIFT_DERIVED_E2E)('specs/demo-data.json (npm run demo:data)', () => {
  it('builds V-PRISM, the synthetic pairs and both analyses with the local parts, then trains on the pairs and evaluates on V-PRISM', async () => {
    const raw = JSON.parse(await fs.readFile(path.join(REPO, 'specs', 'demo-data.json'), 'utf8')) as Record<string, unknown>;
    const name = uniqueName('demo-data');
    const parsed = validateLineageSpec({ ...raw, name });
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    const spec = parsed.spec;
    const id = workflowIds.lineage(name);
    const result = await withWorkers(env, createActivities({ client: env.client }), async () => {
      const handle = await env.client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: id, args: [{ ...raw, name }] });
      return (await handle.result()) as LineageResult;
    });
    const topics = Object.keys(spec.evaluation.topics);

    // V-PRISM: questions under the demo topics, none of the cooking or trivia openings.
    const vp = await env.client.workflow.getHandle(`${id}/dataset:v-prism`).result();
    const vrows = (await getVerified(vp.dataset.ref)).toString('utf8').trim().split('\n').map((l: string) => JSON.parse(l) as { category: string; question: string });
    expect(vrows.length).toBeGreaterThan(0);
    for (const r of vrows) expect(topics).toContain(r.category);
    expect(vrows.map((r) => r.question).join(' ')).not.toMatch(/banana bread|haiku|capital of Australia/i);

    // The synthetic pairs: some kept, every selected pair accounted for.
    const syn = await env.client.workflow.getHandle(`${id}/dataset:synthetic`).result();
    const c = syn.counts as Record<string, number>;
    console.log('demo-data: V-PRISM', JSON.stringify(vp.counts), 'synthetic', JSON.stringify(c));
    expect(c.kept).toBeGreaterThan(0);
    expect(c.kept! + c.droppedEmpty! + c.droppedUnlabelled! + c.droppedSupportMismatch! + c.droppedOpposeMismatch!).toBe(c.selected);

    // Both analyses wrote a report; the synthetic set's summary has a value gap per topic it kept rows for.
    for (const a of ['sft-stances', 'synthetic-stances']) {
      const r = await env.client.workflow.getHandle(`${id}/dataset:${a}`).result();
      expect((await getBytes(r.outputs.report.uri)).toString('utf8'), a).toContain('Content-Security-Policy');
    }

    // The stages trained, the DPO one on the synthetic pairs, and both have drift rows on V-PRISM's topics.
    expect(result.stages.map((s) => s.stageId).sort()).toEqual(['dpo-synthetic', 'sft']);
    for (const s of result.stages) {
      expect(s.driftRows.length, s.stageId).toBeGreaterThan(0);
      for (const row of s.driftRows) expect(topics).toContain(row.category);
    }
  }, 3_600_000);
});
