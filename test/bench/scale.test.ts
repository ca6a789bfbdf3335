/**
 * The scale bench's harness (bench/scaleHarness.ts) on a tiny tree: the first three stages of the
 * Llama-3.2-3B paper spec (SFT, a reward model, PPO on it) at 2 % of their planned steps, run by the
 * real workflows on a real Temporal dev server with the real store activities against the stack's
 * S3 server. Checks the tree follows `lineage plan`, every checkpoint is evaluated and matched to its
 * announcement, and the history sizes are the server's. The full run is `npm run bench -- scale`.
 */
import * as path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_STAGE_ID, workflowIds } from '../../common/config';
import { checkpointCount } from '../../common/plan';
import { readSpecFile } from '../../worker/specFile';
import { planLineage } from '../../worker/plan';
import { HISTORY_WARN_EVENTS, runScale, scaledTree, type ScaleResult } from '../../bench/scaleHarness';
import { loadStackEnv, startTestServer } from '../support/workflowEnv';

const SPEC = path.join(__dirname, '..', '..', 'specs', 'paper', 'paper-llama3-3b.json');

describe('scaledTree', () => {
  it("follows lineage plan: each stage's steps × scale, a checkpoint every checkpointEvery steps and at the last", async () => {
    const spec = await readSpecFile(SPEC);
    const plan = await planLineage(spec);
    const full = scaledTree(spec, plan, 1);
    expect(full.map((s) => s.id)).toEqual(spec.stages.map((s) => s.id));
    for (const s of full) {
      const p = plan.stages.find((x) => x.id === s.id);
      expect(s.steps).toBe(p?.steps);
      expect(s.checkpointSteps).toHaveLength(p?.checkpoints as number);
      expect(s.checkpointSteps.at(-1)).toBe(s.steps);
      expect(s.evaluated).toBe(s.kind !== 'reward');
    }
    expect(full.filter((s) => s.evaluated).reduce((a, s) => a + s.checkpointSteps.length, 0) + 1).toBe(plan.totals.evaluatedCheckpoints);

    const small = scaledTree(spec, plan, 0.02, 3);
    expect(small.map((s) => s.id)).toEqual(['sft-wildchat', 'rm-wildchat-uf', 'ppo-wildchat-uf']);
    for (const s of small) {
      const p = plan.stages.find((x) => x.id === s.id);
      expect(s.steps).toBe(Math.max(1, Math.round((p?.steps as number) * 0.02)));
      expect(s.checkpointSteps).toHaveLength(checkpointCount(s.steps, s.checkpointEvery).total);
    }
    expect(scaledTree(spec, plan, 0.02, 2).map((s) => s.id)).toEqual(['sft-wildchat', 'rm-wildchat-uf']);
  });
});

describe('runScale on a tiny tree', () => {
  let env: TestWorkflowEnvironment | undefined;
  let r: ScaleResult | undefined;

  beforeAll(async () => {
    loadStackEnv();
    Runtime.install({ logger: new DefaultLogger('WARN') });
    env = await startTestServer();
    r = await runScale(
      { client: env.client, connection: env.nativeConnection, namespace: env.namespace ?? 'default' },
      { specFile: SPEC, scale: 0.02, maxStages: 3, promptsPerCategory: 1, stepMs: 2, generateMs: 10, judgeMs: 10, gpuSlots: 8, timeoutMs: 90_000 },
    );
  }, 150_000);

  afterAll(async () => {
    await env?.teardown();
  });

  it('runs every checkpoint of the tree through the real workflows and measures each one', async () => {
    const res = r as ScaleResult;
    const spec = await readSpecFile(SPEC);
    const tree = scaledTree(spec, await planLineage(spec), 0.02, 3);
    const evaluated = tree.filter((s) => s.evaluated).reduce((a, s) => a + s.checkpointSteps.length, 0);
    expect(res.tree).toMatchObject({ stages: 3, checkpoints: tree.reduce((a, s) => a + s.checkpointSteps.length, 0), evaluations: evaluated + 1 });
    // 11 topic categories × 1 prompt × the spec's 5 samples per prompt.
    expect(res.tree.samplesPerEvaluation).toBe(55);
    // Every stage checkpoint's evaluation is matched to its announcement; the base one has none.
    expect(res.latencyMs.n).toBe(evaluated);
    expect(res.latencyMs.missing).toBe(0);
    expect(res.latencyMs.p50 as number).toBeGreaterThan(0);
    expect(res.latencyMs.max as number).toBeGreaterThanOrEqual(res.latencyMs.p95 as number);
    expect(res.overlap.measured).toBe(3);
    expect(res.rss.peakMiB).toBeGreaterThanOrEqual(res.rss.startMiB);
  });

  it('reports the server’s own history length and size for every workflow', async () => {
    const res = r as ScaleResult;
    const client = (env as TestWorkflowEnvironment).client;
    expect(res.history.stages.map((s) => s.workflowId).sort()).toEqual(['sft-wildchat', 'rm-wildchat-uf', 'ppo-wildchat-uf'].map((id) => workflowIds.stage(res.lineage, id)).sort());
    for (const s of [res.history.lineage, ...res.history.stages]) {
      const h = await client.workflow.getHandle(s.workflowId).fetchHistory();
      expect(s.events).toBe(h.events?.length);
      expect(s.bytes).toBeGreaterThan(1000);
      expect(s.events).toBeLessThan(HISTORY_WARN_EVENTS);
    }
    const base = await client.workflow.getHandle(workflowIds.evaluation(res.lineage, BASE_STAGE_ID, 0)).describe();
    expect(base.status.name).toBe('COMPLETED');
    expect(res.history.evaluations.count).toBe(res.tree.evaluations);
    expect(res.history.overWarning).toEqual([]);
  });
});
