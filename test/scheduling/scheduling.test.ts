/**
 * GPU-aware scheduling on the real Temporal dev server: gpu workers built as worker/main.ts builds
 * them (gpuWorkerOptions: a queue per GPU count, polled through GpuSlots) over fake GPU pools, with
 * stand-in training and generation activities that lease their GPUs from their node's pool as the
 * real ones do (and refuse a job too big for the node the way runTrainerCommand does).
 */
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { NativeConnection, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TASK_QUEUES } from '../../common/config';
import { GpuPool, GpuSlots, gpuShortfall } from '../../activities/gpus';
import { gpuWorkerOptions } from '../../worker/main';
import { quietBundle, startTestServer } from '../support/workflowEnv';
import type { Job } from './workflows';

interface Run {
  node: string;
  job: string;
  devices: readonly string[];
  start: number;
  end: number;
}
interface Refusal {
  node: string;
  job: string;
}

let env: TestWorkflowEnvironment;
let bundle: WorkflowBundleWithSourceMap;
const runs: Run[] = [];
const refusals: Refusal[] = [];

beforeAll(async () => {
  env = await startTestServer();
  bundle = await quietBundle(path.join(__dirname, 'workflows.ts'));
}, 120_000);
afterAll(async () => {
  await env?.teardown();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A stand-in GPU job on `node`: refuses what the node cannot fit, leases, holds, records. */
function standIn(node: string, pool: GpuPool, gpusOf: (i: { stage?: { gpus: number } }) => number) {
  return async (i: { name: string; ms: number; stage?: { gpus: number } }): Promise<string> => {
    const gpus = gpusOf(i);
    const short = gpuShortfall(gpus, pool);
    if (short) {
      refusals.push({ node, job: i.name });
      throw ApplicationFailure.retryable(`${i.name}: ${short}`, 'NotEnoughGpus');
    }
    const lease = await pool.acquire(gpus);
    const start = Date.now();
    try {
      await sleep(i.ms);
    } finally {
      lease.release();
    }
    runs.push({ node, job: i.name, devices: lease.devices, start, end: Date.now() });
    return node;
  };
}

/** A gpu node: the workers `npm run worker` starts for VALUEDRIFT_WORKER_ROLE=gpu over `devices`. */
async function startNode(node: string, devices: string[]): Promise<{ stop: () => Promise<void>; slots: GpuSlots }> {
  const pool = new GpuPool(devices);
  const slots = new GpuSlots(pool);
  const activities = {
    trainStage: standIn(node, pool, (i) => i.stage?.gpus ?? 0),
    generateResponses: standIn(node, pool, () => 1),
  };
  // Its own connection, as a process on another machine has (one connection polls a queue once).
  const connection = await NativeConnection.connect({ address: env.address });
  const base = { connection, namespace: env.namespace ?? 'default' };
  const workers = await Promise.all(gpuWorkerOptions(slots, activities, base).map((o) => Worker.create(o)));
  const running = workers.map((w) => w.run());
  return {
    slots,
    stop: async () => {
      workers.forEach((w) => w.shutdown());
      await Promise.all(running);
      await connection.close();
    },
  };
}

async function withWorkflowWorker<T>(fn: () => Promise<T>): Promise<T> {
  const worker = await Worker.create({ connection: env.nativeConnection, namespace: env.namespace ?? 'default', taskQueue: TASK_QUEUES.workflows, workflowBundle: bundle });
  const running = worker.run();
  try {
    return await fn();
  } finally {
    worker.shutdown();
    await running;
  }
}

function start(id: string, jobs: Job[]) {
  return env.client.workflow.start('gpuJobs', { taskQueue: TASK_QUEUES.workflows, workflowId: `${id}-${Date.now()}`, args: [jobs] });
}

describe('GPU-aware scheduling', () => {
  it('runs a 1-GPU generation beside a 1-GPU training on a 2-GPU worker', async () => {
    const two = await startNode('two', ['0', '1']);
    try {
      await withWorkflowWorker(async () => {
        const h = await start('beside', [
          { name: 'train-1', kind: 'train', gpus: 1, ms: 2_500 },
          { name: 'generate-1', kind: 'generate', gpus: 1, ms: 2_500 },
        ]);
        expect(await h.result()).toEqual(['two', 'two']);
      });
    } finally {
      await two.stop();
    }
    const t = runs.find((r) => r.job === 'train-1')!;
    const g = runs.find((r) => r.job === 'generate-1')!;
    // At the same time, on different GPUs.
    expect(g.start).toBeLessThan(t.end);
    expect(t.start).toBeLessThan(g.end);
    expect([...t.devices, ...g.devices].sort()).toEqual(['0', '1']);
    expect(two.slots.room).toBe(2);
  }, 120_000);

  it('leaves a 4-GPU training to a 4-GPU worker: the 2-GPU worker never takes it, and one offered to it is retried elsewhere', async () => {
    const two = await startNode('two', ['0', '1']);
    let four: Awaited<ReturnType<typeof startNode>> | undefined;
    try {
      await withWorkflowWorker(async () => {
        const routed = await start('routed', [{ name: 'train-4', kind: 'train', gpus: 4, ms: 500 }]);
        // Offered through the plain gpu queue (a workflow from before per-size queues): the 2-GPU
        // worker takes it and refuses it retryably.
        const offered = await start('offered', [{ name: 'train-4-legacy', kind: 'train', gpus: 4, ms: 500, legacy: true }]);
        const deadline = Date.now() + 30_000;
        while (!refusals.some((r) => r.job === 'train-4-legacy') && Date.now() < deadline) await sleep(100);
        expect(refusals.some((r) => r.node === 'two' && r.job === 'train-4-legacy')).toBe(true);
        // Only a 2-GPU worker so far: nothing ran, the routed job was not even offered to it.
        await sleep(1_500);
        expect(runs.filter((r) => r.job.startsWith('train-4'))).toEqual([]);
        expect(refusals.filter((r) => r.job === 'train-4')).toEqual([]);
        const desc = await routed.describe();
        expect(desc.status.name).toBe('RUNNING');

        four = await startNode('four', ['0', '1', '2', '3']);
        expect(await routed.result()).toEqual(['four']);
        expect(await offered.result()).toEqual(['four']);
      });
    } finally {
      await two.stop();
      await four?.stop();
    }
    const done = runs.filter((r) => r.job.startsWith('train-4'));
    expect(done.map((r) => [r.job, r.node, r.devices.length]).sort()).toEqual([
      ['train-4', 'four', 4],
      ['train-4-legacy', 'four', 4],
    ]);
  }, 120_000);
});
