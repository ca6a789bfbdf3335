/**
 * Workflow tests on the real Temporal dev server binary, with the real store activities against the
 * local S3 server and test doubles for training, generation and the judge.
 */
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { lineageProgressQuery, lineageWorkflow, stageProgressQuery, type LineageResult } from '../../workflows';
import { getBytes } from '../../activities/store';
import { fakeActivities, loadStackEnv, recorder, stage, startTestServer, testSpec, uniqueName, withWorkers, type FakeTrainingPlan } from '../support/workflowEnv';

let env: TestWorkflowEnvironment;

beforeAll(async () => {
  loadStackEnv();
  env = await startTestServer();
});
afterAll(async () => {
  await env?.teardown();
});

async function runLineage(spec: Record<string, unknown>) {
  const handle = await env.client.workflow.start(lineageWorkflow, {
    taskQueue: TASK_QUEUES.workflows,
    workflowId: workflowIds.lineage(spec.name as string),
    args: [spec],
  });
  return { handle, result: (await handle.result()) as LineageResult };
}

const plain = (): FakeTrainingPlan => ({ steps: [2, 4] });

describe('lineageWorkflow', () => {
  it('runs stages in DAG order, siblings concurrently, the shared SFT once, and computes drift', async () => {
    const rec = recorder();
    const started = new Set<string>();
    let release: () => void = () => undefined;
    const bothStarted = new Promise<void>((r) => (release = r));
    const plan = (id: string): FakeTrainingPlan => ({
      steps: [2, 4],
      // Each DPO branch waits until its sibling has started too: sequential siblings would deadlock here.
      onStart: async (stageId) => {
        if (!stageId.startsWith('dpo')) return;
        started.add(stageId);
        if (started.size === 2) release();
        await Promise.race([bothStarted, new Promise((_, rej) => setTimeout(() => rej(new Error(`sibling of ${id} never started`)), 30_000))]);
      },
    });
    const name = uniqueName('dag');
    const spec = testSpec(name, [stage.sft(), stage.dpo('dpo-support', 'sft', 'support-aligned'), stage.dpo('dpo-oppose', 'sft', 'oppose-aligned')]);
    const { result } = await withWorkers(env, fakeActivities(env, rec, plan), () => runLineage(spec));

    const trains = rec.events.filter((e) => e.what === 'train:start').map((e) => e.stageId);
    expect(trains.filter((s) => s === 'sft')).toHaveLength(1);
    expect(trains.sort()).toEqual(['dpo-oppose', 'dpo-support', 'sft']);
    const sftEnd = rec.events.find((e) => e.what === 'train:end' && e.stageId === 'sft')!.t;
    for (const id of ['dpo-support', 'dpo-oppose']) {
      expect(rec.events.find((e) => e.what === 'train:start' && e.stageId === id)!.t).toBeGreaterThan(sftEnd);
    }
    // Both branches were in training at the same time.
    const firstDpoEnd = Math.min(...rec.events.filter((e) => e.what === 'train:end' && e.stageId.startsWith('dpo')).map((e) => e.t));
    const lastDpoStart = Math.max(...rec.events.filter((e) => e.what === 'train:start' && e.stageId.startsWith('dpo')).map((e) => e.t));
    expect(lastDpoStart).toBeLessThan(firstDpoEnd);

    expect(result.stages.map((s) => s.stageId).sort()).toEqual(['dpo-oppose', 'dpo-support', 'sft']);
    const support = result.stages.find((s) => s.stageId === 'dpo-support')!;
    const rowM = support.driftRows.find((r) => r.category === 'abortion' && r.stance === 'support')!;
    // Fake judge: support = 0.3 + 0.05·step on support stages, start = sft's final (0.1 floor): 0.5 − 0.22
    expect(rowM.M).toBeCloseTo(0.5 - Math.max(0.1, 0.3 - 4 * 0.02), 6);
    expect(result.report.uri).toMatch(new RegExp(`lineages/${name}/report/index.html$`));
    // Base, sft@2, sft@4, and two checkpoints per branch were each evaluated exactly once.
    const gens = rec.events.filter((e) => e.what === 'generate').map((e) => `${e.stageId}@${e.step}`).sort();
    expect(gens).toEqual(['base@0', 'dpo-oppose@2', 'dpo-oppose@4', 'dpo-support@2', 'dpo-support@4', 'sft@2', 'sft@4']);
  });

  it('skips a cached stage on a second lineage with the same SFT', async () => {
    const rec1 = recorder();
    const first = uniqueName('cache-a');
    const seed = Math.floor(Math.random() * 1e9); // one seed for both lineages, fresh for this test
    const sft = stage.sft('sft');
    await withWorkers(env, fakeActivities(env, rec1, plain), () => runLineage(testSpec(first, [sft], seed)));
    expect(rec1.events.filter((e) => e.what === 'train:start')).toHaveLength(1);

    const rec2 = recorder();
    const second = uniqueName('cache-b');
    const { result } = await withWorkers(env, fakeActivities(env, rec2, plain), () => runLineage(testSpec(second, [sft], seed)));
    expect(rec2.events.filter((e) => e.what === 'train:start')).toHaveLength(0);
    expect(rec2.events.filter((e) => e.what === 'generate')).toHaveLength(0); // evaluations cached too
    expect(result.stages[0]!.cached).toBe(true);
    expect(result.stages[0]!.finalCheckpoint).toContain(`lineages/${first}/sft/checkpoints/step-4`);
  });

  it('starts evaluating a checkpoint before training ends, and evaluates a repeated announcement once', async () => {
    const rec = recorder();
    const plan = (): FakeTrainingPlan => ({
      steps: [2, 4],
      repeat: 3,
      // Hold training open until the evaluation of step 2 has started generating.
      after: async (_id, step) => {
        if (step !== 2) return;
        const deadline = Date.now() + 30_000;
        while (!rec.events.some((e) => e.what === 'generate' && e.stageId === 'sft' && e.step === 2)) {
          if (Date.now() > deadline) throw new Error('evaluation of step 2 did not start while training ran');
          await new Promise((r) => setTimeout(r, 50));
        }
      },
    });
    const name = uniqueName('overlap');
    await withWorkers(env, fakeActivities(env, rec, plan), () => runLineage(testSpec(name, [stage.sft('sft', { seed: Math.floor(Math.random() * 1e9) })])));
    const gen2 = rec.events.find((e) => e.what === 'generate' && e.stageId === 'sft' && e.step === 2)!;
    const end = rec.events.find((e) => e.what === 'train:end' && e.stageId === 'sft')!;
    expect(gen2.t).toBeLessThan(end.t);
    expect(rec.events.filter((e) => e.what === 'generate' && e.stageId === 'sft' && e.step === 2)).toHaveLength(1);
    expect(rec.events.filter((e) => e.what === 'generate' && e.stageId === 'sft' && e.step === 4)).toHaveLength(1);
  });

  it('answers the progress query while running and after completion', async () => {
    const rec = recorder();
    let letGo: () => void = () => undefined;
    const gate = new Promise<void>((r) => (letGo = r));
    const plan = (): FakeTrainingPlan => ({ steps: [2, 4], after: async (_id, step) => (step === 2 ? gate : undefined) });
    const name = uniqueName('progress');
    await withWorkers(env, fakeActivities(env, rec, plan), async () => {
      const handle = await env.client.workflow.start(lineageWorkflow, {
        taskQueue: TASK_QUEUES.workflows,
        workflowId: workflowIds.lineage(name),
        args: [testSpec(name, [stage.sft('sft', { seed: Math.floor(Math.random() * 1e9) })])],
      });
      // The lineage reads a running stage's live progress from the stage's own query (no signals up).
      const stageHandle = env.client.workflow.getHandle(workflowIds.stage(name, 'sft'));
      const deadline = Date.now() + 30_000;
      let sp = await stageHandle.query(stageProgressQuery).catch(() => undefined);
      while (!sp?.checkpoints.includes(2) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        sp = await stageHandle.query(stageProgressQuery).catch(() => undefined);
      }
      expect(sp).toMatchObject({ stageId: 'sft', status: 'training', checkpoints: [2], latestLoss: 0.5 });
      const p = await handle.query(lineageProgressQuery);
      expect(p.status).toBe('running');
      expect(p.stages[0]).toMatchObject({ id: 'sft', status: 'running', workflowId: workflowIds.stage(name, 'sft') });
      letGo();
      await handle.result();
      const after = await handle.query(lineageProgressQuery);
      expect(after.status).toBe('done');
      expect(after.stages[0]).toMatchObject({ status: 'done', checkpoints: [2, 4], evaluated: [2, 4], drift: true });
      expect(after.report).toContain(`lineages/${name}/report`);
    });
  });

  it('trains SFT → reward → PPO beside a DPO sibling; the reward model is not evaluated and has no drift', async () => {
    const rec = recorder();
    const seen: Array<{ stageId: string; rewardModel?: string }> = [];
    const acts = fakeActivities(env, rec, plain);
    const trainStage = acts.trainStage;
    acts.trainStage = async (input) => {
      seen.push({ stageId: input.stage.id, rewardModel: input.rewardModel?.uri });
      return trainStage(input);
    };
    const name = uniqueName('ppo');
    const spec = testSpec(name, [stage.sft(), stage.reward('rmodel', 'sft'), stage.ppo('ppo', 'sft', 'rmodel'), stage.dpo('dpo-support', 'sft', 'support-aligned')]);
    const { result } = await withWorkers(env, acts, () => runLineage(spec));

    expect(result.stages.map((s) => s.stageId).sort()).toEqual(['dpo-support', 'ppo', 'rmodel', 'sft']);
    const rm = result.stages.find((s) => s.stageId === 'rmodel')!;
    expect(rm.drift).toBeNull();
    expect(rm.driftRows).toEqual([]);
    for (const id of ['sft', 'ppo', 'dpo-support']) expect(result.stages.find((s) => s.stageId === id)!.drift?.uri).toMatch(new RegExp(`lineages/${name}/${id}/drift\\.json$`));
    // PPO trained after the reward model, from it.
    expect(seen.find((s) => s.stageId === 'ppo')!.rewardModel).toBe(rm.finalCheckpoint);
    const rmEnd = rec.events.find((e) => e.what === 'train:end' && e.stageId === 'rmodel')!.t;
    expect(rec.events.find((e) => e.what === 'train:start' && e.stageId === 'ppo')!.t).toBeGreaterThan(rmEnd);
    // Nothing of the reward stage was generated or judged; everything else was.
    const gens = rec.events.filter((e) => e.what === 'generate').map((e) => `${e.stageId}@${e.step}`).sort();
    expect(gens).toEqual(['base@0', 'dpo-support@2', 'dpo-support@4', 'ppo@2', 'ppo@4', 'sft@2', 'sft@4']);
    // The report shows no reward trajectories.
    const html = (await getBytes(result.report.uri)).toString('utf8');
    expect(html).toContain('ppo');
    expect(html).not.toContain('rmodel');
  });

  it("starts a stage's children as soon as it is done, while the base evaluation (drift's other end) still runs", async () => {
    const rec = recorder();
    const acts = fakeActivities(env, rec, plain);
    const generate = acts.generateResponses;
    acts.generateResponses = async (input) => {
      if (input.stageId === 'base') {
        // Hold the base evaluation until the DPO stage has started training.
        const deadline = Date.now() + 60_000;
        while (!rec.events.some((e) => e.what === 'train:start' && e.stageId === 'dpo-support')) {
          if (Date.now() > deadline) throw ApplicationFailure.nonRetryable('the DPO stage did not start while the base evaluation ran');
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      return generate(input);
    };
    const name = uniqueName('early');
    const { result } = await withWorkers(env, acts, () => runLineage(testSpec(name, [stage.sft(), stage.dpo('dpo-support', 'sft', 'support-aligned')])));
    // Both drifts were still computed once the base evaluation arrived.
    expect(result.stages.map((s) => [s.stageId, s.drift !== null])).toEqual([
      ['sft', true],
      ['dpo-support', true],
    ]);
  });

  it('fails an invalid spec at once, non-retryably, naming the field, with nothing run', async () => {
    const rec = recorder();
    const name = uniqueName('bad');
    const bad = testSpec(name, [{ ...stage.sft(), hyperparameters: { learning_rate: -1 } }]);
    const err = await withWorkers(env, fakeActivities(env, rec, plain), () => runLineage(bad).then(() => undefined, (e: unknown) => e));
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause;
    expect(cause).toBeInstanceOf(ApplicationFailure);
    expect((cause as ApplicationFailure).nonRetryable).toBe(true);
    expect((cause as ApplicationFailure).type).toBe('InvalidLineageSpec');
    expect(cause?.message).toContain('stages[0].hyperparameters.learning_rate');
    expect(rec.events).toHaveLength(0);
  });
});
