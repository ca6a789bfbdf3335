/**
 * Multi-node training end to end on real parts (`npm run test:multinode`; not in `npm test`): the
 * stack's Temporal dev server, S3 server and judge (.data/stack.env), two worker *processes* standing
 * for two nodes, each told it has one GPU (VALUEDRIFT_GPUS=1) and given the same shared dir, and the
 * real trainer on the tiny model. A `nodes: 2` SFT stage on 0 GPUs per node (one CPU process per
 * node, gloo) runs as a group: the leader (trainStage, machine rank 0) on one worker and the follower
 * (trainStageFollower, rank 1) on the other, joined through the rendezvous under the workflow's token;
 * the leader reports losses and uploads the checkpoint, which is then evaluated.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes, listKeys, uriOf } from '../../activities/store';
import { gpuMultiNodeTaskQueue, storeKeys, TASK_QUEUES, workflowIds } from '../../common/config';
import { lineageWorkflow, stageProgressQuery, type LineageResult } from '../../workflows';
import { loadStackEnv, testSpec, uniqueName } from '../support/workflowEnv';
import { workerProcesses } from '../support/workerProcess';

const PYTHON = '.venv/bin/python';
const available = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import torch, transformers, accelerate'], { timeout: 120_000 }).status === 0;

let client: Client;
let tmp: string;
const workers = workerProcesses();

beforeAll(async () => {
  loadStackEnv();
  resetWorkerEnv();
  if (!process.env.VALUEDRIFT_S3_ENDPOINT) throw new Error('no stack: run npx tsx infra/dev.ts up --no-workers');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-multinode-e2e-'));
  const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' });
  client = new Client({ connection, namespace: process.env.TEMPORAL_NAMESPACE ?? 'default' });
});

afterAll(async () => {
  await workers.killAll();
  await client?.connection.close();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

interface Member {
  type: string;
  queue: string;
  identity: string;
  result?: unknown;
}

async function members(workflowId: string): Promise<Member[]> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  const byId = new Map<string, Member>();
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) byId.set(String(e.eventId), { type: s.activityType?.name ?? '', queue: s.taskQueue?.name ?? '', identity: '' });
    const st = e.activityTaskStartedEventAttributes;
    const m1 = st ? byId.get(String(st.scheduledEventId)) : undefined;
    if (m1) m1.identity = st?.identity ?? '';
    const c = e.activityTaskCompletedEventAttributes;
    const m2 = c ? byId.get(String(c.scheduledEventId)) : undefined;
    const data = c?.result?.payloads?.[0]?.data;
    if (m2 && data) m2.result = JSON.parse(Buffer.from(data).toString('utf8'));
  }
  return [...byId.values()].filter((m) => m.type === 'trainStage' || m.type === 'trainStageFollower');
}

describe.skipIf(!available)('multi-node training on two worker processes', () => {
  it('trains a nodes: 2 SFT stage as a group (leader and follower on different workers), uploads and evaluates its checkpoint', async () => {
    const shared = path.join(tmp, 'shared');
    await fs.mkdir(shared);
    const node = (tag: string, role: 'all' | 'gpu') =>
      workers.start(tag, {
        VALUEDRIFT_WORKER_ROLE: role,
        VALUEDRIFT_GPUS: '1',
        CUDA_VISIBLE_DEVICES: undefined,
        VALUEDRIFT_WORK_DIR: path.join(tmp, `work-${tag}`),
        VALUEDRIFT_SHARED_DIR: shared,
        VALUEDRIFT_NODE_ADDR: '127.0.0.1',
        VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS: '600',
      });
    node('a', 'all');
    node('b', 'gpu');

    const name = uniqueName('multinode');
    const spec = testSpec(name, [
      {
        id: 'sft',
        parent: 'base',
        kind: 'sft',
        dataset: 'sft',
        checkpointEvery: 2,
        gpus: 0,
        nodes: 2,
        hyperparameters: { max_steps: 2, per_device_train_batch_size: 2, global_batch_size: 4, max_length: 96 },
      },
    ]);
    (spec.evaluation as Record<string, unknown>).maxNewTokens = 8;
    (spec.evaluation as Record<string, unknown>).judge = { model: process.env.VALUEDRIFT_JUDGE_MODEL ?? 'minilm-stance', concurrency: 4 };

    const handle = await client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(name), args: [spec] });
    const result = (await handle.result()) as LineageResult;
    const sft = result.stages.find((s) => s.stageId === 'sft');
    expect(sft?.totalSteps).toBe(2);

    // One group: the leader and one follower, on the 0-GPU multi-node queue, each on its own worker.
    const stageId = workflowIds.stage(name, 'sft');
    const ms = await members(stageId);
    expect(ms.map((m) => m.type).sort()).toEqual(['trainStage', 'trainStageFollower']);
    expect(ms.every((m) => m.queue === gpuMultiNodeTaskQueue(0))).toBe(true);
    expect(new Set(ms.map((m) => m.identity)).size).toBe(2);
    const leader = ms.find((m) => m.type === 'trainStage')?.result as { checkpoints: Array<{ step: number }>; resumedFrom: number };
    expect(leader.checkpoints.map((c) => c.step)).toEqual([2]);
    expect(ms.find((m) => m.type === 'trainStageFollower')?.result).toEqual({ rank: 1, node: '127.0.0.1' });

    // Losses reached the stage (the checkpoint's announcement) and the attempt's curves.
    const progress = await client.workflow.getHandle(stageId).query(stageProgressQuery);
    expect(progress.latestLoss).toEqual(expect.any(Number));
    const scalars = (await getBytes(uriOf(`${storeKeys.tensorboard(name, 'sft', 1)}/scalars.jsonl`))).toString('utf8');
    expect(scalars).toMatch(/loss/);

    // Both machines joined one world of two processes: the follower's own log is stored beside the leader's.
    const keys = new Set(await listKeys(`lineages/${name}/`));
    expect(keys.has(`${storeKeys.checkpoint(name, 'sft', 2)}/manifest.json`)).toBe(true);
    expect(keys.has(storeKeys.trainerLog(name, 'sft', 1))).toBe(true);
    expect(keys.has(`${storeKeys.trainerLogsPrefix(name, 'sft')}attempt-1-rank-1.log`)).toBe(true);
    // Evaluation followed: the checkpoint and the base model have summaries, and the stage has its drift.
    for (const [stage, step] of [['base', 0], ['sft', 2]] as const) expect(keys.has(storeKeys.evalSummaryCopy(name, stage, step))).toBe(true);
    expect(keys.has(storeKeys.drift(name, 'sft'))).toBe(true);

    // The shared dir is left clean: no rendezvous record, no training folder.
    expect(await fs.readdir(path.join(shared, 'valuedrift', 'rendezvous'))).toEqual([]);
    expect(await fs.readdir(path.join(shared, 'valuedrift', 'train', name, 'sft')).catch(() => [])).toEqual([]);
  }, 1_200_000);
});
