/**
 * Worker entry: `VALUEDRIFT_WORKER_ROLE=cpu|gpu|all npm run worker`.
 * - cpu: workflow tasks plus judge, store, metrics and report activities;
 * - gpu: training and generation: the plain gpu queue and one queue per GPU count up to the node's
 *   (gpuWorkerOptions), each polled only while the node has GPUs free for its jobs; with
 *   VALUEDRIFT_SHARED_DIR also the multi-node queues of those sizes (activities/multinode.ts).
 * Every setting comes from activities/env.ts (the worker's settings module).
 */
import * as path from 'node:path';
import { Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../activities';
import { type WorkerRole, workerEnv } from '../activities/env';
import { gpuPool, GpuSlots } from '../activities/gpus';
import { multiNodeSettings, trainStageFollower } from '../activities/multinode';
import { trainerPythonProblem } from '../activities/trainerCommand';
import { gpuMultiNodeTaskQueue, gpuTaskQueue, TASK_QUEUES } from '../common/config';
import { nativeConnection, temporalClient } from './connection';

/**
 * The gpu role's workers: the plain gpu queue (generation, model hashing, 0-GPU stages) and, on a node
 * with G GPUs, the queues of stages that train on 1..G GPUs (`gpuTaskQueue`), so a job too big for the
 * node is never taken by it. Each queue's slots come from `slots` (a tuner's custom slot supplier):
 * polled only while the node's started jobs leave GPUs for it. A node without GPUs polls the plain
 * queue only, one job at a time.
 */
export function gpuWorkerOptions(
  slots: GpuSlots,
  activities: WorkerOptions['activities'],
  base: Pick<WorkerOptions, 'connection' | 'namespace'>,
  opts: { multiNode?: boolean } = {},
): WorkerOptions[] {
  const sizes = [0, ...Array.from({ length: slots.pool.size }, (_, i) => i + 1)];
  // A worker with a shared dir also takes members of multi-node groups of each size it fits, from the
  // same slots: a member holding the node's GPUs keeps other jobs (and its own group's members) off them.
  const queues = [
    ...sizes.map((n) => ({ n, taskQueue: gpuTaskQueue(n) })),
    ...(opts.multiNode ? sizes.map((n) => ({ n, taskQueue: gpuMultiNodeTaskQueue(n) })) : []),
  ];
  return queues.map(({ n, taskQueue }) => ({
    ...base,
    taskQueue,
    activities,
    tuner: {
      activityTaskSlotSupplier: slots.supplier(n),
      // These workers poll activities only.
      workflowTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
      localActivityTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
      nexusTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
    },
    // Heartbeats carry the step and loss that `lineage status` and the UI show; the SDK's default
    // throttle (up to 80 % of the heartbeat timeout) would leave them most of a minute stale.
    maxHeartbeatThrottleInterval: '10 seconds',
    defaultHeartbeatThrottleInterval: '5 seconds',
  }));
}

export async function runWorkers(role: WorkerRole, opts: { signal?: AbortSignal } = {}): Promise<void> {
  const env = workerEnv();
  if (role !== 'cpu') {
    // Every job on the gpu queue runs the trainer: refuse to poll rather than fail each job.
    const problem = trainerPythonProblem();
    if (problem) throw new Error(`gpu worker: ${problem}`);
  }
  const connection = await nativeConnection(env);
  const client = await temporalClient(env);
  // Multi-node followers run only on gpu workers (their queues are polled only with a shared dir).
  const activities = { ...createActivities({ client }), trainStageFollower };
  const multi = multiNodeSettings();
  const namespace = env.TEMPORAL_NAMESPACE;
  const workers: Worker[] = [];
  const base: Pick<WorkerOptions, 'connection' | 'namespace'> = { connection, namespace };
  if (role === 'cpu' || role === 'all') {
    workers.push(
      await Worker.create({ ...base, taskQueue: TASK_QUEUES.workflows, workflowsPath: path.join(__dirname, '..', 'workflows', 'index.ts') }),
      await Worker.create({
        ...base,
        taskQueue: TASK_QUEUES.cpu,
        activities,
        maxConcurrentActivityTaskExecutions: env.VALUEDRIFT_CPU_CONCURRENCY,
      }),
    );
  }
  if (role === 'gpu' || role === 'all') {
    const options = gpuWorkerOptions(new GpuSlots(gpuPool()), activities, base, { multiNode: multi.sharedDir !== undefined });
    for (const o of options) workers.push(await Worker.create(o));
    console.error(`[worker] gpu role: GPUs [${gpuPool().devices.join(', ')}], queues ${options.map((o) => o.taskQueue).join(', ')}`);
  }
  opts.signal?.addEventListener('abort', () => workers.forEach((w) => w.shutdown()));
  console.error(`[worker] role ${role} polling ${workers.length} queue(s) on ${env.TEMPORAL_ADDRESS}`);
  try {
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    await client.connection.close();
    await connection.close();
  }
}

if (require.main === module) {
  let role: WorkerRole;
  try {
    role = workerEnv().VALUEDRIFT_WORKER_ROLE;
  } catch (err) {
    // A malformed variable: one line naming it, not a stack trace.
    console.error((err as Error).message);
    process.exit(2);
  }
  runWorkers(role).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
